"""Per-stage latency statistics in constant memory (a soak run must not grow).

Each stage keeps a histogram over log-spaced bins (0.01 ms .. 100 s, 2% wide), so p50/p99
over the whole run cost a few kilobytes however many frames pass, plus an exponential
moving average for the on-screen HUD. ``latency_percentiles`` gives exact percentiles of a
short list of timings (a benchmark's runs, edge_seg.runner.time_model).
"""
from __future__ import annotations

import math

import numpy as np

_LO_MS, _HI_MS, _RATIO = 0.01, 1e5, 1.02
_EDGES = _LO_MS * _RATIO ** np.arange(int(math.log(_HI_MS / _LO_MS) / math.log(_RATIO)) + 2)


class LatencyStats:
    """Streaming latency distribution of one stage, in milliseconds."""

    def __init__(self, ema: float = 0.1):
        self.counts = np.zeros(len(_EDGES) + 1, np.int64)
        self.n = 0
        self.total = 0.0
        self.max = 0.0
        self.recent = math.nan  # exponential moving average for the HUD
        self._ema = ema

    def add(self, ms: float) -> None:
        self.counts[int(np.searchsorted(_EDGES, ms))] += 1
        self.n += 1
        self.total += ms
        self.max = max(self.max, ms)
        self.recent = ms if math.isnan(self.recent) else self.recent + self._ema * (ms - self.recent)

    def percentile(self, q: float) -> float:
        if not self.n:
            return math.nan
        rank = q / 100 * self.n
        i = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1)))
        if i == 0:
            return float(_EDGES[0])
        if i >= len(_EDGES):
            return self.max
        return float(min(math.sqrt(_EDGES[i - 1] * _EDGES[i]), self.max))  # bin's geometric centre

    def count_at_most(self, bounds_ms) -> list[int]:
        """How many latencies were <= each bound (to the bin's 2%): histogram buckets."""
        cumulative = np.cumsum(self.counts)
        idx = np.searchsorted(_EDGES, np.asarray(bounds_ms, np.float64), side="right") - 1
        return [int(cumulative[i]) if i >= 0 else 0 for i in idx]

    def summary(self) -> dict:
        if not self.n:
            return {"n": 0}
        return {"n": self.n, "mean": self.total / self.n, "p50": self.percentile(50),
                "p99": self.percentile(99), "max": self.max}


class StageTimes:
    """One LatencyStats per named stage."""

    def __init__(self, stages=()):
        self.stages: dict[str, LatencyStats] = {s: LatencyStats() for s in stages}

    def add(self, stage: str, ms: float) -> None:
        if stage not in self.stages:
            self.stages[stage] = LatencyStats()
        self.stages[stage].add(ms)

    def recent(self) -> dict[str, float]:
        return {k: v.recent for k, v in self.stages.items() if v.n}

    def summary(self) -> dict[str, dict]:
        return {k: v.summary() for k, v in self.stages.items() if v.n}


def latency_percentiles(times_ms, qs=(50, 90)) -> dict:
    """{"p50": ..., "p90": ..., "mean": ...} of latencies in ms (NaN when there are none)."""
    times = np.asarray(times_ms, np.float64)
    if not times.size:
        return {**{f"p{q}": float("nan") for q in qs}, "mean": float("nan")}
    return {**{f"p{q}": float(np.percentile(times, q)) for q in qs}, "mean": float(times.mean())}

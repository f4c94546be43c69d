"""Live figures of a running `edge-seg run`: one dict, built by ``live_stats``, that the web
page, ``/stats.json``, ``/metrics`` and ``--report-every`` all show.

The figures are read from the objects that already keep them -- the render thread's frame
counter and FPS, ``StageTimes`` (per-stage latency), the source's ``SourceStats`` and the
drift check -- without locking the loop: a reader may see a counter one frame ahead of
another, never a figure the run does not have.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import click

from edge_seg import __version__
from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.log import finite


def live_stats(run) -> dict:
    """The figures of ``run`` (an ``edge_seg.run.loop.Run``) now. Safe to call from any thread, at
    any time (before the loop starts some figures are zero or None)."""
    st, src, seg, ren = run.state, run.source, run.segmenter, run.renderer
    now = time.perf_counter()
    rendered = ren.frames if ren is not None else 0
    busy = (ren.t_last - st.t_start) if ren is not None and ren.t_last and st.t_start else 0.0
    latency = {}
    for stage, stats in list(run.times.stages.items()):
        if stats.n:
            latency[stage] = {"recent": stats.recent, **stats.summary()}
    out = {
        "edge_seg": __version__,
        "time": time.time(),
        "running": st.stopped_by is None and bool(st.t_start),
        "stopped_by": st.stopped_by,
        "uptime_s": (now - st.t_start) if st.t_start else 0.0,
        "frames": rendered,
        "processed": st.frames,
        "fps": ren.fps if ren is not None else None,
        "fps_mean": rendered / busy if busy > 0 else None,
        "dropped_frames": src.stats.dropped if src else 0,
        "corrupt_frames": src.stats.corrupt if src else 0,
        "source": None if src is None else {
            "description": src.description, "live": src.live, "newest_only": src.newest_only,
            **src.stats.as_dict()},
        "model": None if seg is None else {
            "name": seg.path.name, "variant": seg.variant, "description": seg.describe()},
        "backend": None if seg is None else seg.backend.as_dict(),
        "categories": [] if getattr(run, "overlay", None) is None else [
            {"id": i, "name": name, "color": [int(c) for c in color]}
            for i, (name, color) in enumerate(zip(run.overlay.names, run.overlay.colors))],
        "latency_ms": latency,
        "agreement": run.drift.summary(final=False) if run.drift is not None else None,
        "stream": run.server.figures() if getattr(run, "server", None) is not None else None,
        # the recording so far: frames, and with --save-segment each segment published
        "saved": run.sink.summary() if getattr(run, "sink", None) is not None else None,
        "collected": run.collect.summary() if getattr(run, "collect", None) is not None else None,
    }
    return finite(out)


class PeriodicReport:
    """``--report-every``: one JSON line of ``live_stats`` per interval, to stdout or
    appended to a file (journald and log shippers read either). A failed write stops the
    reporting with one warning and is remembered (``error``): the run ends with exit 4."""

    def __init__(self, every_s: float, stats: Callable[[], dict], path: str | None = None,
                 log: Callable[[str], None] | None = None):
        if not every_s > 0:
            raise UserError(f"--report-every {every_s:g}: must be more than 0 seconds")
        self.every_s, self.stats, self.path = float(every_s), stats, path
        self.log = log or logs.callback("report")
        self.lines = 0
        self.error: str | None = None
        self._file = None
        if path and path != "-":
            try:  # checked now, before the run starts
                self._file = open(path, "a", encoding="utf-8")
            except OSError as e:
                raise UserError(f"--report-lines {path}: cannot append to it "
                                f"({e.strerror or e})") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="report-every", daemon=True)

    def describe(self) -> str:
        where = self.path if self._file is not None else "stdout"
        return f"JSON line every {self.every_s:g} s to {where}"

    def start(self) -> "PeriodicReport":
        self._thread.start()
        return self

    def emit(self) -> None:
        stats = self.stats()
        line = json.dumps(stats, separators=(",", ":"))
        if self._file is None:
            if logs.is_json():  # a record like every other line, the figures its fields
                line = logs.json_line(logging.INFO, "run.report", f"frame {stats['frames']}, "
                                      f"{_fps(stats['fps'])} FPS", **stats)
            click.echo(line)  # not through a handler: a failed write must reach _run
        else:
            self._file.write(line + "\n")
            self._file.flush()
        self.lines += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.emit()
            except OSError as e:
                self.error = f"{self.path or 'stdout'}: {e.strerror or e}"
                self.log(logs.Line("report.stopped", f"warning: --report-every stopped: cannot "
                                   f"write to {self.error}"))
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:
                self.error = self.error or f"{self.path}: {e.strerror or e}"


def _fps(value) -> str:
    return "-" if value is None else f"{value:.1f}"

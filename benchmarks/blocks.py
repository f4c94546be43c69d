"""Timing several models against each other on a shared machine: short blocks, shuffled.

One invocation per model in turn measures the neighbours more than the models (two copies of
one model came out 1.34x apart that way), so every model is timed in short blocks of runs, the
models in a new random order each round, with a pause between blocks; a model's time is the
median of its block medians, and the spread of the block medians says how far to trust it.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_seg.runner import ModelRunner, time_model


class CallRunner(ModelRunner):
    """A bare model call (a converted graph without metadata, a probe, another runtime) as
    the runner edge_seg.runner.time_model times: one fixed input, the call only."""

    kind = "call"

    def __init__(self, invoke, name: str):
        self.invoke = invoke
        self.path = Path(name)
        self.variant = name

    def prepare(self, frame_rgb):
        return None

    def infer(self, tensor):
        self.invoke()

    def decode(self, logits):
        return None


def measure(runners: dict, rounds: int, block: int, pause: float, seed: int = 0,
            sleep=time.sleep, timer=time_model) -> dict:
    """{key: [block medians]}: ``rounds`` rounds, each timing every runner for ``block`` runs
    in a fresh random order with ``pause`` seconds between blocks."""
    order = list(runners)
    rng = np.random.default_rng(seed)
    blocks = {k: [] for k in order}
    for k in order:
        timer(runners[k], [None], warmup=2, runs=1)  # XNNPACK packs weights on the first call
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            blocks[k].append(timer(runners[k], [None], warmup=1, runs=block)["infer_p50"])
            sleep(pause)
    return blocks

"""Drift check: the quantised model watched against its float original on real frames.

Every Nth frame the main loop *offers* the frame and the quantised model's mask to a
background worker; if the worker is still busy with the previous one the offer is skipped
(counted), so the check never blocks the pipeline. The worker runs the float model
(through the same edge_seg.segmenter path, one thread, lowered priority), scores the pair with
``edge_seg.iou.agreement`` (float mask as reference) and keeps running statistics: overall
agreement mIoU(7) and per-category IoU from the summed confusion matrices, per-check
distribution, and windows of ``window`` checks. The first window whose agreement falls
below ``min_agreement`` produces one warning line; all of it goes into the summary.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from edge_seg import log as logs
from edge_seg import model_formats
from edge_seg.errors import UserError
from edge_seg.iou import SegMetrics, agreement
from edge_seg.preprocess import resize_mask

DEFAULT_EVERY = 10
DEFAULT_MIN_AGREEMENT = 0.90
DEFAULT_WINDOW = 10  # checks per window


QUANTIZED_VARIANTS = tuple(fmt.name for fmt in model_formats.FORMATS if fmt.integer)


def is_quantized(segmenter) -> bool:
    """Integer input/output, or integer weights behind float I/O (dynamic range), as the
    sidecar records them: such a model is no float reference."""
    meta = segmenter.meta
    quantization = meta.get("quantization")
    mode = quantization.get("mode", "") if isinstance(quantization, dict) else str(quantization or "")
    io = (getattr(segmenter, "input_dtype", None), getattr(segmenter, "output_dtype", None))
    return bool(any(d is not None and d != np.float32 for d in io)
                or meta.get("variant") in QUANTIZED_VARIANTS or "int8" in mode)


def lower_priority(nice: int) -> None:
    """Lower the calling thread's priority, for side work that must leave the cores to the
    pipeline (on Linux the nice value is per thread)."""
    if nice and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (OSError, AttributeError):
            pass


class DriftCheck:
    def __init__(self, float_model, reference_meta: dict | None = None, every: int = DEFAULT_EVERY,
                 min_agreement: float = DEFAULT_MIN_AGREEMENT, window: int = DEFAULT_WINDOW,
                 threads: int = 1, delegate: str = "auto", log: Callable[[str], None] | None = None,
                 nice: int = 10):
        from edge_seg.segmenter import Segmenter
        self.log = log or logs.callback("drift")
        if every < 1:
            raise UserError(f"--check-every {every}: must be at least 1")
        if not 0.0 <= min_agreement <= 1.0:
            raise UserError(f"--min-agreement {min_agreement}: must be between 0 and 1")
        self.segmenter = float_model if isinstance(float_model, Segmenter) else Segmenter(
            float_model, threads=threads, delegate=delegate, log=self.log)
        if is_quantized(self.segmenter):
            raise UserError(f"--check-float {self.segmenter.path}: a quantised model "
                            f"({self.segmenter.variant}); the drift check needs the float model it "
                            f"was converted from (e.g. the -fp32 or -fp16 .tflite)")
        if reference_meta is not None:
            ours = [c["name"] for c in self.segmenter.meta["categories"]]
            theirs = [c["name"] for c in reference_meta["categories"]]
            if ours != theirs:
                raise UserError(f"--check-float {self.segmenter.path}: its categories {ours} "
                                f"differ from the model's {theirs}")
        self.every, self.min_agreement, self.window = int(every), float(min_agreement), max(1, int(window))
        self.nice = nice
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="drift-check", daemon=True)
        self._lock = threading.Lock()
        # statistics
        self.offered = 0
        self.skipped_busy = 0
        self.checks = 0
        self.total = SegMetrics()
        self._window = SegMetrics()
        self._window_first = self._window_last = None
        self._window_checks = 0
        self.windows: deque = deque(maxlen=1000)  # (first frame, last frame, mIoU7)
        self.windows_below = 0
        self.warned = False
        self.per_check: deque = deque(maxlen=10000)  # recent per-check mIoU7
        self.min_check = math.inf
        self.float_ms = 0.0
        self.error: str | None = None
        # called in this thread with (frame number, agreement mIoU(7)) after each check:
        # --collect scores the same frame by it instead of running the float model again
        self.listener: Callable[[int, float], None] | None = None

    @property
    def path(self):
        return self.segmenter.path

    def start(self) -> "DriftCheck":
        self._thread.start()
        return self

    def offer(self, frame_number: int, frame_bgr: np.ndarray, model_mask: np.ndarray) -> bool:
        """Called by the pipeline for each frame; queues every ``every``-th, never waits."""
        if frame_number % self.every:
            return False
        self.offered += 1
        try:
            self._queue.put_nowait((frame_number, frame_bgr, model_mask))
            return True
        except queue.Full:
            self.skipped_busy += 1
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Finish the check in flight (not the queued one when ``timeout`` is 0) and stop."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=max(timeout, 0.01))
        except queue.Full:
            pass
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        lower_priority(self.nice)
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._check(*item)
            except Exception as e:  # noqa: BLE001 -- a failing check must not kill the run
                self.error = f"{type(e).__name__}: {e}"
                self.log(logs.Line("drift.stopped", f"warning: drift check stopped ({self.error})"))
                return

    def _check(self, frame_number: int, frame_bgr: np.ndarray, model_mask: np.ndarray) -> None:
        t0 = time.perf_counter()
        float_mask, _ = self.segmenter.predict_mask(frame_bgr)
        if float_mask.shape != model_mask.shape:
            float_mask = resize_mask(float_mask, (model_mask.shape[1], model_mask.shape[0]))
        a = agreement(float_mask, model_mask)
        elapsed = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self.float_ms += elapsed
            self.checks += 1
            if not math.isnan(a["miou7"]):
                self.per_check.append(a["miou7"])
                self.min_check = min(self.min_check, a["miou7"])
            self.total.cm += a["confusion_matrix"]
            self._window.cm += a["confusion_matrix"]
            if self._window_first is None:
                self._window_first = frame_number
            self._window_last = frame_number
            self._window_checks += 1
            if self._window_checks >= self.window:
                self._close_window(frame_number)
        if self.listener is not None:
            self.listener(frame_number, a["miou7"])

    def _close_window(self, last_frame: int) -> None:
        miou = self._window.result()["miou7"]
        first = self._window_first
        self.windows.append((first, last_frame, miou))
        self._window, self._window_first, self._window_checks = SegMetrics(), None, 0
        if not math.isnan(miou) and miou < self.min_agreement:
            self.windows_below += 1
            if not self.warned:
                self.warned = True
                self.log(logs.Line(
                    "drift.below", f"warning: drift: agreement mIoU(7) {miou:.3f} between "
                    f"{self.path.name} and the quantised model over frames {first}..{last_frame} "
                    f"is below --min-agreement {self.min_agreement:.2f}", miou7=miou,
                    first_frame=first, last_frame=last_frame, min_agreement=self.min_agreement))

    def summary(self, final: bool = True) -> dict:
        """The statistics; ``final=False`` (live figures while the run goes on) leaves the
        current window open instead of closing it early."""
        with self._lock:
            if final and self._window_checks:  # a partial last window still counts
                self._close_window(self._window_last)
            result = self.total.result() if self.checks else None
            recent = np.array(self.per_check, np.float64)
            out = {
                "float_model": str(self.path),
                "every": self.every,
                "min_agreement": self.min_agreement,
                "window_checks": self.window,
                "offered": self.offered,
                "checks": self.checks,
                "skipped_busy": self.skipped_busy,
                "float_ms_mean": self.float_ms / self.checks if self.checks else None,
                "agreement_miou7": None if result is None else _num(result["miou7"]),
                "pixel_agreement": None if result is None else _num(
                    float(np.trace(self.total.cm) / self.total.cm.sum()) if self.total.cm.sum() else math.nan),
                "per_category_iou": None if result is None else {
                    k: _num(v) for k, v in result["iou"].items() if k != "void"},
                "per_check_miou7": None if not recent.size else {
                    "mean": float(recent.mean()), "min": float(self.min_check),
                    "p10": float(np.percentile(recent, 10))},
                "windows": len(self.windows),
                "windows_below": self.windows_below,
                "worst_window": None if not self.windows else _worst(self.windows),
                "warned": self.warned,
                "error": self.error,
            }
        return out


def _num(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _worst(windows) -> dict:
    valid = [w for w in windows if not math.isnan(w[2])]
    if not valid:
        return None
    first, last, miou = min(valid, key=lambda w: w[2])
    return {"first_frame": first, "last_frame": last, "miou7": float(miou)}

"""One way to run a segmentation model file, whatever its format, for the tools that score or
time models (``edge-seg eval``, ``compare``, ``tune``, ``sweep``, the benchmarks).

    from edge_seg.runner import open_model, time_model
    runner = open_model("model-int8.tflite", threads=2)     # .tflite, .onnx or .keras
    masks = runner.predict(rgb_frames)      # (N, H, W) uint8 category ids at the input size
    timing = time_model(runner, rgb_frames, warmup=3, runs=20)   # ms: p50, p90, infer_p50, ...

``.tflite`` and ``.onnx`` run through the runtime's Segmenter (edge_seg.segmenter), so a score
or a latency is that of ``edge-seg run``: the same metadata checks, preprocessing
(edge_seg.preprocess) and argmax, on LiteRT or ONNX Runtime (edge_seg.backends). Any other
format is plugged in by its suffix through the ``edge_seg.runners`` entry points: ``.keras``
needs TensorFlow, so its runner lives on the training side (edge_seg.train.keras_runner) and
the runtime never imports it; where TensorFlow is missing, opening one is a one-line
UserError naming the extra to install.
"""
from __future__ import annotations

import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import numpy as np

from edge_seg.errors import TRAIN_EXTRA_HINT, UserError
from edge_seg.segmenter import Segmenter, decode_logits, is_onnx
from edge_seg.timing import latency_percentiles

RUNNER_GROUP = "edge_seg.runners"
BUILT_IN = (".tflite", ".onnx")
MAX_RUNS = 100_000  # time_model's bound on a seconds-long measurement with a very fast model


class ModelRunner:
    """A model opened to be scored and timed. ``prepare``, ``infer`` and ``decode`` are the
    three stages ``time_model`` times; ``predict`` is their composition over frames (a
    format may batch it). Masks come out at the model's input size whatever its output size,
    so the masks of models with one input size line up pixel for pixel."""

    kind = "?"               # "tflite", "onnx", "keras": the suffix's runner
    path: Path
    input_size: tuple[int, int]  # (width, height)
    meta: dict               # the model's metadata (edge_seg.backends.metadata); {} for .keras
    variant = "?"            # the metadata's variant: fp32, int8, ...
    backend = None           # edge_seg.backends.litert.BackendInfo: what really runs

    def describe(self) -> str:
        return f"{self.path.name} ({self.variant})"

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 frame, any size -> the model's input tensor (1, H, W, 3)."""
        raise NotImplementedError

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The model call: raw logits (1, h, w, C), in the output's own type."""
        raise NotImplementedError

    def decode(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> (H, W) uint8 category mask at the input size, as the runtime shows them."""
        return decode_logits(logits, self.input_size)

    def predict(self, frames_rgb) -> np.ndarray:
        """(N, H, W) uint8 category masks of N RGB uint8 frames."""
        return np.stack([self.decode(self.infer(self.prepare(f))) for f in frames_rgb])


class SegmenterRunner(ModelRunner):
    """.tflite (LiteRT) and .onnx (ONNX Runtime) through the runtime's Segmenter."""

    def __init__(self, path: Path, threads: int | None, delegate: str, log=None,
                 trust_sidecar: bool = False):
        self.segmenter = Segmenter(path, threads=threads, delegate=delegate, log=log,
                                   trust_sidecar=trust_sidecar)
        self.kind = "onnx" if is_onnx(path) else "tflite"
        self.path = self.segmenter.path
        self.input_size = tuple(self.segmenter.input_size)
        self.meta = self.segmenter.meta
        self.variant = str(self.meta.get("variant", self.path.stem))
        self.backend = self.segmenter.backend

    def describe(self) -> str:
        return self.segmenter.describe()

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        return self.segmenter.preprocess_rgb(frame_rgb)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.segmenter.infer(tensor)


def open_model(path, threads: int | None = None, delegate: str = "auto", *, batch: int = 8,
               input_size: tuple[int, int] | None = None, log: Callable[[str], None] | None = None,
               trust_sidecar: bool = False) -> ModelRunner:
    """The runner of the model file ``path``, chosen by its suffix.

    ``threads``: None = one per core (TensorFlow: its own default); ``delegate``: as
    ``edge-seg run --delegate`` (edge_seg.backends.litert / onnxrt); ``batch``: frames per
    call where a format runs batches (.keras); ``input_size``: the size for a model whose
    input size is open (a fully convolutional .keras), ignored by a model with a fixed one;
    ``log``: where delegate fallbacks and sidecar warnings go (default stderr).
    Bad input of any kind is a UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder; pass a model file (a run folder's best model is "
                        "RUN/best.keras)")
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix in BUILT_IN:
        return SegmenterRunner(path, threads, delegate, log, trust_sidecar)
    opener = _plugin(path, suffix)
    try:
        return opener(path, threads=threads, delegate=delegate, batch=batch,
                      input_size=input_size, log=log)
    except ImportError as e:
        raise _missing(path, suffix, e) from None


def _plugin(path: Path, suffix: str) -> Callable[..., ModelRunner]:
    plugins = {ep.name.lower(): ep for ep in entry_points(group=RUNNER_GROUP)}
    entry = plugins.get(suffix.lstrip("."))
    if entry is None:
        known = ", ".join(sorted(set(BUILT_IN) | {f".{name}" for name in plugins}))
        raise UserError(f"{path}: unknown model type; expected {known}")
    try:
        return entry.load()
    except ImportError as e:
        raise _missing(path, suffix, e) from None


def _missing(path: Path, suffix: str, error: ImportError) -> UserError:
    what = getattr(error, "name", None) or str(error)
    return UserError(f"{path}: running {suffix} models needs {what}; {TRAIN_EXTRA_HINT}")


def time_model(runner: ModelRunner, frames, warmup: int = 3, runs: int | None = None,
               seconds: float | None = None, min_runs: int = 5,
               clock: Callable[[], float] = time.perf_counter) -> dict:
    """Latency in ms of one frame at a time, cycling through ``frames`` (RGB) after ``warmup``
    untimed ones: exactly ``runs`` frames, or for ``seconds`` (at least ``min_runs``, at most
    MAX_RUNS).

    ``p50``/``p90``/``mean``/``fps`` are of the whole path to a mask (prepare + infer +
    decode, what ``edge-seg run`` spends per frame after capture), ``infer_*`` of the model
    call alone. ``clock``: seconds, monotonic (tests inject their own)."""
    if (runs is None) == (seconds is None):
        raise ValueError("time_model: give runs or seconds")
    frames = list(frames)
    if not frames:
        raise ValueError("time_model: no frames")
    for k in range(warmup):
        runner.decode(runner.infer(runner.prepare(frames[k % len(frames)])))
    total, infer = [], []
    start = clock()
    k = warmup
    while len(total) < MAX_RUNS:
        if runs is not None and len(total) >= runs:
            break
        if seconds is not None and len(total) >= min_runs and clock() - start >= seconds:
            break
        frame = frames[k % len(frames)]
        k += 1
        t0 = clock()
        tensor = runner.prepare(frame)
        t1 = clock()
        logits = runner.infer(tensor)
        t2 = clock()
        runner.decode(logits)
        t3 = clock()
        total.append((t3 - t0) * 1e3)
        infer.append((t2 - t1) * 1e3)
    p, q = latency_percentiles(total), latency_percentiles(infer)
    return {"p50": p["p50"], "p90": p["p90"], "mean": p["mean"],
            "fps": 1000.0 / p["mean"] if p["mean"] > 0 else float("nan"),
            "infer_p50": q["p50"], "infer_p90": q["p90"], "infer_mean": q["mean"],
            "runs": len(total)}

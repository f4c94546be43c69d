"""The one .tflite inference path: BGR frame in, category mask (and an overlay) out.

    from edge_seg.segmenter import Segmenter
    seg = Segmenter("model-int8.tflite")       # or Segmenter() for the bundled model
    result = seg(frame_bgr)                    # result.mask, result.overlay, result.timings

The runtime, the drift check and evaluation code all run models through this class, so
preprocessing (edge_seg.preprocess), quantisation and argmax are the same everywhere.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_seg.backends import bundled, litert
from edge_seg.errors import UserError
from edge_seg.backends.metadata import read_meta
from edge_seg.overlay import Overlay
from edge_seg.preprocess import (NORMALIZATION, bgr_to_model_rgb, normalize, quantize_input, resize_image,
                                 upsample_logits, upsample_mask)


@dataclass
class Result:
    mask: np.ndarray            # (H, W) uint8 catIds at frame size
    overlay: np.ndarray         # BGR image (see edge_seg.overlay)
    timings: dict = field(default_factory=dict)  # ms per stage: pre, infer, post, draw
    model_mask: np.ndarray | None = None  # the mask at the model's input size


def argmax_categories(logits: np.ndarray) -> np.ndarray:
    """(H, W, C) logits -> (H, W) uint8 argmax, ties to the lowest index as np.argmax.

    For int8/uint8 logits (C <= 16) each category plane is widened to int16 with the
    reversed category index in the low 4 bits, so one element-wise maximum over the C planes
    yields value and index at once: ~4x faster than np.argmax over a short last axis.
    """
    h, w, c = logits.shape
    if logits.dtype not in (np.int8, np.uint8) or c > 16:
        return np.argmax(logits, axis=-1).astype(np.uint8)
    planes = np.empty((c, h * w), np.int16)
    planes[:] = logits.reshape(-1, c).T
    planes <<= 4
    planes += np.arange(c - 1, -1, -1, dtype=np.int16)[:, np.newaxis]
    best = np.maximum.reduce(planes, axis=0)
    return (c - 1 - (best & 15)).astype(np.uint8).reshape(h, w)


def decode_logits(logits: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(1, h, w, C) logits -> (H, W) uint8 mask at the model's input size. Logits at stride 2
    are upsampled bilinearly to it before the argmax: the stride-2 mask resized NEAREST loses
    0.3 point of mIoU(7) more on CamVid drive-val (docs/quantisation.md)."""
    return argmax_categories(upsample_logits(logits[0], input_size))


def is_onnx(path) -> bool:
    return str(path).lower().endswith(".onnx")


class Segmenter:
    """A .tflite segmentation model with its metadata, on the best available interpreter.

    ``model_path``: a .tflite (None: the bundled default model), or an .onnx model, run by
    ONNX Runtime (edge_seg.backends.onnxrt); its metadata is the sidecar .json beside it, else the
    copy embedded in the file (edge_seg.backends.metadata.read_meta);
    ``threads``: interpreter threads (None: one per CPU core);
    ``delegate``: auto | cpu | xnnpack | gpu | edgetpu | PATH.so (see edge_seg.backends.litert);
    for .onnx: auto | tensorrt | cuda | gpu | cpu.
    ``trust_sidecar``: use a sidecar that records another model's sha256, or disagrees with
    the embedded metadata, with a warning instead of refusing the model.
    Bad models raise edge_seg.errors.UserError. One instance per thread.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, threads: int | None = None,
                 delegate: str = "auto", log=None, overlay: Overlay | None = None,
                 trust_sidecar: bool = False):
        self.path = bundled.resolve_model(model_path)
        onnx = is_onnx(self.path)
        if not onnx:
            litert.check_model_file(self.path)
        self.meta = read_meta(self.path, trust_sidecar=trust_sidecar, warn=log)
        self._check_normalization()
        threads = threads or os.cpu_count() or 1
        if onnx:  # the Jetson path: ONNX Runtime with TensorRT/CUDA, same interface
            from edge_seg.backends.onnxrt import load_onnx
            self.interpreter = load_onnx(self.path, threads, delegate, log=log, meta=self.meta)
            self.backend = self.interpreter.info
        else:
            self.interpreter, self.backend = litert.load_interpreter(self.path, threads, delegate, log=log)
        self._bind_tensors()
        self.overlay = overlay or Overlay.from_meta(self.meta)

    # -- description ------------------------------------------------------------
    @property
    def variant(self) -> str:
        return str(self.meta.get("variant", "?"))

    @property
    def quantized(self) -> bool:
        return self.input_dtype != np.float32 or self.output_dtype != np.float32

    def describe(self) -> str:
        kind = "int8" if self.input_dtype == np.int8 else (
            "uint8" if self.input_dtype == np.uint8 else "float32")
        out = np.dtype(self.output_dtype).name
        w, h = self.input_size
        parent = self.meta.get("parent")  # set by `edge-seg adapt`: the model it was adapted from
        adapted = (f", adapted from {parent.get('model')} {str(parent.get('sha256'))[:12]}"
                   if isinstance(parent, dict) else "")
        return f"{self.path.name} ({self.variant}, {kind} in/{out} out, {w}x{h}{adapted})"

    # -- set-up -------------------------------------------------------------------
    def _check_normalization(self):
        norm = self.meta.get("normalization", {})
        expected = {k: NORMALIZATION[k] for k in ("mean", "std", "color_order")}
        got = {k: norm.get(k) for k in expected}
        if got != expected:
            raise UserError(f"model {self.path}: metadata normalisation {got} differs from the "
                            f"runtime's {expected}; re-export the model with 'edge-seg convert'")

    def _bind_tensors(self):
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"model {self.path}: expected one input and one output tensor, "
                            f"got {len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        shape = tuple(int(v) for v in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise UserError(f"model {self.path}: input shape {shape} is not (1, H, W, 3)")
        w, h = (int(v) for v in self.meta["input_size"])
        if (shape[2], shape[1]) != (w, h):
            raise UserError(f"model {self.path}: input tensor is {shape[2]}x{shape[1]} but the "
                            f"metadata says {w}x{h}")
        oshape = tuple(int(v) for v in out["shape"])
        n_cat = len(self.meta["categories"])
        if len(oshape) != 4 or oshape[0] != 1 or oshape[3] != n_cat:
            raise UserError(f"model {self.path}: output shape {oshape} is not (1, H, W, {n_cat})")
        self.input_size = (w, h)
        self.output_size = (oshape[2], oshape[1])
        self.input_index = inp["index"]
        self.output_index = out["index"]
        self.input_dtype = np.dtype(inp["dtype"]).type
        self.output_dtype = np.dtype(out["dtype"]).type
        scale, zero_point = inp.get("quantization", (0.0, 0))
        if self.input_dtype in (np.int8, np.uint8):
            if not scale:
                raise UserError(f"model {self.path}: {np.dtype(self.input_dtype).name} input "
                                "without quantisation parameters")
        elif self.input_dtype != np.float32:
            raise UserError(f"model {self.path}: unsupported input type {np.dtype(self.input_dtype).name}")
        self.input_scale, self.input_zero_point = float(scale), int(zero_point)
        self._table = self._input_table()
        oscale = out.get("quantization", (0.0, 0))[0]
        if self.output_dtype in (np.int8, np.uint8) and oscale < 0:
            raise UserError(f"model {self.path}: negative output scale; argmax would be wrong")

    # -- the three stages -------------------------------------------------------
    def _input_table(self) -> np.ndarray:
        """uint8 pixel value -> model input value, tabulated with edge_seg.preprocess.normalize
        and quantize_input: both are per-pixel functions of the uint8 value, so one table
        lookup gives exactly their result at a fraction of the cost."""
        x = normalize(np.arange(256, dtype=np.uint8))
        if self.input_dtype != np.float32:
            x = quantize_input(x, self.input_scale, self.input_zero_point, self.input_dtype)
        return np.ascontiguousarray(x)

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        """BGR frame -> the model's input tensor (1, H, W, 3), float or quantised."""
        rgb = bgr_to_model_rgb(frame_bgr, self.input_size)
        return cv2.LUT(rgb, self._table)[np.newaxis]

    def preprocess_rgb(self, frame_rgb: np.ndarray) -> np.ndarray:
        """The same for an RGB frame (datasets are read as RGB): resizing and the channel
        swap commute, so the tensor equals ``preprocess`` of the BGR frame."""
        return cv2.LUT(resize_image(frame_rgb, self.input_size), self._table)[np.newaxis]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Raw logits (1, h, w, C) in the output's own type (int8 stays int8)."""
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def postprocess(self, logits: np.ndarray) -> np.ndarray:
        """The mask at the model's input size (``decode_logits``)."""
        return decode_logits(logits, self.input_size)

    # -- convenience ---------------------------------------------------------------
    def predict_mask(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask at the model's input size, mask at the frame's size), uint8 catIds."""
        model_mask = self.postprocess(self.infer(self.preprocess(frame_bgr)))
        return model_mask, upsample_mask(model_mask, frame_bgr.shape)

    def __call__(self, frame_bgr: np.ndarray) -> Result:
        t0 = time.perf_counter()
        tensor = self.preprocess(frame_bgr)
        t1 = time.perf_counter()
        logits = self.infer(tensor)
        t2 = time.perf_counter()
        model_mask = self.postprocess(logits)
        mask = upsample_mask(model_mask, frame_bgr.shape)
        t3 = time.perf_counter()
        overlay = self.overlay.render(frame_bgr, mask)
        t4 = time.perf_counter()
        timings = {"pre": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3,
                   "post": (t3 - t2) * 1e3, "draw": (t4 - t3) * 1e3}
        return Result(mask, overlay, timings, model_mask)


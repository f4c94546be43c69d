"""Pre- and post-processing shared by training, evaluation, conversion and the runtime.

The convention recorded with every model: RGB input, resized smoothly to the model
size (W x H), then ``(pixel - MEAN) / STD``. Masks are only ever resized NEAREST.
"""
from __future__ import annotations

import cv2
import numpy as np

DEFAULT_SIZE = (512, 256)  # (width, height)
MEAN = 127.5
STD = 127.5
NORMALIZATION = {"color_order": "RGB", "mean": MEAN, "std": STD}


def parse_size(text: str) -> tuple[int, int]:
    """'512x256' -> (512, 256). Sizes must be multiples of 32 (the encoder's stride)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 512x256") from None
    if w <= 0 or h <= 0 or w % 32 or h % 32:
        raise ValueError(f"size {text!r}: width and height must be positive multiples of 32")
    return w, h


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Smooth resize to (w, h): INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image
    shrinking = size[0] * size[1] < w * h
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NEAREST only: a resized mask never contains a value the original lacked."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return cv2.resize(mask, tuple(size), interpolation=cv2.INTER_NEAREST)


def bgr_to_model_rgb(frame_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Camera/OpenCV frame -> resized RGB uint8 at model size."""
    return cv2.cvtColor(resize_image(frame_bgr, size), cv2.COLOR_BGR2RGB)


def normalize(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 model input."""
    return (rgb.astype(np.float32) - MEAN) / STD


def quantize_input(normalized: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float model input -> integer tensor for a quantised model's input."""
    info = np.iinfo(dtype)
    q = np.round(normalized / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def upsample_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) logits -> (H, W, C) at ``size`` (w, h), bilinear, in their own type.

    A model whose logits come out at stride 2 is scored and shown from its logits upsampled
    to its input size, not from its stride-2 mask resized: on CamVid drive-val the NEAREST-resized
    mask loses 0.3 point of mIoU(7) more (docs/quantisation.md). OpenCV has no bilinear resize
    for int8, so int8 logits are shifted by 128 into uint8 (a monotonic map that commutes with
    interpolation, so argmax sees the same order) and back."""
    if (logits.shape[1], logits.shape[0]) == tuple(size):
        return logits
    if logits.dtype == np.int8:
        shifted = logits.view(np.uint8) ^ np.uint8(0x80)
        up = cv2.resize(shifted, tuple(size), interpolation=cv2.INTER_LINEAR)
        return (up ^ np.uint8(0x80)).view(np.int8).reshape(size[1], size[0], -1)
    up = cv2.resize(logits, tuple(size), interpolation=cv2.INTER_LINEAR)
    return up.reshape(size[1], size[0], -1)


def upsample_mask(mask: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Model-size category mask -> frame size, NEAREST."""
    return resize_mask(mask, (frame_shape[1], frame_shape[0]))

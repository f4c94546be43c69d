"""Scoring a model on a dataset split through the shared preprocessing and metrics.

Every model ``edge_seg.runner.open_model`` opens (.keras, .tflite, .onnx) is scored alike:
frames are read at model size (``purpose='eval'`` labels), the runner's ``predict`` turns them
into masks (``edge_seg.preprocess`` normalisation, quantisation, argmax) and
``edge_seg.iou.SegMetrics`` scores them, either at model size (the default) or, with
``at_label_resolution``, after upsampling the prediction (nearest) to the label's own size as
the Cityscapes benchmark does.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edge_seg.errors import UserError
from edge_seg.iou import SegMetrics
from edge_seg.preprocess import resize_image, resize_mask

from .datasets import Sample, read_image, read_instances, read_mask


@dataclass
class Frame:
    sample: Sample
    rgb: np.ndarray        # RGB uint8 at model size
    mask: np.ndarray       # scored mask (model size or label size)
    instances: np.ndarray | None


def _nearest_int(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NEAREST resize for any integer dtype (cv2 lacks int32 nearest on some builds)."""
    h, w = array.shape[:2]
    if (w, h) == tuple(size):
        return array
    rows = np.minimum(((np.arange(size[1]) + 0.5) * h / size[1]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[0]) + 0.5) * w / size[0]).astype(np.int64), w - 1)
    return array[rows[:, None], cols[None, :]]


def load_frame(sample: Sample, size, at_label_resolution: bool = False,
               with_instances: bool = True) -> Frame:
    image = read_image(sample.image)
    mask = read_mask(sample, purpose="eval")
    if image.shape[:2] != mask.shape:
        raise UserError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                        f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}")
    instances = read_instances(sample) if with_instances else None
    rgb = resize_image(image, size)
    if not at_label_resolution:
        mask = resize_mask(mask, size)
        if instances is not None:
            instances = _nearest_int(instances, size)
    return Frame(sample, rgb, mask, instances)


def iter_frames(samples, size, at_label_resolution=False, with_instances=True, workers=2):
    """Frames in order, read by a small thread pool (cv2 releases the GIL)."""
    with ThreadPoolExecutor(workers) as pool:
        chunk = 16
        for start in range(0, len(samples), chunk):
            yield from pool.map(lambda s: load_frame(s, size, at_label_resolution, with_instances),
                                samples[start:start + chunk])


def keras_predictor(model, batch: int = 8):
    """predict(RGB uint8 frames at model size) -> uint8 category masks, for a model in memory
    (training scores its epochs with it): the .keras runner's batched prediction."""
    from .keras_runner import KerasRunner
    return KerasRunner(model, batch=batch).predict


def score(predict, samples, size, at_label_resolution=False, with_instances=True, batch=8,
          keep_samples: int = 0, progress=None):
    """SegMetrics over ``samples``; also returns up to ``keep_samples`` (frame, prediction)
    pairs spread over the split for a report."""
    metrics = SegMetrics()
    kept = []
    keep_every = max(1, len(samples) // keep_samples) if keep_samples else 0
    pending: list[Frame] = []
    index = 0

    def flush():
        nonlocal index
        preds = predict([f.rgb for f in pending])
        for frame, pred in zip(pending, preds):
            if at_label_resolution:
                pred = resize_mask(pred, (frame.mask.shape[1], frame.mask.shape[0]))
            metrics.update(frame.mask, pred, frame.instances)
            if keep_every and index % keep_every == 0 and len(kept) < keep_samples:
                kept.append((frame, pred))
            index += 1
            if progress is not None:
                progress.update(1)
        pending.clear()

    for frame in iter_frames(samples, size, at_label_resolution, with_instances):
        pending.append(frame)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return metrics, kept


class CachedValSet:
    """The validation frames decoded once (at model size) for per-epoch scoring."""

    def __init__(self, samples, size):
        self.size = size
        self.frames = list(iter_frames(samples, size, False, with_instances=False))

    def score(self, predict, batch=8) -> SegMetrics:
        metrics = SegMetrics()
        for start in range(0, len(self.frames), batch * 4):
            chunk = self.frames[start:start + batch * 4]
            for frame, pred in zip(chunk, predict([f.rgb for f in chunk])):
                metrics.update(frame.mask, pred)
        return metrics


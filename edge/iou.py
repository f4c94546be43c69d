"""Streaming segmentation metrics over the 8 categories (numpy only).

Conventions follow the official Cityscapes category score
(cityscapesScripts ``evalPixelLevelSemanticLabeling``):

* ground truth IGNORE (255) pixels are not counted at all;
* ground-truth void pixels are not scored either: for category c in 1..7,
  FN = its row minus TP (a void *prediction* is a miss), FP = its column over the
  rows of the other non-void categories;
* mIoU(7) averages the 7 non-void categories that occur (NaN ones are skipped);
* iIoU weights each ground-truth instance of human/vehicle by
  ``mean class instance size / instance size``.

``iou_all``/``miou8`` are the plain 8-class scores with void as a class.

Set-valued (coarse) ground truth (``edge_seg.mapping`` set codes, e.g. "construction or
nature") never enters the confusion matrix, so IoU is scored on exact labels only; for
those pixels ``SegMetrics`` reports the share whose prediction lies inside the set.
"""
from __future__ import annotations

import numpy as np

from edge_seg.labels import (CATEGORY_IDS, CATEGORY_NAMES, CITYSCAPES_AVG_INSTANCE_SIZE,
                     CITYSCAPES_LABELS, INSTANCE_CATEGORIES, NUM_CATEGORIES)
from edge_seg.mapping import allowed_table, set_code_mask, set_name

_LABEL_BY_ID = {label.id: label for label in CITYSCAPES_LABELS}


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n: int = NUM_CATEGORIES) -> np.ndarray:
    """(n, n) int64 counts, rows = ground truth, columns = prediction; IGNORE skipped."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    gt = gt.ravel()
    pred = pred.ravel()
    valid = gt < n
    codes = gt[valid].astype(np.int64) * n + pred[valid].astype(np.int64)
    return np.bincount(codes, minlength=n * n).reshape(n, n)


def _divide(num, den):
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def category_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-category IoU/Dice from a confusion matrix, official convention (void NaN)."""
    cm = cm.astype(np.int64)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm[1:].sum(0) - tp  # rows of void ground truth don't count as FP...
    fp[0] = 0
    tp0 = tp.copy()
    # ...and void itself is never scored.
    tp0[0], fn[0] = 0, 0
    iou = _divide(tp0, tp0 + fp + fn)
    dice = _divide(2 * tp0, 2 * tp0 + fp + fn)
    iou[0] = dice[0] = np.nan
    # plain 8-class IoU with void as a class
    iou_all = _divide(tp, cm.sum(0) + cm.sum(1) - tp)
    return {"iou": iou, "dice": dice, "iou_all": iou_all}


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


class SegMetrics:
    """Accumulate frames with ``update``; read the scores with ``result``."""

    def __init__(self, n: int = NUM_CATEGORIES):
        self.n = n
        self.cm = np.zeros((n, n), np.int64)
        self.inst_tp = {c: 0.0 for c in INSTANCE_CATEGORIES}
        self.inst_fn = {c: 0.0 for c in INSTANCE_CATEGORIES}
        self.has_instances = False
        self.set_pixels = np.zeros(256, np.int64)   # per set code: pixels
        self.set_inside = np.zeros(256, np.int64)   # ... whose prediction lies in the set

    def update(self, gt: np.ndarray, pred: np.ndarray, instances: np.ndarray | None = None):
        """gt: catIds with IGNORE; pred: catIds; instances: Cityscapes instanceIds
        (labelId * 1000 + k for instance pixels) at the same size, optional."""
        self.cm += confusion_matrix(gt, pred, self.n)
        pixels, inside = set_label_counts(gt, pred, self.n)
        self.set_pixels += pixels
        self.set_inside += inside
        if instances is not None:
            self._update_instances(instances, pred)
        return self

    def _update_instances(self, instances: np.ndarray, pred: np.ndarray):
        if instances.shape != pred.shape:
            raise ValueError(f"instance map {instances.shape} and prediction {pred.shape} differ in size")
        self.has_instances = True
        ids, inverse, sizes = np.unique(instances.ravel(), return_inverse=True, return_counts=True)
        for index, inst_id in enumerate(ids):
            if inst_id <= 1000:
                continue
            label = _LABEL_BY_ID.get(int(inst_id) // 1000)
            if label is None or label.ignore_in_eval or label.category not in INSTANCE_CATEGORIES:
                continue
            size = int(sizes[index])
            hit = int(np.count_nonzero(pred.ravel()[inverse == index] == CATEGORY_IDS[label.category]))
            weight = CITYSCAPES_AVG_INSTANCE_SIZE[label.name] / size
            self.inst_tp[label.category] += hit * weight
            self.inst_fn[label.category] += (size - hit) * weight

    def merge(self, other: "SegMetrics") -> "SegMetrics":
        self.cm += other.cm
        for c in INSTANCE_CATEGORIES:
            self.inst_tp[c] += other.inst_tp[c]
            self.inst_fn[c] += other.inst_fn[c]
        self.has_instances |= other.has_instances
        self.set_pixels += other.set_pixels
        self.set_inside += other.set_inside
        return self

    def iiou(self) -> dict[str, float]:
        if not self.has_instances:
            return {}
        cols = self.cm[1:].sum(0) - np.diag(self.cm)  # FP as for the category IoU
        out = {}
        for c in INSTANCE_CATEGORIES:
            k = CATEGORY_IDS[c]
            den = self.inst_tp[c] + self.inst_fn[c] + cols[k]
            out[c] = self.inst_tp[c] / den if den > 0 else float("nan")
        return out

    def result(self) -> dict:
        s = category_scores(self.cm)
        scored = self.cm[1:].sum()
        iiou = self.iiou()
        out = {
            "miou7": _nanmean(s["iou"][1:]),
            "miou8": _nanmean(s["iou_all"]),
            "mdice7": _nanmean(s["dice"][1:]),
            "pixel_accuracy": float(np.trace(self.cm[1:, 1:]) / scored) if scored else float("nan"),
            "iou": dict(zip(CATEGORY_NAMES, map(float, s["iou"]))),
            "iou_all": dict(zip(CATEGORY_NAMES, map(float, s["iou_all"]))),
            "dice": dict(zip(CATEGORY_NAMES, map(float, s["dice"]))),
            "pixels": int(self.cm.sum()),
            "confusion_matrix": self.cm.tolist(),
        }
        if iiou:
            out["iiou"] = iiou
            out["miiou"] = _nanmean(list(iiou.values()))
        if self.set_pixels.any():
            out["set_labels"] = set_label_result(self.set_pixels, self.set_inside, int(self.cm.sum()))
            out["set_labels"].update(exact_category_miou(self.cm, s["iou"]))
        return out


_ALLOWED = allowed_table()


def set_label_counts(gt: np.ndarray, pred: np.ndarray, n: int = NUM_CATEGORIES):
    """(pixels, inside): two (256,) int64 arrays indexed by set code, counting the
    set-valued ground-truth pixels and those whose predicted category is in their set."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    is_set = set_code_mask(gt)
    codes = gt[is_set].astype(np.int64)
    guess = np.minimum(pred[is_set].astype(np.int64), n - 1)
    hit = _ALLOWED[codes, guess]
    return np.bincount(codes, minlength=256), np.bincount(codes[hit], minlength=256)


def exact_category_miou(cm: np.ndarray, iou: np.ndarray) -> dict:
    """Mean IoU over the scored categories that have exact ground truth: with coarse labels
    a category may only ever be labelled inside sets (IDD-Lite's construction, object,
    nature), and its IoU then counts false positives alone."""
    present = [c for c in range(1, len(cm)) if cm[c].sum() > 0]
    return {"exact_categories": [CATEGORY_NAMES[c] for c in present],
            "miou_exact_categories": _nanmean(iou[present]) if present else float("nan")}


def set_label_result(pixels: np.ndarray, inside: np.ndarray, exact_pixels: int) -> dict:
    """Report of the set-valued pixels: their share of the labelled pixels, the share
    predicted inside their set, overall and per set."""
    total = int(pixels.sum())
    return {"pixels": total,
            "share_of_labelled": total / (total + exact_pixels) if total + exact_pixels else float("nan"),
            "inside": float(inside.sum() / total) if total else float("nan"),
            "by_set": {set_name(code): {"pixels": int(pixels[code]), "inside": float(inside[code] / pixels[code])}
                       for code in np.flatnonzero(pixels)}}


def agreement_from_cm(cm) -> dict:
    """Agreement from a confusion matrix of a reference's masks (rows, e.g. the float
    model's) against another model's (columns), summed over any number of frames: mIoU(7)
    with the reference as ground truth, per-category IoU and pixel agreement."""
    cm = np.asarray(cm, np.int64)
    s = category_scores(cm)
    total = cm.sum()
    return {"miou7": _nanmean(s["iou"][1:]),
            "iou": dict(zip(CATEGORY_NAMES, map(float, s["iou"]))),
            "pixel_agreement": float(np.trace(cm) / total) if total else float("nan"),
            "confusion_matrix": cm}


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """How far ``other`` (e.g. the int8 mask) is from ``reference`` (the float mask):
    mIoU(7) with the reference as ground truth, per-category IoU and pixel agreement."""
    return agreement_from_cm(confusion_matrix(reference, other))


def drop_points(before: float, after: float) -> float:
    """How much a score (0..1) fell from ``before`` to ``after``, in points (x100);
    NaN when either is NaN."""
    if before is None or after is None or np.isnan(before) or np.isnan(after):
        return float("nan")
    return float((before - after) * 100.0)

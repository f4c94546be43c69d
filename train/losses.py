"""Losses over the 8 category logits: void (catId 0) and IGNORE (255) never count.

* ``ce``: (optionally class-weighted) sparse softmax cross-entropy, averaged over the
  scored pixels (weighted mean when class weights are given);
* ``dice``: soft Dice over the 7 scored categories present in the batch;
* ``ce+dice``: their sum (``dice_weight`` scales the Dice term);
* ``lovasz``: Lovász-softmax (Berman et al. 2018), the convex surrogate of 1 - IoU averaged
  over the scored categories present in the batch: the score itself, thin categories
  counting as much as large ones;
* ``ce+lovasz``: cross-entropy plus Lovász-softmax (``dice_weight`` scales the Lovász term),
  the paper's recipe for fine-tuning a cross-entropy model towards IoU.

Set-valued (coarse) labels (``edge_seg.mapping`` set codes, "one of these categories"):
the cross-entropy of such a pixel is ``-log(sum of the softmax probabilities over its
set)``, which is the ordinary cross-entropy for a one-member set; with class weights it
is weighted by the smallest weight of its members (a coarse pixel never counts more than
its most common member would). Dice and Lovász score exact labels only: set pixels are
left out of them (their soft intersection and union have no single target category).

Class weights: ``median_frequency_weights`` (Eigen & Fergus 2015) from the training
masks: ``freq_c = pixels of c / pixels of the images where c occurs``,
``w_c = median(freq) / freq_c``; void gets 0. ``sqrt-median-freq`` takes the square root,
a milder re-balancing.
"""
from __future__ import annotations

import numpy as np

from edge_seg.labels import IGNORE, NUM_CATEGORIES, VOID
from edge_seg.mapping import allowed_table, set_code_mask

LOSSES = ("ce", "dice", "ce+dice", "lovasz", "ce+lovasz")
CLASS_WEIGHTS = ("none", "median-freq", "sqrt-median-freq")


def class_pixel_stats(masks) -> tuple[np.ndarray, np.ndarray]:
    """(pixels per category, pixels of the images containing that category) over masks
    (exact labels only: set-valued pixels count in neither)."""
    counts = np.zeros(NUM_CATEGORIES, np.int64)
    image_pixels = np.zeros(NUM_CATEGORIES, np.int64)
    for mask in masks:
        valid = mask[(mask != IGNORE) & ~set_code_mask(mask)]
        c = np.bincount(valid.ravel(), minlength=256)[:NUM_CATEGORIES]
        counts += c
        image_pixels += np.where(c > 0, valid.size, 0)
    return counts, image_pixels


def median_frequency_weights(masks, max_weight: float | None = None, power: float = 1.0) -> np.ndarray:
    """(8,) float32 weights, void 0; categories never seen get weight 0 as well.
    ``power`` 0.5 gives the square-root variant (``sqrt-median-freq``): on CamVid plain
    median-frequency (object 5.2, human 10.6 vs construction 0.46) pushed building pixels
    into object and nature."""
    counts, image_pixels = class_pixel_stats(masks)
    freq = np.where(image_pixels > 0, counts / np.maximum(image_pixels, 1), 0.0)
    scored = np.arange(NUM_CATEGORIES) != VOID
    present = scored & (freq > 0)
    if not present.any():
        raise ValueError("no scored category occurs in the training masks")
    median = np.median(freq[present])
    weights = np.where(present, (median / np.where(present, freq, 1.0)) ** power, 0.0)
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    return weights.astype(np.float32)


def make_loss(kind: str = "ce", class_weights=None, dice_weight: float = 1.0,
              num_classes: int = NUM_CATEGORIES):
    """loss(y int (B,H,W) catIds with 255 = ignore, logits (B,H,W,C)) -> scalar (this
    replica's mean; divide by the replica count under a tf.distribute strategy)."""
    import tensorflow as tf

    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    allowed_np = allowed_table(num_classes)
    allowed_np[:, VOID] = False              # void pixels train nothing
    allowed = tf.constant(allowed_np)        # (256, C): mask value -> categories it allows
    scored = tf.constant(np.arange(num_classes) != VOID)
    pixel_weights = None
    if class_weights is not None:
        w = np.asarray(class_weights, np.float32)
        pixel_weights = tf.constant(np.array([w[row].min() if row.any() else 0.0 for row in allowed_np],
                                             np.float32))

    def ce_term(labels, logits, valid):
        # -log(sum of the probabilities of the allowed categories) = logZ - logZ(allowed)
        inside = tf.gather(allowed, labels)
        inside = tf.logical_or(inside, tf.logical_and(~valid[..., None], tf.one_hot(0, num_classes) > 0))
        ce = tf.reduce_logsumexp(logits, -1) - tf.reduce_logsumexp(tf.where(inside, logits, -1e30), -1)
        w = tf.cast(valid, tf.float32)
        if pixel_weights is not None:
            w = w * tf.gather(pixel_weights, labels)
        return tf.math.divide_no_nan(tf.reduce_sum(ce * w), tf.reduce_sum(w))

    def dice_term(labels, logits, valid):
        probs = tf.nn.softmax(logits, axis=-1)
        vmask = tf.cast(valid, tf.float32)[..., None]
        onehot = tf.one_hot(tf.where(valid, labels, 0), num_classes) * vmask
        probs = probs * vmask
        inter = tf.reduce_sum(probs * onehot, axis=[0, 1, 2])
        denom = tf.reduce_sum(probs, axis=[0, 1, 2]) + tf.reduce_sum(onehot, axis=[0, 1, 2])
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        present = tf.logical_and(scored, tf.reduce_sum(onehot, axis=[0, 1, 2]) > 0)
        n = tf.reduce_sum(tf.cast(present, tf.float32))
        return tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, 1.0 - dice, 0.0)), n)

    def lovasz_term(labels, logits, valid):
        probs = tf.boolean_mask(tf.nn.softmax(logits, axis=-1), valid)   # (N, C) scored pixels
        labels = tf.boolean_mask(labels, valid)
        losses, present = [], []
        for c in range(num_classes):
            if c == VOID:
                continue
            fg = tf.cast(tf.equal(labels, c), tf.float32)
            errors = tf.abs(fg - probs[:, c])
            order = tf.argsort(errors, direction="DESCENDING")
            losses.append(tf.tensordot(tf.gather(errors, order),
                                       tf.stop_gradient(lovasz_grad(tf.gather(fg, order))), 1))
            present.append(tf.reduce_sum(fg) > 0)
        present = tf.stack(present)
        n = tf.reduce_sum(tf.cast(present, tf.float32))
        return tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, tf.stack(losses), 0.0)), n)

    def loss(labels, logits):
        labels = tf.cast(labels, tf.int32)
        logits = tf.cast(logits, tf.float32)
        labels = tf.clip_by_value(labels, 0, 255)
        exact = tf.logical_and(tf.logical_and(labels != IGNORE, labels != VOID), labels < num_classes)
        total = 0.0
        if kind in ("ce", "ce+dice", "ce+lovasz"):
            total += ce_term(labels, logits, tf.reduce_any(tf.gather(allowed, labels), -1))
        if kind in ("dice", "ce+dice"):
            total += dice_weight * dice_term(labels, logits, exact)
        if kind in ("lovasz", "ce+lovasz"):
            total += dice_weight * lovasz_term(labels, logits, exact)
        return total

    return loss


def lovasz_grad(fg_sorted):
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. the errors sorted in
    decreasing order (Berman et al. 2018, Alg. 1): the increments of 1 - IoU as pixels join."""
    import tensorflow as tf

    total = tf.reduce_sum(fg_sorted)
    intersection = total - tf.cumsum(fg_sorted)
    union = total + tf.cumsum(1.0 - fg_sorted)
    jaccard = 1.0 - intersection / union
    return tf.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]], 0)

"""tf.data input pipeline: parallel decode, cache, shuffle, augment, batch, prefetch.

Decoding goes through :func:`edge_seg.train.datasets.read_pair` (the shared preprocessing) in
parallel; decoded frames are cached in memory. Training streams are infinite and
deterministic under a seed: every geometric transform is applied to image and mask
with the same random numbers, masks always with NEAREST, padding with IGNORE, so the
set codes of coarse labels (``edge_seg.mapping``) reach the loss unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_seg.labels import IGNORE
from edge_seg.preprocess import MEAN, STD

from .datasets import Sample, read_pair


@dataclass(frozen=True)
class Augment:
    flip: bool = True
    scale: tuple[float, float] = (0.75, 1.75)  # relative to the model size
    brightness: float = 0.2                    # fraction of full range
    contrast: tuple[float, float] = (0.75, 1.25)
    saturation: tuple[float, float] = (0.75, 1.25)


CROP_ONLY = Augment(flip=False, scale=(1.0, 1.0), brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0))


def cache_size(size: tuple[int, int], factor: float = 1.5) -> tuple[int, int]:
    """Training frames are cached larger than the model input so zoom-in crops keep detail."""
    return int(size[0] * factor), int(size[1] * factor)


def _loader(samples: list[Sample], size, purpose: str, skip_bad: bool):
    def load(index):
        sample = samples[int(index)]
        try:
            image, mask = read_pair(sample, size, purpose)
        except Exception:
            if not skip_bad:
                raise
            image = np.zeros((size[1], size[0], 3), np.uint8)
            mask = np.full((size[1], size[0]), IGNORE, np.uint8)
        return image, mask
    return load


def decode(samples: list[Sample], size, purpose: str = "train", skip_bad: bool = False):
    """Dataset of (RGB uint8 (H,W,3), mask uint8 (H,W)) at ``size``, decoded in parallel."""
    import tensorflow as tf

    load = _loader(samples, size, purpose, skip_bad)
    ds = tf.data.Dataset.range(len(samples))
    ds = ds.map(lambda i: tf.numpy_function(load, [i], (tf.uint8, tf.uint8)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.map(lambda x, y: (tf.ensure_shape(x, (size[1], size[0], 3)), tf.ensure_shape(y, (size[1], size[0]))))


def normalize_tf(image):
    """The edge_seg.preprocess.normalize convention, as a TF op."""
    import tensorflow as tf
    return (tf.cast(image, tf.float32) - MEAN) / STD


def augment_pair(image, mask, seed, size, aug: Augment, crop=None):
    """One random geometric + photometric transform; ``seed`` is a (2,) int tensor.
    Image and mask share every geometric random number. The frame is scaled relative to
    ``size`` and a ``crop`` (default: ``size``) is cut from it, so a crop smaller than the
    model size shows objects at the scale the model sees them at."""
    import tensorflow as tf

    fw, fh = size
    w, h = crop or size
    seeds = tf.random.experimental.stateless_split(seed, 8)
    image = tf.cast(image, tf.float32)
    mask = mask[..., None]

    scale = tf.random.stateless_uniform([], seeds[0], aug.scale[0], aug.scale[1])
    new_h = tf.cast(tf.round(fh * scale), tf.int32)
    new_w = tf.cast(tf.round(fw * scale), tf.int32)
    image = tf.image.resize(image, (new_h, new_w), method="bilinear", antialias=True)
    mask = tf.image.resize(mask, (new_h, new_w), method="nearest")

    # pad (image with mid-grey, mask with IGNORE) up to the crop, then crop both alike
    pad_h, pad_w = tf.maximum(h - new_h, 0), tf.maximum(w - new_w, 0)
    paddings = [[pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]]
    image = tf.pad(image, paddings, constant_values=MEAN)
    mask = tf.pad(mask, paddings, constant_values=IGNORE)
    full_h, full_w = tf.shape(mask)[0], tf.shape(mask)[1]
    top = tf.random.stateless_uniform([], seeds[1], 0, full_h - h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, full_w - w + 1, dtype=tf.int32)
    image = image[top:top + h, left:left + w]
    mask = mask[top:top + h, left:left + w]

    if aug.flip:
        flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)

    image = image / 255.0
    if aug.brightness > 0:
        image = tf.image.stateless_random_brightness(image, aug.brightness, seeds[4])
    if aug.contrast[1] > aug.contrast[0]:
        image = tf.image.stateless_random_contrast(image, *aug.contrast, seeds[5])
    if aug.saturation[1] > aug.saturation[0]:
        image = tf.image.stateless_random_saturation(image, *aug.saturation, seeds[6])
    image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
    image = tf.ensure_shape(image, (h, w, 3))
    mask = tf.ensure_shape(mask[..., 0], (h, w))
    return image, mask


def make_dataset(samples: list[Sample], size=(512, 256), batch: int = 8, training: bool = False,
                 seed: int = 0, augment: Augment | None = Augment(), purpose: str = "train",
                 skip_bad: bool = False, shuffle_buffer: int = 1024, crop=None, mix_weights=None):
    """(x float32 (B,H,W,3) normalised, y int32 (B,H,W) mask codes: catIds, set codes of
    coarse labels, 255 = ignore).

    Training: an infinite, shuffled, augmented stream (use steps_per_epoch), of random
    ``crop``-sized windows (W, H) of the ``size`` frame when ``crop`` is given. With
    ``mix_weights`` (training only), ``samples`` is a list of sample lists, one per
    dataset, each resized to ``size`` by the shared preprocessing whatever its frame
    size, and every frame is drawn from dataset i with probability ``mix_weights[i] /
    sum(mix_weights)``.
    Otherwise: one pass in order at ``size``, through the runtime's preprocessing."""
    import tensorflow as tf

    groups = [list(g) for g in samples] if mix_weights is not None else [samples]
    if not all(groups) or not groups:
        raise ValueError("no samples to build a dataset from")
    if not training:
        if mix_weights is not None:
            raise ValueError("mixing datasets applies to training streams only")
        ds = decode(samples, size, purpose, skip_bad).cache()
        ds = ds.map(lambda x, y: (normalize_tf(x), tf.cast(y, tf.int32)))
        return ds.batch(batch).prefetch(tf.data.AUTOTUNE)

    streams = [decode(g, cache_size(size), purpose, skip_bad).cache()
               .shuffle(min(len(g), shuffle_buffer), seed=seed + i, reshuffle_each_iteration=True).repeat()
               for i, g in enumerate(groups)]
    if len(streams) == 1:
        ds = streams[0]
    else:
        w = np.asarray(mix_weights, np.float64)
        if w.shape != (len(groups),) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"mix_weights {list(mix_weights)}: one non-negative weight per dataset, not all 0")
        ds = tf.data.Dataset.sample_from_datasets(streams, weights=(w / w.sum()).tolist(), seed=seed,
                                                  stop_on_empty_dataset=False)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))

    def transform(pair, s):
        image, mask = pair
        if augment is None and crop is None:
            image = tf.image.resize(tf.cast(image, tf.float32), (size[1], size[0]), antialias=True)
            mask = tf.image.resize(mask[..., None], (size[1], size[0]), method="nearest")[..., 0]
        else:
            image, mask = augment_pair(image, mask, s, size, augment or CROP_ONLY, crop)
        return normalize_tf(image), tf.cast(mask, tf.int32)

    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_samples: int, batch: int) -> int:
    return max(1, n_samples // batch)

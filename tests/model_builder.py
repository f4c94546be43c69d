"""Randomly initialised test models: small U-Nets as .tflite with their sidecar.

    python tests/model_builder.py --out DIR --size 128x64 --widths 8,16,24 \\
        --seed 1 --kinds fp32,int8,uint8 --name tiny

A small U-Net of depthwise-separable blocks (stride-2 encoder, bilinear x2 decoder with
skips, 8 logits at input resolution) with random weights, converted with
tf.lite.TFLiteConverter (fp32, or full integer with int8/uint8 input and output,
calibrated on synthetic street-coloured images) and described by an edge_seg.backends.metadata
sidecar. The tests build them once per TensorFlow version (conftest.tiny_models): they
exercise the runtime's paths without a trained model. Needs TensorFlow and tf_keras (the
[train] extra).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_seg.labels import CATEGORIES, NUM_CATEGORIES
from edge_seg.backends.metadata import make_meta, write_meta
from edge_seg.io.publish import atomic_write_bytes
from edge_seg.preprocess import normalize, parse_size
from edge_seg.train.tf_env import use_legacy_keras

use_legacy_keras()  # before TensorFlow loads (inside the functions below)

NAME = "random-init"
WIDTHS = (16, 24, 32, 48, 64)
SIZE = (512, 256)
KINDS = ("fp32", "int8", "uint8")


def build_unet(input_size=SIZE, widths=WIDTHS, seed: int = 0,
               num_classes: int = NUM_CATEGORIES, batch_size: int | None = 1):
    """tf_keras functional U-Net: (1, H, W, 3) normalised RGB -> (1, H, W, C) logits.

    Level i (stride 2**(i+1)) has ``widths[i]`` channels; random weights from ``seed``.
    ``batch_size`` None: any batch, for a model that trains.
    """
    import tensorflow as tf
    import tf_keras as keras
    L = keras.layers
    tf.keras.utils.set_random_seed(seed)
    keras.utils.set_random_seed(seed)
    w, h = input_size
    inputs = keras.Input((h, w, 3), batch_size=batch_size, name="image")

    def ds(x, filters, stride, name):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", name=f"{name}_dw")(x)
        x = L.ReLU(6.0, name=f"{name}_dw_relu")(x)
        x = L.Conv2D(filters, 1, name=f"{name}_pw")(x)
        return L.ReLU(6.0, name=f"{name}_pw_relu")(x)

    x = L.Conv2D(widths[0], 3, strides=2, padding="same", name="stem")(inputs)
    x = L.ReLU(6.0, name="stem_relu")(x)
    skips = [x]
    for i, width in enumerate(widths[1:], start=1):
        x = ds(x, width, 2, f"enc{i}")
        skips.append(x)
    x = skips.pop()
    for i in range(len(widths) - 2, -1, -1):
        x = L.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}_up")(x)
        x = L.Concatenate(name=f"dec{i}_cat")([x, skips.pop()])
        x = ds(x, widths[i], 1, f"dec{i}")
    x = L.UpSampling2D(2, interpolation="bilinear", name="out_up")(x)
    logits = L.Conv2D(num_classes, 1, name="head")(x)
    return keras.Model(inputs, logits, name=f"unet_{'_'.join(map(str, widths))}")


def street_images(size, n: int, seed: int = 0):
    """Synthetic street-coloured BGR images (sky, buildings, road, blobs, noise) for
    calibration; deterministic, no dependency on any dataset."""
    import cv2
    rng = np.random.default_rng(seed)
    w, h = size
    palette = np.array([c.color[::-1] for c in CATEGORIES], np.float32)
    for _ in range(n):
        img = np.zeros((h, w, 3), np.float32)
        horizon = int(h * rng.uniform(0.3, 0.6))
        img[:horizon] = palette[5] * rng.uniform(0.7, 1.3)
        img[horizon:] = palette[1] * rng.uniform(0.7, 1.3)
        for _ in range(rng.integers(3, 12)):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            x1, y1 = x0 + rng.integers(w // 16, w // 3), y0 + rng.integers(h // 16, h // 2)
            color = palette[rng.integers(0, len(palette))] * rng.uniform(0.6, 1.4)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), color.tolist(), -1)
        img += rng.normal(0, 12, img.shape)
        yield np.clip(img, 0, 255).astype(np.uint8)


def convert(model, kind: str, input_size, calibration: int = 16, seed: int = 0) -> bytes:
    """fp32, or full-integer int8/uint8 (input and output) TFLite flatbuffer."""
    import cv2
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind != "fp32":
        def representative():
            for bgr in street_images(input_size, calibration, seed):
                yield [normalize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))[np.newaxis]]
        io_type = {"int8": tf.int8, "uint8": tf.uint8}[kind]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return converter.convert()


def export(model, path: Path, kind: str, input_size, variant: str, seed: int, **extra) -> Path:
    """Write ``path`` (.tflite) and its sidecar .json."""
    path = Path(path)
    atomic_write_bytes(path, convert(model, kind, input_size, seed=seed))
    write_meta(path, make_meta(input_size, variant, quantization=kind, seed=seed,
                               architecture=model.name, **extra))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="x".join(map(str, SIZE)), help="WIDTHxHEIGHT")
    p.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="int8", help=f"comma list of {', '.join(KINDS)}")
    p.add_argument("--name", default=NAME, help="file stem; also the variant")
    args = p.parse_args(argv)
    size = parse_size(args.size)
    widths = tuple(int(v) for v in args.widths.split(","))
    model = build_unet(size, widths, args.seed)
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            p.error(f"--kinds: {kind!r} is not one of {', '.join(KINDS)}")
        path = export(model, args.out / f"{args.name}-{kind}.tflite", kind, size, args.name, args.seed,
                      note="randomly initialised weights: the masks mean nothing")
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

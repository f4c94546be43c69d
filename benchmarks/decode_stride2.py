"""Two ways from stride-2 logits to a full-size mask, scored on labelled frames and timed.

    .venv/bin/python benchmarks/decode_stride2.py DATA_ROOT SPLIT FLOAT.keras STRIDE2-INT8.tflite

One pass over the split: the float model's mask, and the int8 model's (a) argmax at stride 2
resized NEAREST, (b) int8 logits upsampled bilinearly to the input size then argmaxed
(edge_seg.preprocess.upsample_logits, what the runtime does), (c) the same with the logits
as float32 and numpy's argmax; each scored at the model's input size (labels resized NEAREST
to it) and at the label's own size (the mask resized NEAREST to it). Then the cost of each
decode to a 480x360 frame. docs/quantisation.md shows the results.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import print_header  # noqa: E402
from edge_seg.iou import SegMetrics  # noqa: E402
from edge_seg.preprocess import resize_image, resize_mask, upsample_logits  # noqa: E402
from edge_seg.runner import open_model  # noqa: E402
from edge_seg.segmenter import argmax_categories  # noqa: E402

FRAME = (480, 360)


def float_bilinear(logits, size):
    up = cv2.resize(logits[0].astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.argmax(up, axis=-1).astype(np.uint8)


def decoders(size):
    return {"argmax at stride 2, NEAREST": lambda z: resize_mask(argmax_categories(z[0]), size),
            "int8 logits bilinear, argmax": lambda z: argmax_categories(upsample_logits(z[0], size)),
            "float32 logits bilinear, argmax": lambda z: float_bilinear(z, size)}


def score(root, split, keras_path, int8_path):
    from edge_seg.train.datasets import load_split, read_image, read_mask

    fl, q = open_model(keras_path, threads=2), open_model(int8_path, threads=2)
    size = q.input_size
    ways = {"float": None, **decoders(size)}
    metrics = {(n, r): SegMetrics() for n in ways for r in ("input", "label")}
    samples = load_split(root, split=split)
    for s in samples:
        image, gt = read_image(s.image), read_mask(s, purpose="eval")
        rgb = resize_image(image, size)
        logits = q.infer(q.prepare(rgb))
        preds = {n: fn(logits) for n, fn in ways.items() if fn}
        preds["float"] = fl.decode(fl.infer(fl.prepare(rgb)))
        for n, p in preds.items():
            metrics[(n, "input")].update(resize_mask(gt, size), p)
            metrics[(n, "label")].update(gt, resize_mask(p, (gt.shape[1], gt.shape[0])))
    miou = {k: m.result()["miou7"] for k, m in metrics.items()}
    print(f"{root} {split}: {len(samples)} frames; float {keras_path}; int8 {int8_path}")
    for r in ("input", "label"):
        for n in ways:
            print(f"  at {r} size  {n:34s} mIoU(7) {miou[(n, r)] * 100:.2f}  "
                  f"drop {(miou[('float', r)] - miou[(n, r)]) * 100:+.3f} pt")
    return q


def cost(q, runs: int = 200):
    size = q.input_size
    logits = q.infer(q.prepare(np.zeros((size[1], size[0], 3), np.uint8)))
    to_input = decoders(size)
    ways = {"argmax at stride 2, NEAREST": decoders(FRAME)["argmax at stride 2, NEAREST"],
            "int8 logits bilinear, argmax, NEAREST":
                lambda z: resize_mask(to_input["int8 logits bilinear, argmax"](z), FRAME),
            "float32 logits bilinear, argmax": decoders(FRAME)["float32 logits bilinear, argmax"]}
    for name, fn in ways.items():
        fn(logits)
        t0 = time.perf_counter()
        for _ in range(runs):
            fn(logits)
        print(f"  decode to {FRAME[0]}x{FRAME[1]}: {name}: {(time.perf_counter() - t0) / runs * 1e3:.2f} ms")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        print("error: expected DATA_ROOT SPLIT FLOAT.keras STRIDE2-INT8.tflite", file=sys.stderr)
        return 2
    print_header([1], FRAME, argv[3])
    cost(score(*argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

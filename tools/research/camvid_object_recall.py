"""Where a model's object IoU goes on CamVid: pole vs sign, and pole recall by width.

    python -m tools.research.camvid_object_recall MODEL.keras --data ../shared/datasets/camvid --split val

A diagnosis, not a test. The category object is the union of CamVid's Pole (id 2) and
SignSymbol (id 6); this reads the raw CamVid ids to split the object recall between them,
and the recall of pole pixels by the width (at model size) of the horizontal run they
belong to. On the reference model (val): poles are found in 20-28% of their pixels whatever
their width (1 px or 8+), signs in 45%; on the training frames 50% and 71%: what keeps
object down is recognising poles and signs in unseen frames, not their thinness.
"""
from __future__ import annotations

import argparse

import numpy as np

from edge_seg.errors import UserError
from edge_seg.iou import category_scores, confusion_matrix
from edge_seg.preprocess import parse_size, resize_mask

OBJECT, POLE, SIGN = 3, 2, 6


def pole_runs(pole: np.ndarray):
    """(width, row, start, stop) of every horizontal run of pole pixels."""
    for r in np.flatnonzero(pole.any(1)):
        d = np.diff(np.concatenate([[0], pole[r].astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            yield b - a, r, a, b


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help=".keras, .tflite or .onnx model")
    ap.add_argument("--data", required=True, help="CamVid root (SegNet layout)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--size", default="512x256", help="input size WxH of a model whose size is open")
    args = ap.parse_args(argv)
    from edge_seg.train.tf_env import use_legacy_keras
    use_legacy_keras()
    import cv2

    from edge_seg.runner import open_model
    from edge_seg.train.datasets import load_split
    from edge_seg.train.evaluate import load_frame

    runner = open_model(args.model, input_size=parse_size(args.size))
    size = runner.input_size  # --size counts only for a model whose input size is open
    samples = load_split(args.data, "camvid", args.split)
    predict = runner.predict
    cm = np.zeros((8, 8), np.int64)
    n = dict.fromkeys(("pole", "pole_hit", "sign", "sign_hit"), 0)
    by_width = {}  # width (8 = 8+) -> [pixels, found]
    for start in range(0, len(samples), 8):
        frames = [load_frame(s, size, with_instances=False) for s in samples[start:start + 8]]
        for frame, pred in zip(frames, predict([f.rgb for f in frames])):
            cm += confusion_matrix(frame.mask, pred)
            raw = resize_mask(cv2.imread(str(frame.sample.mask), cv2.IMREAD_UNCHANGED), size)
            found = pred == OBJECT
            pole, sign = raw == POLE, raw == SIGN
            n["pole"] += pole.sum(); n["pole_hit"] += (pole & found).sum()
            n["sign"] += sign.sum(); n["sign_hit"] += (sign & found).sum()
            for width, r, a, b in pole_runs(pole):
                entry = by_width.setdefault(min(width, 8), [0, 0])
                entry[0] += b - a
                entry[1] += found[r, a:b].sum()
    tp, gt, called = cm[OBJECT, OBJECT], cm[OBJECT].sum(), cm[1:, OBJECT].sum()  # void ground truth isn't scored
    if not gt:
        raise UserError(f"no object pixels in {args.data} {args.split}")
    print(f"{args.model} [{args.split}]: object IoU {category_scores(cm)['iou'][OBJECT]:.3f}  "
          f"precision {tp / max(called, 1):.3f}  recall {tp / gt:.3f}")
    print(f"  pole recall {n['pole_hit'] / max(n['pole'], 1):.3f} ({n['pole']} px)   "
          f"sign recall {n['sign_hit'] / max(n['sign'], 1):.3f} ({n['sign']} px)")
    print("  pole recall by run width in px (8 = 8+): " + "  ".join(
        f"{w}: {hit / px:.2f}" for w, (px, hit) in sorted(by_width.items())))


if __name__ == "__main__":
    import sys
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")

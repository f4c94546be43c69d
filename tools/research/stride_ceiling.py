"""How much IoU a head at output stride s can reach at all -- a design measurement, not a test.

    python -m tools.research.stride_ceiling --data ../shared/datasets/camvid --split val --strides 2,4,8

The ground truth itself, at model size, goes through what a stride-s head does to its logits:
one-hot masks area-averaged down by s (the best a stride-s logit map can hold), bilinearly
upsampled back (as the models' last layer does), argmax. The IoU of that against the
original mask is the ceiling any model with that head can reach. It is why
unet-mobilenetv2 predicts at stride 2 (CamVid val, object: 0.936 at stride 2, 0.81 at
stride 4): the head's resolution is not what keeps thin poles and signs down.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np
from tqdm import tqdm

from edge_seg.errors import UserError
from edge_seg.labels import CATEGORY_NAMES, IGNORE, NUM_CATEGORIES, VOID
from edge_seg.iou import SegMetrics
from edge_seg.preprocess import parse_size
from edge_seg.train.datasets import load_split, read_pair


def through_stride(mask: np.ndarray, stride: int) -> np.ndarray:
    """mask (H, W) category ids -> what a perfect stride-``stride`` head would predict."""
    h, w = mask.shape
    one_hot = np.eye(NUM_CATEGORIES, dtype=np.float32)[np.where(mask == IGNORE, VOID, mask)]
    small = cv2.resize(one_hot, (w // stride, h // stride), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return up.argmax(-1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--format", default="auto")
    ap.add_argument("--split", default="val")
    ap.add_argument("--size", default="512x256", help="model input size WxH")
    ap.add_argument("--strides", default="2,4,8")
    args = ap.parse_args(argv)
    try:
        size = parse_size(args.size)
    except ValueError as e:
        raise UserError(f"--size: {e}") from None
    strides = [int(s) for s in args.strides.split(",")]
    metrics = {s: SegMetrics() for s in strides}
    for sample in tqdm(load_split(args.data, args.format, args.split), desc="frames"):
        _, mask = read_pair(sample, size, purpose="eval")
        for s in strides:
            metrics[s].update(mask, through_stride(mask, s))
    print(f"IoU ceiling of a head at output stride s ({args.split}, scored at {size[0]}x{size[1]})")
    print("stride  mIoU(7)  " + "  ".join(f"{n[:6]:>6}" for n in CATEGORY_NAMES[1:]))
    for s in strides:
        r = metrics[s].result()
        ious = "  ".join(f"{r['iou'][n]:6.3f}" for n in CATEGORY_NAMES[1:])
        print(f"{s:>6}  {r['miou7']:7.3f}  {ious}")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        raise SystemExit(f"error: {e}")

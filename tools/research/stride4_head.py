"""A stride-4 U-Net started from the reference without disturbing it: every layer the two
graphs share is copied, and the new head (dec4 features -> logits at stride 4) is solved by
least squares against the reference's own stride-2 logits averaged to stride 4, so fine-tuning
begins near the reference's accuracy instead of from a random head whose first gradients
reshape the decoder.

    python tools/research/stride4_head.py OUT.keras [--frames 300]
    edge-seg train ... --decoder-widths 128,64,48 --init-from OUT.keras --teacher ...
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
DATA = REPO.parent / "shared" / "datasets"


def frames(n: int, size):
    from edge_seg.preprocess import normalize
    from edge_seg.train.datasets import load_split, read_pair

    samples = []
    for name in ("camvid", "idd-lite"):
        split = load_split(DATA / name, "auto", "drive-train")
        step = max(1, len(split) // (n // 2))
        samples += split[::step][: n // 2]
    for s in samples:
        image, _ = read_pair(s, size)
        yield normalize(image)[None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    args = ap.parse_args()
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras

    from edge_seg.train.models import build_model
    from edge_seg.train.trainer import warm_start

    ref = keras.models.load_model(args.reference, compile=False)
    size = (ref.input_shape[2], ref.input_shape[1])
    probe = keras.Model(ref.input, [ref.get_layer("dec4_a_pw_relu").output, ref.get_layer("head").output])
    gram, cross, count = None, None, 0
    for x in frames(args.frames, size):
        feats, logits = probe.predict(x, verbose=0)
        f = feats[0].reshape(-1, feats.shape[-1])
        h, w, c = logits.shape[1:]
        t = logits[0].reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3)).reshape(-1, c)
        f = np.concatenate([f, np.ones((len(f), 1), f.dtype)], axis=1).astype(np.float64)
        gram = f.T @ f if gram is None else gram + f.T @ f
        cross = f.T @ t if cross is None else cross + f.T @ t
        count += 1
    solution = np.linalg.solve(gram + 1e-3 * np.eye(len(gram)), cross)
    model = build_model("unet-mobilenetv2", size, 1.0, decoder_widths=[128, 64, 48])
    print(warm_start(model, args.reference))
    head = model.get_layer("head")
    head.set_weights([solution[:-1][None, None].astype(np.float32), solution[-1].astype(np.float32)])
    model.save(args.out)
    print(f"head solved on {count} frames; wrote {args.out}")


if __name__ == "__main__":
    main()

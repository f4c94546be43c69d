"""Cheaper U-Nets started from the reference without disturbing it: every layer the graphs
share is copied, and each new 1x1 head is solved by least squares against the reference's own
stride-2 logits, so fine-tuning begins near the reference's accuracy instead of from a random
head whose first gradients reshape the decoder.

    # logits at stride 4 (--decoder-widths 128,64,48): the head on dec4's features, against
    # the reference's logits averaged to stride 4
    python tools/research/stride4_head.py OUT.keras
    # a trained stride-4 model refined at stride 2 (--decoder-widths 128,64,48,0): its head
    # becomes head4, and the 1x1 refinement over its upsampled logits and the stride-2 skip
    # is solved against the reference's stride-2 logits
    python tools/research/stride4_head.py OUT.keras --refine runs/s4/best.keras
    # the same refinement as a sum, up(head4(dec4)) + refine_skip(stride-2 skip), both convs
    # solved at once: no concatenation forces the logits and the skip onto one int8 scale
    python tools/research/stride4_head.py OUT.keras --refine runs/s4/best.keras --add
    edge-seg train ... --decoder-widths 128,64,48[,0] --init-from OUT.keras --teacher ...
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
    """``n`` training frames, half CamVid, half IDD-Lite, spread over each split, each as
    the converters' calibration feeds it (normalised, batch of one)."""
    from edge_seg.converters.tflite_export import representative_dataset
    from edge_seg.train.datasets import load_split

    samples = []
    for name in ("camvid", "idd-lite"):
        split = load_split(DATA / name, "auto", "drive-train")
        step = max(1, len(split) // (n // 2))
        samples += split[::step][: n // 2]
    for (x,) in representative_dataset(samples, size)():
        yield x


def solve(features, reference, n: int, to_stride4: bool) -> np.ndarray:
    """(in+1, C) weights and bias of the 1x1 conv that best maps ``features`` (a model of the
    frame) to the reference's stride-2 logits (averaged 2x2 when ``to_stride4``)."""
    import tf_keras as keras

    teacher = keras.Model(reference.input, reference.get_layer("head").output)
    size = (reference.input_shape[2], reference.input_shape[1])
    gram = cross = None
    for x in frames(n, size):
        f = features.predict(x, verbose=0)[0]
        f = f.reshape(-1, f.shape[-1]).astype(np.float64)
        t = teacher.predict(x, verbose=0)[0]
        if to_stride4:
            h, w, c = t.shape
            t = t.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))
        t = t.reshape(-1, t.shape[-1])
        f = np.concatenate([f, np.ones((len(f), 1))], axis=1)
        gram = f.T @ f if gram is None else gram + f.T @ f
        cross = f.T @ t if cross is None else cross + f.T @ t
    return np.linalg.solve(gram + 1e-3 * np.eye(len(gram)), cross)


def set_conv(layer, solution: np.ndarray) -> None:
    layer.set_weights([solution[:-1][None, None].astype(np.float32), solution[-1].astype(np.float32)])


def additive_refinement(stride4, num_classes: int):
    """(model, features): ``stride4``'s layers up to dec4, then logits at stride 2 as
    up(head4(dec4)) + refine_skip(stride-2 skip), and the model of the frame those two 1x1
    convs read, [up(dec4), skip], in that order. A 1x1 conv commutes with the bilinear x2 (its
    weights sum to one), so one least-squares solve over these features sets both convs."""
    import tf_keras as keras

    from edge_seg.train.models import _MNV2_SKIPS

    L = keras.layers
    dec4 = stride4.get_layer("dec4_a_pw_relu").output
    skip = stride4.get_layer(_MNV2_SKIPS[2]).output
    up = L.UpSampling2D(2, interpolation="bilinear", name="refine_up")(
        L.Conv2D(num_classes, 1, name="head4")(dec4))
    head = L.Add(name="head")([up, L.Conv2D(num_classes, 1, use_bias=False, name="refine_skip")(skip)])
    model = keras.Model(stride4.input, L.UpSampling2D(2, interpolation="bilinear", name="head_up")(head),
                        name=stride4.name)
    features = keras.Model(stride4.input, L.Concatenate()(
        [L.UpSampling2D(2, interpolation="bilinear")(dec4), skip]))
    return model, features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--refine", type=Path, help="a trained stride-4 model to refine at stride 2")
    ap.add_argument("--add", action="store_true",
                    help="with --refine: the refinement as a sum of two 1x1 convs (a research graph "
                         "that build_model does not make)")
    args = ap.parse_args()
    if args.add and not args.refine:
        ap.error("--add refines a stride-4 model: pass --refine MODEL")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as keras

    from edge_seg.train.models import build_model
    from edge_seg.train.trainer import warm_start

    ref = keras.models.load_model(args.reference, compile=False)
    if args.add:
        model, features = additive_refinement(keras.models.load_model(args.refine, compile=False),
                                              ref.output_shape[-1])
        solution = solve(features, ref, args.frames, False)
        dec4 = model.get_layer("head4").input.shape[-1]
        set_conv(model.get_layer("head4"), np.concatenate([solution[:dec4], solution[-1:]]))
        model.get_layer("refine_skip").set_weights([solution[dec4:-1][None, None].astype(np.float32)])
        model.save(args.out)
        print(f"refinement solved on {args.frames} frames; wrote {args.out}")
        return
    size = (ref.input_shape[2], ref.input_shape[1])
    source = args.refine or args.reference
    model = build_model("unet-mobilenetv2", size, 1.0,
                        decoder_widths=[128, 64, 48, 0] if args.refine else [128, 64, 48])
    print(warm_start(model, source))
    if args.refine:
        stride4 = keras.models.load_model(args.refine, compile=False)
        model.get_layer("head4").set_weights(stride4.get_layer("head").get_weights())
        features = keras.Model(model.input, model.get_layer("refine_cat").output)
    else:
        features = keras.Model(ref.input, ref.get_layer("dec4_a_pw_relu").output)
    set_conv(model.get_layer("head"), solve(features, ref, args.frames, not args.refine))
    model.save(args.out)
    print(f"head solved on {args.frames} frames; wrote {args.out}")


if __name__ == "__main__":
    main()

"""How fast any U-Net on this encoder can be in int8 -- a design measurement, not a test.

    python tools/research/encoder_ceiling.py --baseline int8-018142a35fcc.tflite \
        [--model models/unet-mobilenetv2-camvid-idd.keras] [--compare FILE.tflite ...] \
        [--threads 1,2] [--rounds 15] [--decoders]

The model's MobileNetV2 encoder alone (input to its stride-32 features, no decoder, no head)
is converted as ``edge-seg convert --int8`` converts models (int8 I/O, one scale per tensor)
and timed beside ``--baseline`` (an older int8 model), the bundled default int8 and every
``--compare`` file: the encoder's time bounds what any decoder on it can reach, so the
speed-up over the baseline printed for it is the most a decoder change can buy.

``--decoders`` also times the decoder alone (the stride-4 graph refined at stride 2,
``--decoder-widths 128,64,48,0``, fed with the encoder's feature maps) and the same decoder
with one simplification each, at 1 thread: what each part of the decoder costs. At 2 threads a
graph of 1-2 ms does not reliably find its second thread (block medians range 2-3x), so
those rows are left out.

Timing: short shuffled blocks with pauses (benchmarks/blocks.py). Speed does not depend on
calibration: the encoder and decoders are calibrated on random frames.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.bench_int8 import litert_runner  # noqa: E402
from benchmarks.blocks import CallRunner, measure  # noqa: E402
from benchmarks.machine import print_header  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
DEFAULT_INT8 = REPO / "models" / "unet-mobilenetv2-camvid-idd-int8.tflite"
# the refined stride-4 decoder's widths at strides 16, 8, 4 (train.models.decoder_table)
DECODER = {16: 128, 8: 64, 4: 48}
CALIBRATION_FRAMES = 8


def random_calibration(shapes: dict):
    """representative_dataset over random tensors, keyed by input name (TFLite may reorder
    a multi-input graph's inputs)."""
    rng = np.random.default_rng(0)

    def gen():
        for _ in range(CALIBRATION_FRAMES):
            yield {name: rng.uniform(-1, 6, (1,) + shape).astype(np.float32)
                   for name, shape in shapes.items()}
    return gen


def int8(model) -> bytes:
    from edge_seg.converters.tflite_export import convert

    shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}
    return convert(model, "int8", random_calibration(shapes))


def encoder(model):
    import tf_keras as keras

    from edge_seg.train.models import _MNV2_DEEP

    return keras.Model(model.input, model.get_layer(_MNV2_DEEP).output, name="encoder")


def decoder(shapes: dict, num_classes: int, upsampling="bilinear", second=True,
            refinement="concat", skips=True):
    """The refined stride-4 decoder on feature-map inputs {stride: (h, w, c)}, as
    train.models builds it unless a keyword simplifies it."""
    import tf_keras as keras

    from edge_seg.train.models import _ds_block

    L = keras.layers
    # names sort in stride order: the converter feeds inputs by name
    inputs = {s: L.Input(shapes[s], name=f"s{s:02d}") for s in (32, 16, 8, 4, 2)}
    x = inputs[32]
    for stride, width in DECODER.items():
        x = L.UpSampling2D(2, interpolation=upsampling)(x)
        if skips:
            x = L.Concatenate()([x, inputs[stride]])
        x = _ds_block(x, width, f"dec{stride}_a")
        if second and stride >= 8:
            x = _ds_block(x, width, f"dec{stride}_b")
    x = L.Conv2D(num_classes, 1)(x)
    if refinement == "concat":
        x = L.UpSampling2D(2, interpolation="bilinear")(x)
        x = L.Conv2D(num_classes, 1)(L.Concatenate()([x, inputs[2]]))
    elif refinement == "add":
        x = L.UpSampling2D(2, interpolation="bilinear")(x)
        x = L.Add()([x, L.Conv2D(num_classes, 1, use_bias=False)(inputs[2])])
    return keras.Model(list(inputs.values()), x, name="decoder")


DECODER_VARIANTS = {
    "decoder, as --decoder-widths 128,64,48,0 builds it": {},
    "refinement as a sum (no concatenation)": {"refinement": "add"},
    "no refinement (logits at stride 4)": {"refinement": None},
    "nearest instead of bilinear x2": {"upsampling": "nearest"},
    "one block per stride instead of two at 16 and 8": {"second": False},
    "no skip concatenations": {"skips": False},
}


def table(blocks: dict, reference: str | None) -> None:
    print("| graph | ms | blocks min-max |" + (" speed-up over the baseline |" if reference else ""))
    print("|---|---|---|" + ("---|" if reference else ""))
    ref = np.median(blocks[reference]) if reference else None
    for name, b in blocks.items():
        m = float(np.median(b))
        cells = f"| {name} | {m:.2f} | {min(b):.2f}-{max(b):.2f} |"
        print(cells + (f" {ref / m:.2f}x |" if reference else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a unet-mobilenetv2 .keras")
    ap.add_argument("--baseline", type=Path, required=True, help="the int8 .tflite to compare with")
    ap.add_argument("--compare", type=Path, nargs="*", default=[], help="more .tflite files to time")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--pause", type=float, default=0.2)
    ap.add_argument("--decoders", action="store_true", help="also time the decoder and its variants")
    args = ap.parse_args()
    import tf_keras as keras

    from edge_seg.train.models import _MNV2_DEEP, _MNV2_SKIPS

    threads = [int(t) for t in args.threads.split(",")]
    for path in [args.model, args.baseline, *args.compare]:
        if not path.is_file():
            sys.exit(f"{path}: no such file")
    model = keras.models.load_model(args.model, compile=False)
    print_header(args.threads, f"{model.input_shape[2]}x{model.input_shape[1]}", args.model.name)
    graphs = {f"encoder alone (input .. {_MNV2_DEEP}), int8": int8(encoder(model)),
              f"baseline {args.baseline.name}": args.baseline.read_bytes()}
    if DEFAULT_INT8.is_file():
        graphs[f"bundled default {DEFAULT_INT8.name}"] = DEFAULT_INT8.read_bytes()
    graphs.update({p.name: p.read_bytes() for p in args.compare})
    for n in threads:
        print(f"\n### {n} thread{'s' if n > 1 else ''}\n")
        runners = {k: CallRunner(litert_runner(g, n), k) for k, g in graphs.items()}
        table(measure(runners, args.rounds, args.block, args.pause), f"baseline {args.baseline.name}")
    if args.decoders:
        names = {**_MNV2_SKIPS, 32: _MNV2_DEEP}
        shapes = {s: tuple(model.get_layer(names[s]).output.shape[1:]) for s in names}
        classes = model.output_shape[-1]
        print("\n### decoders alone, int8, 1 thread\n")
        runners = {k: CallRunner(litert_runner(int8(decoder(shapes, classes, **v)), 1), k)
                   for k, v in DECODER_VARIANTS.items()}
        table(measure(runners, args.rounds, args.block, args.pause), None)


if __name__ == "__main__":
    main()

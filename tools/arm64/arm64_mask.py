"""Helper for tools/arm64/arm64_check.sh: one fixed frame -> one category mask, so the mask
computed on arm64 (under emulation) can be compared with the x86 one.

Runtime-only: the ``frame``, ``mask`` and ``compare`` commands need numpy, OpenCV and a
TFLite interpreter (ai-edge-litert) -- what ``pip install edge-seg`` brings -- never
TensorFlow. Only ``make-models`` (host side, used when no bundled model exists) needs
TensorFlow, imported inside it (likewise ``make-op-models``).

    python tools/arm64/arm64_mask.py frame OUT.png
    python tools/arm64/arm64_mask.py mask --model M.tflite --frame F.png --out MASK.png [--raw R.npy]
    python tools/arm64/arm64_mask.py compare A.png B.png [--raw A.npy B.npy]
    python tools/arm64/arm64_mask.py make-models OUTDIR      # needs TensorFlow (host only)
    python tools/arm64/arm64_mask.py make-op-models OUTDIR   # needs TensorFlow (host only)
    python tools/arm64/arm64_mask.py run-ops --dir OUTDIR --out RESULTS [--kernels K]
    python tools/arm64/arm64_mask.py compare-ops REFERENCE_RESULTS OTHER_RESULTS...

The mask is the model-resolution argmax (uint8 category ids), written as PNG; ``--raw`` also
keeps the raw output tensor (int8 or float32) for a finer comparison.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

FRAME_SIZE = (640, 360)  # (width, height) of the fixed test frame


# ---------------------------------------------------------------- the fixed frame
def make_frame(width: int = FRAME_SIZE[0], height: int = FRAME_SIZE[1], seed: int = 0):
    """A deterministic, street-like BGR frame: sky gradient, buildings, road, a car, a pole,
    plus seeded noise so that many pixels sit near class boundaries."""
    import numpy as np
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float64)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :]
    rgb = np.zeros((height, width, 3), np.float64)
    # sky (blue gradient)
    rgb[..., 0] = 70 + 60 * y
    rgb[..., 1] = 130 + 40 * y
    rgb[..., 2] = 180 + 50 * (1 - y) + 0 * x
    # buildings: grey blocks of varying height
    for i in range(8):
        x0, x1 = int(i * width / 8), int((i + 1) * width / 8)
        top = int(height * (0.15 + 0.25 * rng.random()))
        grey = 60 + 80 * rng.random()
        rgb[top:int(height * 0.55), x0:x1] = (grey, grey * 0.97, grey * 0.95)
        # windows
        for wy in range(top + 8, int(height * 0.55) - 8, 18):
            for wx in range(x0 + 6, x1 - 10, 16):
                rgb[wy:wy + 8, wx:wx + 6] = (200, 200, 160)
    # vegetation strip
    rgb[int(height * 0.50):int(height * 0.58), :] = (107, 142, 35)
    # road: trapezoid
    yy, xx = np.mgrid[0:height, 0:width]
    horizon = int(height * 0.55)
    half = (yy - horizon).clip(0) / max(1, height - horizon) * 0.6 * width + 0.05 * width
    road = (yy >= horizon) & (np.abs(xx - width / 2) < half)
    rgb[road] = (128, 64, 128)
    rgb[(yy >= horizon) & ~road] = (150, 150, 150)  # sidewalk
    # lane marks
    rgb[(yy > horizon + 20) & (np.abs(xx - width / 2) < 3) & ((yy // 15) % 2 == 0)] = (240, 240, 240)
    # a car and a pole
    rgb[int(height * 0.62):int(height * 0.80), int(width * 0.20):int(width * 0.38)] = (20, 20, 142)
    rgb[int(height * 0.76):int(height * 0.82), int(width * 0.21):int(width * 0.25)] = (15, 15, 15)
    rgb[int(height * 0.20):int(height * 0.70), int(width * 0.72):int(width * 0.735)] = (250, 170, 30)
    # a person
    rgb[int(height * 0.55):int(height * 0.75), int(width * 0.60):int(width * 0.625)] = (220, 20, 60)
    rgb += rng.normal(0.0, 12.0, rgb.shape)
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])  # BGR, as OpenCV reads it


# ---------------------------------------------------------------- inference
def _litert_interpreter(model: Path, threads: int, kernels: str = "xnnpack"):
    """The model on the chosen LiteRT kernels (edge_seg.backends.litert.KERNELS), no metadata needed."""
    from edge_seg.backends.litert import load_graph
    return load_graph(model, threads, kernels)


def _model_size(model: Path, input_shape) -> tuple[int, int]:
    """(width, height): from the sidecar metadata when present, else from the tensor."""
    try:
        from edge_seg.backends.metadata import read_meta, sidecar_path
        if sidecar_path(model).is_file():
            w, h = read_meta(model)["input_size"]
            return int(w), int(h)
    except ImportError:
        pass
    return int(input_shape[2]), int(input_shape[1])


def infer_litert(model: Path, frame_bgr, threads: int = 1, kernels: str = "xnnpack"):
    """(mask HxW uint8, raw output tensor) with the interpreter used directly and the shared
    preprocessing (edge_seg.preprocess)."""
    import numpy as np
    from edge_seg.preprocess import bgr_to_model_rgb, normalize, quantize_input
    interpreter = _litert_interpreter(model, threads, kernels)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    size = _model_size(model, inp["shape"])
    x = normalize(bgr_to_model_rgb(frame_bgr, size))[None]
    if inp["dtype"] in (np.int8, np.uint8):
        scale, zero_point = inp["quantization"]
        x = quantize_input(x, scale, zero_point, inp["dtype"])
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"], copy=False))
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"])[0].copy()
    # argmax of the quantised logits equals that of the dequantised ones (scale > 0)
    return np.argmax(raw, axis=-1).astype(np.uint8), raw


def infer_segmenter(model: Path, frame_bgr, threads: int = 1):
    """The same through edge_seg.segmenter.Segmenter, the runtime's own inference path
    (needs the model's sidecar .json)."""
    from edge_seg.segmenter import Segmenter
    seg = Segmenter(model, threads=threads)
    logits = seg.infer(seg.preprocess(frame_bgr))
    return seg.postprocess(logits), logits[0].copy()


def segmenter_available() -> bool:
    try:
        import edge_seg.segmenter as s
    except Exception:  # noqa: BLE001 - absent or not importable yet: use LiteRT directly
        return False
    return hasattr(s, "Segmenter")


# ---------------------------------------------------------------- host-only: test models
def make_models(outdir: Path, seed: int = 7) -> list[Path]:
    """Tiny fp32 and int8 .tflite models like the product's (MobileNetV2 alpha 0.35 encoder,
    U-Net decoder, 8 logits, 128x64), random init with a fixed seed. Needs TensorFlow."""
    from edge_seg.train.tf_env import use_legacy_keras
    use_legacy_keras()
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from edge_seg.backends.metadata import make_meta, write_meta
    from edge_seg.io.publish import atomic_write_bytes
    from edge_seg.preprocess import bgr_to_model_rgb, normalize

    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    w, h = 128, 64
    base = keras.applications.MobileNetV2(input_shape=(h, w, 3), alpha=0.35, weights=None,
                                          include_top=False)
    skips = [base.get_layer(n).output for n in
             ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add")]
    x = base.get_layer("block_16_project_BN").output
    for skip in reversed(skips):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
        x = keras.layers.Concatenate()([x, skip])
        x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    logits = keras.layers.Conv2D(8, 1)(x)
    model = keras.Model(base.input, logits)

    frames = [make_frame(seed=s) for s in range(1, 9)]

    def representative():
        for f in frames:
            yield [normalize(bgr_to_model_rgb(f, (w, h)))[None]]

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if variant == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        path = outdir / f"tiny-{variant}.tflite"
        atomic_write_bytes(path, conv.convert())
        write_meta(path, make_meta((w, h), variant, source="tools/arm64/arm64_mask.py make-models",
                                   seed=seed))
        written.append(path)
    return written


# ---------------------------------------------------------------- op-level check
OP_SHAPE = (32, 64, 16)  # H, W, C of the single-op models


def make_op_models(outdir: Path) -> list[Path]:
    """One int8 .tflite per op the product models use (Conv2D 1x1/3x3/stride 2, depthwise,
    ReLU6, Add, Concatenate, Multiply, bilinear/nearest UpSampling2D, average pooling), to
    find which kernel disagrees across architectures. Needs TensorFlow (host only)."""
    from edge_seg.train.tf_env import use_legacy_keras
    use_legacy_keras(log_level="3")
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    L = keras.layers
    h, w, c = OP_SHAPE
    ops = {
        "conv1x1": (lambda x: L.Conv2D(32, 1)(x), 1),
        "conv3x3": (lambda x: L.Conv2D(16, 3, padding="same")(x), 1),
        "conv3x3_s2": (lambda x: L.Conv2D(16, 3, strides=2, padding="same")(x), 1),
        "conv3x3_relu6": (lambda x: L.ReLU(6.0)(L.Conv2D(16, 3, padding="same")(x)), 1),
        "dw3x3": (lambda x: L.DepthwiseConv2D(3, padding="same")(x), 1),
        "relu6": (lambda x: L.ReLU(6.0)(x), 1),
        "add": (lambda a, b: L.Add()([a, b]), 2),
        "concat": (lambda a, b: L.Concatenate()([a, b]), 2),
        "mul": (lambda a, b: L.Multiply()([a, b]), 2),
        "upsample_bilinear": (lambda x: L.UpSampling2D(2, interpolation="bilinear")(x), 1),
        "upsample_nearest": (lambda x: L.UpSampling2D(2, interpolation="nearest")(x), 1),
        "avgpool": (lambda x: L.GlobalAveragePooling2D(keepdims=True)(x), 1),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (fn, n_in) in ops.items():
        keras.utils.set_random_seed(1)
        inputs = [keras.Input((h, w, c)) for _ in range(n_in)]
        model = keras.Model(inputs, fn(*inputs))
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(16):
                yield [rng.normal(0, 1, (1, h, w, c)).astype(np.float32) for _ in inputs]

        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        path = outdir / f"op-{name}.tflite"
        path.write_bytes(conv.convert())
        written.append(path)
    return written


def cmd_run_ops(args) -> int:
    """Run every op-*.tflite in --dir on seeded random int8 input; save the outputs."""
    import numpy as np
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(args.dir).glob("op-*.tflite")):
        interpreter = _litert_interpreter(path, args.threads, args.kernels)
        rng = np.random.default_rng(5)
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], rng.integers(-128, 128, d["shape"]).astype(d["dtype"]))
        interpreter.invoke()
        np.save(out / f"{path.stem}.npy",
                interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    print(f"ops ({args.kernels}, {platform.machine()}) -> {out}")
    return 0


def cmd_compare_ops(args) -> int:
    """Per op: max abs difference (int8 steps) and count of differing values, each folder
    against the first (the reference)."""
    import numpy as np
    ref_dir, others = Path(args.dirs[0]), [Path(d) for d in args.dirs[1:]]
    worst = 0
    print(f"int8 steps from {ref_dir.name}: max abs diff, differing values")
    print("op".ljust(20) + "".join(f" | {d.name}" for d in others))
    for ref_file in sorted(ref_dir.glob("op-*.npy")):
        ref = np.load(ref_file).astype(np.int64)
        row = ref_file.stem[3:].ljust(20)
        for d in others:
            diff = np.abs(np.load(d / ref_file.name).astype(np.int64) - ref)
            worst = max(worst, int(diff.max()))
            row += f" | {int(diff.max()):3d} {int((diff > 0).sum()):6d}/{diff.size}"
        print(row)
    return 0 if worst <= args.tolerance else 1


# ---------------------------------------------------------------- commands
def _read_png(path: Path, flags):
    import cv2
    image = cv2.imread(str(path), flags)
    if image is None:
        sys.exit(f"error: cannot read {path}")
    return image


def cmd_frame(args) -> int:
    import cv2
    frame = make_frame(args.width, args.height, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), frame):
        sys.exit(f"error: cannot write {args.out}")
    print(f"frame {frame.shape[1]}x{frame.shape[0]} -> {args.out}")
    return 0


def cmd_mask(args) -> int:
    import cv2
    import numpy as np
    frame = _read_png(Path(args.frame), cv2.IMREAD_COLOR)
    engine = args.engine
    if args.kernels != "xnnpack":
        engine = "litert"  # the Segmenter always runs the default (XNNPACK) kernels
    if engine == "auto":
        engine = "segmenter" if segmenter_available() else "litert"
    if engine == "segmenter":
        mask, raw = infer_segmenter(Path(args.model), frame, args.threads)
    else:
        mask, raw = infer_litert(Path(args.model), frame, args.threads, args.kernels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), mask):
        sys.exit(f"error: cannot write {args.out}")
    if args.raw and raw is not None:
        np.save(args.raw, raw)
    import numpy
    counts = numpy.bincount(mask.ravel(), minlength=8).tolist()
    info = {"machine": platform.machine(), "python": platform.python_version(),
            "numpy": numpy.__version__, "opencv": cv2.__version__, "engine": engine,
            "kernels": args.kernels,
            "litert": _version("ai-edge-litert"), "model": Path(args.model).name,
            "mask_shape": list(mask.shape), "class_pixels": counts,
            "tensorflow_importable": _importable("tensorflow")}
    print(json.dumps(info))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def cmd_compare(args) -> int:
    import cv2
    import numpy as np
    a = _read_png(Path(args.a), cv2.IMREAD_UNCHANGED)
    b = _read_png(Path(args.b), cv2.IMREAD_UNCHANGED)
    if a.shape != b.shape:
        print(f"masks differ in shape: {a.shape} vs {b.shape}")
        return 1
    diff = int((a != b).sum())
    text = f"{args.label}: {diff} of {a.size} mask pixels differ ({100.0 * diff / a.size:.3f}%)"
    if args.raw:
        ra, rb = (np.load(p) for p in args.raw)
        d = np.abs(ra.astype(np.float64) - rb.astype(np.float64))
        text += (f"; raw output ({ra.dtype}) max abs diff {d.max():g}, "
                 f"{int((d > 0).sum())} of {d.size} values differ")
    print(text)
    return 0 if diff == 0 else 1


def cmd_make_models(args) -> int:
    for path in make_models(Path(args.outdir), args.seed):
        print(path)
    return 0


def cmd_make_op_models(args) -> int:
    for path in make_op_models(Path(args.outdir)):
        print(path)
    return 0


def main(argv=None) -> int:
    from edge_seg.backends.litert import KERNELS  # --kernels: which LiteRT kernels run a model
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frame", help="write the fixed test frame (PNG)")
    f.add_argument("out")
    f.add_argument("--width", type=int, default=FRAME_SIZE[0])
    f.add_argument("--height", type=int, default=FRAME_SIZE[1])
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_frame)
    m = sub.add_parser("mask", help="model-resolution category mask of a frame (PNG)")
    m.add_argument("--model", required=True)
    m.add_argument("--frame", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--raw", help="also save the raw output tensor (.npy)")
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--engine", choices=("auto", "segmenter", "litert"), default="auto",
                   help="segmenter: edge_seg.segmenter.Segmenter; litert: the interpreter used "
                        "directly + edge_seg.preprocess; auto (default): the Segmenter when it exists")
    m.add_argument("--kernels", choices=tuple(KERNELS), default="xnnpack",
                   help="xnnpack (default, what the runtime runs), builtin (LiteRT's own "
                        "optimised kernels, XNNPACK off) or reference (portable reference "
                        "kernels: the ground truth for int8 arithmetic); not xnnpack -> litert engine")
    m.set_defaults(func=cmd_mask)
    c = sub.add_parser("compare", help="count differing pixels; exit 1 when any differ")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--raw", nargs=2, metavar=("A.npy", "B.npy"))
    c.add_argument("--label", default="mask")
    c.set_defaults(func=cmd_compare)
    mm = sub.add_parser("make-models", help="tiny fp32 + int8 test models (needs TensorFlow)")
    mm.add_argument("outdir")
    mm.add_argument("--seed", type=int, default=7)
    mm.set_defaults(func=cmd_make_models)
    mo = sub.add_parser("make-op-models", help="single-op int8 models (needs TensorFlow)")
    mo.add_argument("outdir")
    mo.set_defaults(func=cmd_make_op_models)
    ro = sub.add_parser("run-ops", help="run the single-op models, save their outputs")
    ro.add_argument("--dir", required=True)
    ro.add_argument("--out", required=True)
    ro.add_argument("--kernels", choices=tuple(KERNELS), default="xnnpack")
    ro.add_argument("--threads", type=int, default=1)
    ro.set_defaults(func=cmd_run_ops)
    co = sub.add_parser("compare-ops", help="per-op differences against the first folder")
    co.add_argument("dirs", nargs="+")
    co.add_argument("--tolerance", type=int, default=1, help="int8 steps allowed (default 1)")
    co.set_defaults(func=cmd_compare_ops)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

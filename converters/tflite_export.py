"""TFLite export: fp32, fp16, dynamic-range and full-integer int8 (PTQ and QAT).

The one exporter: ``VARIANTS`` (with ``QUANTIZATION_MODE``) is the table of variants and
``export`` the conversion loop over input sizes (converters.sizes) and variants, ONNX
included (converters.onnx_export). Every variant is converted in memory with
``tf.lite.TFLiteConverter.from_keras_model``, then written atomically with its metadata
embedded (edge_seg.backends.embedded) and as a sidecar .json (edge_seg.backends.metadata): an interrupted
export never leaves a partial .tflite. The int8 representative dataset goes through the
training preprocessing (``edge_seg.train.datasets.read_pair`` + ``edge_seg.preprocess.normalize``).
All inputs (model, variants, calibration set) are checked before any conversion starts.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_seg.errors import UserError
from edge_seg.backends.metadata import file_sha256, make_meta, publish_model
from edge_seg.preprocess import normalize

from .keras_model import load_keras_model, model_input_size
from .sizes import rebuild_at_size, size_text, with_size

# variant -> how its weights and activations are stored; the order is the conversion order
QUANTIZATION_MODE = {"fp32": "none", "fp16": "float16 weights", "dynamic": "dynamic-range int8 weights",
                     "int8": "full-integer int8 (post-training)",
                     "qat-int8": "full-integer int8 (quantisation-aware training)"}
VARIANTS = tuple(QUANTIZATION_MODE)
NEEDS_CALIBRATION = ("int8", "qat-int8")
IO_TYPES = ("uint8", "int8", "float32")
DEFAULT_CALIBRATION_FRAMES = 200


# ------------------------------------------------------------------ model

def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "edge-seg"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# ------------------------------------------------------------------ calibration

@dataclass
class Calibration:
    """A checked calibration set: the samples and where they came from."""
    samples: list
    root: Path
    source: str                      # manifest path or dataset root
    manifest: dict = field(default_factory=dict)
    sha256: str | None = None        # of the manifest file (or of the in-memory selection)

    def describe(self) -> dict:
        m = self.manifest
        return {"source": self.source, "manifest_sha256": self.sha256, "frames": len(self.samples),
                "strategy": m.get("strategy"), "seed": m.get("seed"),
                "dataset_fingerprint": m.get("dataset", {}).get("fingerprint")}


def resolve_calibration(spec, input_size, root_override=None,
                        n: int = DEFAULT_CALIBRATION_FRAMES) -> Calibration:
    """``spec`` is a manifest (.json) or a dataset root (stratified selection of ``n`` train
    frames made on the spot). Checked before any work: exists, non-empty, same input size,
    files present, dataset unchanged, first frame readable."""
    from edge_seg.calibration.select import load_manifest_samples, select
    from edge_seg.train.datasets import read_pair

    path = Path(spec)
    if path.is_file():
        samples, root, manifest = load_manifest_samples(path, input_size, root_override)
        cal = Calibration(samples, root, str(path), manifest, file_sha256(path))
    elif path.is_dir():
        manifest = select(path, n, "stratified", 0, input_size)
        from edge_seg.train.datasets import load_split
        by_image = {s.image.resolve(): s for s in load_split(path, manifest["dataset"]["format"], "train")}
        samples = [by_image[(path / f["image"]).resolve()] for f in manifest["files"]]
        digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
        cal = Calibration(samples, path.resolve(), str(path), manifest, digest)
    else:
        raise UserError(f"--calibration {spec}: no such manifest or dataset folder")
    if not cal.samples:
        raise UserError(f"--calibration {spec}: the calibration set is empty")
    read_pair(cal.samples[0], input_size)  # unreadable data fails here, not mid-conversion
    return cal


def representative_dataset(samples, size):
    """Generator factory for TFLiteConverter.representative_dataset: one normalised
    (1, H, W, 3) float32 frame per sample, exactly as training sees it."""
    from edge_seg.train.datasets import read_pair

    def gen():
        for s in samples:
            image, _ = read_pair(s, size)
            yield [normalize(image)[None]]
    return gen


# ------------------------------------------------------------------ conversion

_KNOWN_LAYERS = {"InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization",
                 "ReLU", "Activation", "Add", "Concatenate", "UpSampling2D", "MaxPooling2D",
                 "AveragePooling2D", "GlobalAveragePooling2D", "Multiply", "ZeroPadding2D",
                 "Dense", "Reshape", "Dropout", "Conv2DTranspose", "Softmax"}


def _suspect_layers(model, message: str) -> list[str]:
    names = {layer.name: layer for layer in model.layers}
    hits = [n for n in names if re.search(rf"(?<![\w]){re.escape(n)}/", message)]
    hits = [n for n in hits if type(names[n]).__name__ not in ("InputLayer",)]
    if not hits:
        hits = [n for n, layer in names.items() if type(layer).__name__ not in _KNOWN_LAYERS]
    return [f"'{n}' ({type(names[n]).__name__})" for n in hits]


def _converter_error(model, variant: str, error: Exception) -> UserError:
    message = str(error)
    ops = re.findall(r"'tfl?\.(\w+)' op", message)
    select = re.search(r"TF Select ops: ([^\n]+)", message)
    if select:
        ops += [o.strip() for o in select.group(1).split(",")]
    ops = sorted(set(ops))
    layers = _suspect_layers(model, message)
    where = f" in layer {', '.join(layers)}" if layers else ""
    what = f"op {', '.join(ops)}" if ops else "an op"
    if variant in ("int8", "qat-int8"):
        fix = ("replace that layer with int8-capable layers (Conv2D, DepthwiseConv2D, ReLU/ReLU6, "
               "Add, Concatenate, UpSampling2D), or export --fp16 / --dynamic, which keep it in float")
    else:
        fix = "replace that layer with TFLite builtin ops (no Lambda with arbitrary TensorFlow ops)"
    first = message.strip().splitlines()[0][:160] if message.strip() else type(error).__name__
    return UserError(f"{variant} conversion failed: {what}{where} has no TFLite "
                     f"{'int8 ' if variant in ('int8', 'qat-int8') else ''}kernel; fix: {fix} ({first})")


def weight_granularity(variant: str, per_channel: bool) -> str:
    """How an int8 variant's weights are quantised. QAT models carry tfmot's per-channel
    fake-quant ranges whatever is asked (see converters/qat.py)."""
    return "per-channel" if per_channel or variant == "qat-int8" else "per-tensor"


def make_converter(model, variant: str, rep_data=None, io: str = "uint8", per_channel: bool = False):
    """``per_channel`` False (the default) quantises each int8 weight tensor with one
    scale: the per-channel scales and zero points of this U-Net are 26,736 entries,
    0.32 MB of a 1.53 MB file (34% of fp32 instead of 27%), for 0.07 point of mIoU."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "qat-int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if rep_data is not None:
            converter.representative_dataset = rep_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
        converter._experimental_disable_per_channel = weight_granularity(variant, per_channel) == "per-tensor"
    elif variant != "fp32":
        raise UserError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return converter


def convert(model, variant: str, rep_data=None, io: str = "uint8", per_channel: bool = False) -> bytes:
    """One variant as .tflite bytes; converter failures become a UserError naming the layer."""
    if variant == "int8" and rep_data is None:
        raise UserError("--int8 needs a calibration set: pass --calibration MANIFEST|ROOT")
    converter = make_converter(model, variant, rep_data, io, per_channel)
    try:
        return converter.convert()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- ConverterError and friends
        raise _converter_error(model, variant, e) from None


def io_details(content: bytes) -> dict:
    """dtype, shape and quantisation (scale, zero point) of the model's input and output."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content)

    def describe(d):
        scale, zero = d["quantization"]
        return {"name": d["name"], "dtype": d["dtype"].__name__, "shape": [int(v) for v in d["shape"]],
                "scale": float(scale), "zero_point": int(zero), "quantized": bool(scale)}
    ins, outs = interp.get_input_details(), interp.get_output_details()
    return {"input": describe(ins[0]), "output": describe(outs[0])}


def variant_meta(variant, input_size, content, source_path, source_sha, calibration=None,
                 io=None, gpu=None, qat=None, per_channel: bool = False) -> dict:
    details = io_details(content)
    extra = {
        "input": details["input"], "output": details["output"], "output_kind": "logits",
        "quantization": {"mode": QUANTIZATION_MODE[variant],
                         "io": io if variant in ("int8", "qat-int8") else "float32",
                         **({"weights": weight_granularity(variant, per_channel)}
                            if variant in ("int8", "qat-int8") else {})},
        "source_model": {"file": Path(source_path).name, "sha256": source_sha},
        "calibration": calibration.describe() if calibration is not None else None,
        "converter": versions(),
        "gpu": gpu,
    }
    if qat is not None:
        extra["qat"] = qat
    return make_meta(input_size, variant, **extra)


def write_variant(path, content: bytes, meta: dict) -> Path:
    """The model with its metadata embedded, then its sidecar, each atomically."""
    publish_model(path, content, meta)
    return Path(path)


def export(model_path, variants, out_dir=None, calibration=None, io: str = "uint8",
           calibration_root=None, qat_epochs: int = 1, qat_steps=None, qat_lr: float = 1e-5,
           qat_batch: int = 4, per_channel: bool = False, log=print, *, sizes=None,
           onnx: bool = False, nchw: bool = False) -> list[Path]:
    """Convert ``model_path`` to each of ``variants`` (and ONNX with ``onnx``) at each of
    ``sizes`` (default: its own size; see converters.sizes for the file names). Everything
    is checked before any conversion. Returns the written model paths."""
    from .gpu_check import check_gpu

    variants = [v for v in VARIANTS if v in set(variants)]
    if not variants and not onnx:
        raise UserError("nothing to convert: pass one or more of --fp32 --fp16 --int8 --dynamic --qat --onnx")
    if io not in IO_TYPES:
        raise UserError(f"--io {io}: choose one of {', '.join(IO_TYPES)}")
    needs_data = [v for v in variants if v in NEEDS_CALIBRATION]
    if needs_data and not calibration:
        raise UserError(f"--{needs_data[0].replace('qat-int8', 'qat')} needs data: pass --calibration MANIFEST|ROOT")
    if onnx:
        from .onnx_export import _require_tf2onnx
        _require_tf2onnx()
    model_path = Path(model_path)
    base = load_keras_model(model_path)
    native = model_input_size(base)
    sizes = list(sizes or [native])
    named = len(sizes) > 1 or sizes != [native]
    # the calibration set is a list of frames, chosen (and checked) for the model's own size;
    # each size reads the same frames at its own resolution
    cal = resolve_calibration(calibration, native, calibration_root) if needs_data else None
    if "qat-int8" in variants:
        from .qat import check_quantizable
        check_quantizable(base)
    models = {size: rebuild_at_size(base, size) for size in sizes}  # all sizes checked first
    source_sha = file_sha256(model_path)
    out_dir = Path(out_dir or model_path.parent)
    written = []
    for size, model in models.items():
        rep = representative_dataset(cal.samples, size) if cal is not None else None
        for variant in variants:
            log(f"converting {model_path.name} -> {variant} at {size_text(size)}")
            qat_info = None
            if variant == "qat-int8":
                from .qat import qat_finetune
                q_model, qat_info = qat_finetune(model, cal, size, epochs=qat_epochs, steps=qat_steps,
                                                 lr=qat_lr, batch=qat_batch, log=log)
                content = convert(q_model, variant, rep, io, per_channel)
            else:
                content = convert(model, variant, rep, io, per_channel)
            gpu = check_gpu(content)
            if variant in NEEDS_CALIBRATION and "DEQUANTIZE" in gpu["ops"]:
                log(f"  warning: the {variant} model keeps some ops in float (DEQUANTIZE inside the "
                    f"graph); ops: {', '.join(gpu['ops'])}")
            quantized = variant in NEEDS_CALIBRATION
            meta = variant_meta(variant, size, content, model_path, source_sha, cal if quantized else None,
                                io if quantized else None, gpu, qat_info, per_channel)
            meta["native_input_size"] = list(native)
            path = out_dir / f"{with_size(model_path.stem, size, named)}-{variant}.tflite"
            write_variant(path, content, meta)
            log(f"  {path} ({len(content) / 1e6:.2f} MB, GPU delegate: {gpu['verdict']})")
            written.append(path)
        if onnx:
            from .onnx_export import export_onnx
            path = out_dir / f"{with_size(model_path.stem, size, named)}.onnx"
            result = export_onnx(model, path, nchw=nchw, log=log, source=str(model_path),
                                 source_sha256=source_sha,
                                 source_model={"file": model_path.name, "sha256": source_sha},
                                 native_input_size=list(native))
            log(f"  {result.describe()}")
            for note in result.notes:
                log(f"  warning: {note}")
            written.append(path)
    return written

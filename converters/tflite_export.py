"""TFLite export (fp32, fp16, dynamic-range and full-integer int8, PTQ and QAT) and the
conversion loop over every format.

The formats are the rows of ``edge_seg.model_formats``; ``export`` converts a Keras model to the
selected rows at each input size (converters.sizes), each through the function its row names
(this module's ``export_tflite`` and ``export_qat_int8``, converters.onnx_export's
``export_onnx_fp32``). Every TFLite variant is converted in memory with
``tf.lite.TFLiteConverter.from_keras_model``, its settings following the row's weights and
activations, then written atomically with its metadata embedded (edge_seg.backends.embedded)
and as a sidecar .json (edge_seg.backends.metadata): an interrupted export never leaves a
partial .tflite. The int8 representative dataset goes through the training preprocessing
(``edge_seg.train.datasets.read_pair`` + ``edge_seg.preprocess.normalize``). All inputs
(model, formats, calibration set) are checked before any conversion starts.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge_seg import model_formats
from edge_seg.errors import UserError
from edge_seg.backends.metadata import file_sha256, make_meta, publish_model
from edge_seg.preprocess import normalize

from .keras_model import load_keras_model, logits_model, model_input_size
from .sizes import rebuild_at_size, size_text, with_size

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


def _converter_error(model, fmt: model_formats.Format, error: Exception) -> UserError:
    message = str(error)
    ops = re.findall(r"'tfl?\.(\w+)' op", message)
    select = re.search(r"TF Select ops: ([^\n]+)", message)
    if select:
        ops += [o.strip() for o in select.group(1).split(",")]
    ops = sorted(set(ops))
    layers = _suspect_layers(model, message)
    where = f" in layer {', '.join(layers)}" if layers else ""
    what = f"op {', '.join(ops)}" if ops else "an op"
    if fmt.integer_activations:
        in_float = " / ".join(f.flag for f in model_formats.FORMATS if f.kind == "tflite"
                              and not f.integer_activations and not f.full_precision)
        fix = (f"replace that layer with {fmt.activations}-capable layers (Conv2D, DepthwiseConv2D, "
               f"ReLU/ReLU6, Add, Concatenate, UpSampling2D), or export {in_float}, which keep it in float")
    else:
        fix = "replace that layer with TFLite builtin ops (no Lambda with arbitrary TensorFlow ops)"
    first = message.strip().splitlines()[0][:160] if message.strip() else type(error).__name__
    kernel = f"{fmt.activations} kernel" if fmt.integer_activations else "kernel"
    return UserError(f"{fmt.name} conversion failed: {what}{where} has no TFLite {kernel}; "
                     f"fix: {fix} ({first})")


def weight_granularity(variant: str, per_channel: bool) -> str:
    """How an int8 variant's weights are quantised: its row's scheme, or per channel when
    asked. QAT models carry tfmot's per-channel fake-quant ranges whatever is asked (see
    converters/qat.py)."""
    per_channel = per_channel or model_formats.get(variant).weights.endswith("per channel")
    return "per-channel" if per_channel else "per-tensor"


def make_converter(model, variant: str, rep_data=None, io: str = model_formats.INTEGER_IO[0],
                   per_channel: bool = False):
    """The converter for a TFLite row, set from its weights and activations columns.

    ``per_channel`` False (the default) quantises each int8 weight tensor with one
    scale: the per-channel scales and zero points of this U-Net are 26,736 entries,
    0.32 MB of a 1.53 MB file (34% of fp32 instead of 27%), for 0.07 point of mIoU."""
    import tensorflow as tf

    fmt = model_formats.get(variant)
    if fmt.kind != "tflite" or fmt.activations not in (model_formats.FLOAT, "int8") \
            or fmt.weights.split()[0] not in (model_formats.FLOAT, "float16", "int8"):
        raise UserError(f"{fmt.name}: no TFLite converter settings for {fmt.weights} weights and "
                        f"{fmt.activations} activations; its export function makes its own converter")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt.weights != model_formats.FLOAT:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt.weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if fmt.integer_activations:
        if rep_data is not None:
            converter.representative_dataset = rep_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
        converter._experimental_disable_per_channel = weight_granularity(variant, per_channel) == "per-tensor"
    return converter


def convert(model, variant: str, rep_data=None, io: str = model_formats.INTEGER_IO[0],
            per_channel: bool = False) -> bytes:
    """One TFLite row as .tflite bytes; converter failures become a UserError naming the layer."""
    fmt = model_formats.get(variant)
    if fmt.calibration and rep_data is None:
        raise UserError(f"{fmt.flag} needs a calibration set: pass --calibration MANIFEST|ROOT")
    return run_converter(make_converter(model, variant, rep_data, io, per_channel), model, fmt)


def run_converter(converter, model, fmt: model_formats.Format) -> bytes:
    """``converter.convert()``, its failures a UserError naming the layer at fault."""
    try:
        return converter.convert()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- ConverterError and friends
        raise _converter_error(model, fmt, e) from None


def io_details(content: bytes) -> dict:
    """dtype, shape and quantisation (scale, zero point) of the model's input and output."""
    from edge_seg.backends.litert import load_graph

    interp = load_graph(content)

    def describe(d):
        scale, zero = d["quantization"]
        return {"name": d["name"], "dtype": d["dtype"].__name__, "shape": [int(v) for v in d["shape"]],
                "scale": float(scale), "zero_point": int(zero), "quantized": bool(scale)}
    ins, outs = interp.get_input_details(), interp.get_output_details()
    return {"input": describe(ins[0]), "output": describe(outs[0])}


@dataclass
class ExportJob:
    """One conversion run as every export function sees it: the source model, the
    calibration set, and the options that change some formats only (the rows' ``options``)."""
    source: Path
    source_sha: str
    native_size: tuple[int, int]
    calibration: Calibration | None = None
    io: str = model_formats.INTEGER_IO[0]
    per_channel: bool = False
    qat: dict = field(default_factory=dict)  # qat_finetune's epochs, steps, lr, batch
    nchw: bool = False
    full_res_logits: bool = False  # keep the final upsampling of the logits (keras_model.logits_model)
    log: Callable[[str], None] = print

    @property
    def source_model(self) -> dict:
        return {"file": self.source.name, "sha256": self.source_sha}


def variant_meta(job: ExportJob, fmt: model_formats.Format, input_size, content: bytes, gpu=None,
                 qat=None) -> dict:
    details = io_details(content)
    output_hw = details["output"]["shape"][1:3]
    quantization = {"mode": fmt.mode, "io": job.io if len(fmt.io) > 1 else fmt.io[0]}
    if fmt.integer_activations:
        quantization["weights"] = weight_granularity(fmt.name, job.per_channel)
    extra = {
        "input": details["input"], "output": details["output"], "output_kind": "logits",
        # the output's stride (input height over output height): 2 when the final upsampling
        # of the logits is left to the runtime's NEAREST resize of the mask
        "output_stride": input_size[1] // output_hw[0] if output_hw[0] else None,
        "quantization": quantization,
        "source_model": job.source_model,
        "calibration": job.calibration.describe() if fmt.calibration else None,
        "converter": versions(),
        "gpu": gpu,
    }
    if qat is not None:
        extra["qat"] = qat
    extra["native_input_size"] = list(job.native_size)
    return make_meta(input_size, fmt.name, **extra)


def publish_tflite(job: ExportJob, fmt: model_formats.Format, input_size, path: Path, content: bytes,
                   qat=None) -> None:
    """Write a converted TFLite row: GPU-delegate check, metadata embedded and as sidecar."""
    from .gpu_check import check_gpu

    gpu = check_gpu(content)
    if fmt.integer_activations and "DEQUANTIZE" in gpu["ops"]:
        job.log(f"  warning: the {fmt.name} model keeps some ops in float (DEQUANTIZE inside the "
                f"graph); ops: {', '.join(gpu['ops'])}")
    publish_model(path, content, variant_meta(job, fmt, input_size, content, gpu, qat))
    job.log(f"  {path} ({len(content) / 1e6:.2f} MB, GPU delegate: {gpu['verdict']})")


def export_tflite(job: ExportJob, fmt: model_formats.Format, model, input_size, path: Path, qat=None):
    """The TFLite rows whose converter settings follow from their columns (make_converter),
    their logits at stride 2 unless ``job.full_res_logits`` (keras_model.logits_model)."""
    model, _ = logits_model(model, job.full_res_logits)
    rep = representative_dataset(job.calibration.samples, input_size) if fmt.calibration else None
    content = convert(model, fmt.name, rep, job.io, job.per_channel)
    publish_tflite(job, fmt, input_size, path, content, qat)


def export_qat_int8(job: ExportJob, fmt: model_formats.Format, model, input_size, path: Path):
    """Fine-tune with fake quantisation on the calibration set's dataset, then convert."""
    from .qat import qat_finetune

    q_model, info = qat_finetune(model, job.calibration, input_size, log=job.log, **job.qat)
    export_tflite(job, fmt, q_model, input_size, path, qat=info)


def converter_function(spec: str) -> Callable:
    """The function a formats row names: "module:function" in edge_seg.converters."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def choose_formats(names) -> list[model_formats.Format]:
    """The rows named, in conversion order; UserError for none or an unknown name."""
    chosen = model_formats.select(names)
    if not chosen:
        raise UserError(f"nothing to convert: pass one or more of {model_formats.flags()}")
    return chosen


def export(model_path, variants, out_dir=None, calibration=None, io: str = model_formats.INTEGER_IO[0],
           calibration_root=None, qat_epochs: int = 1, qat_steps=None, qat_lr: float = 1e-5,
           qat_batch: int = 4, per_channel: bool = False, log=print, *, sizes=None,
           nchw: bool = False, full_res_logits: bool = False) -> list[Path]:
    """Convert ``model_path`` to each format named in ``variants`` (rows of edge_seg.model_formats)
    at each of ``sizes`` (default: its own size; see converters.sizes for the file names).
    Everything is checked before any conversion. Returns the written model paths."""
    chosen = choose_formats(variants)
    if io not in model_formats.io_choices():
        raise UserError(f"--io {io}: choose one of {', '.join(model_formats.io_choices())}")
    needs_data = [fmt for fmt in chosen if fmt.calibration]
    if needs_data and not calibration:
        raise UserError(f"{needs_data[0].flag} needs data: pass --calibration MANIFEST|ROOT")
    model_path = Path(model_path)
    base = load_keras_model(model_path)
    native = model_input_size(base)
    sizes = list(sizes or [native])
    named = len(sizes) > 1 or sizes != [native]
    # the calibration set is a list of frames, chosen (and checked) for the model's own size;
    # each size reads the same frames at its own resolution
    cal = resolve_calibration(calibration, native, calibration_root) if needs_data else None
    for fmt in chosen:
        if fmt.check:
            converter_function(fmt.check)(base)
    models = {size: rebuild_at_size(base, size) for size in sizes}  # all sizes checked first
    job = ExportJob(model_path, file_sha256(model_path), native, cal, io, per_channel,
                    {"epochs": qat_epochs, "steps": qat_steps, "lr": qat_lr, "batch": qat_batch},
                    nchw, full_res_logits, log)
    out_dir = Path(out_dir or model_path.parent)
    written = []
    for size, model in models.items():
        stem = with_size(model_path.stem, size, named)
        for fmt in chosen:
            log(f"converting {model_path.name} -> {fmt.name} at {size_text(size)}")
            path = out_dir / fmt.file_name(stem)
            converter_function(fmt.exporter)(job, fmt, model, size, path)
            written.append(path)
    return written

"""ONNX export (the Jetson path): a tf_keras segmentation model -> ``model.onnx`` + sidecar.

    from edge_seg.converters.onnx_export import export_onnx
    report = export_onnx("runs/x/model.keras", "models/model.onnx")   # or a tf_keras Model

Conversion goes through tf2onnx (``tf2onnx.convert.from_keras``, which traces the Keras
model into a tf.function and converts the graph), opset 17 by default. The file is written
atomically (never a half file) with the same metadata as the TFLite variants (edge_seg.backends.metadata,
variant ``onnx-fp32``), plus the tensor names and layout the ONNX Runtime backend
(edge_seg.backends.onnxrt) reads: embedded as the ``edge_seg`` entry of ``metadata_props`` and
copied to the sidecar .json.

The graph keeps the Keras layout, NHWC in and out, by default: the runtime's preprocessing
feeds the ONNX model exactly what it feeds the TFLite ones. ``nchw=True`` asks tf2onnx to
make the input and output NCHW instead (tf2onnx then folds the layout transposes), which
TensorRT prefers; the backend transposes for either layout, as the metadata says.

With ``verify=True`` (the default) the exported file is run once through ONNX Runtime on
seeded random input and compared with the Keras model; the max abs difference is returned
and recorded in the metadata. Checked here with TensorFlow 2.21, tf-keras 2.21, tf2onnx 1.17,
onnx 1.23, protobuf 7.36, onnxruntime 1.32 (see tests/test_onnx.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_seg.errors import UserError
from edge_seg.backends.metadata import file_sha256, make_meta, publish_model

from .keras_model import is_keras_model, load_keras_model

VARIANT = "onnx-fp32"
DEFAULT_OPSET = 17
INPUT_NAME = "input"
VERIFY_TOLERANCE = 1e-4  # max abs diff of logits, ONNX Runtime vs Keras, fp32 both


@dataclass
class OnnxExport:
    path: Path
    meta_path: Path
    opset: int
    input_size: tuple[int, int]
    layout: str
    max_abs_diff: float | None = None  # ONNX Runtime vs Keras on random input, when verified
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.path} (ONNX opset {self.opset}, {self.layout}, " \
               f"{self.input_size[0]}x{self.input_size[1]})"
        if self.max_abs_diff is not None:
            text += f", max |ONNX Runtime - Keras| = {self.max_abs_diff:.2g}"
        return text


def require_tf2onnx(model=None):
    """tf2onnx, or a UserError saying how to install it; ``model`` is ignored (this is the ONNX
    row's check in edge_seg.model_formats, called with the Keras model before any conversion)."""
    try:
        import tf2onnx  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as e:
        raise UserError(f"ONNX export needs tf2onnx and onnx ({e}); "
                        "pip install 'edge-seg[onnx]'") from None
    return tf2onnx


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _model_input_size(model, input_size) -> tuple[int, int]:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"ONNX export expects one input and one output, the model has "
                        f"{len(model.inputs)} and {len(model.outputs)}")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise UserError(f"model input shape {shape} is not (batch, H, W, 3)")
    h, w = shape[1], shape[2]
    if input_size is not None:
        iw, ih = (int(v) for v in input_size)
        if (h is not None and h != ih) or (w is not None and w != iw):
            raise UserError(f"input_size {iw}x{ih} differs from the model's {w}x{h}; rebuild "
                            "the model at that size first (edge-seg convert --sizes)")
        return iw, ih
    if h is None or w is None:
        raise UserError("the model's input size is dynamic: pass input_size=(W, H)")
    return int(w), int(h)


def export_onnx(model_or_path, out_path, opset: int = DEFAULT_OPSET, *, input_size=None,
                nchw: bool = False, verify: bool = True, log=None, **meta_extra) -> OnnxExport:
    """Convert a tf_keras functional model (or a saved one) to ONNX at ``out_path``.

    Writes ``out_path`` and its sidecar ``.json`` atomically. ``meta_extra`` goes into the
    metadata (e.g. ``source``, ``arch``). UserError when tf2onnx is missing or cannot
    convert the model (the message carries tf2onnx's own error).
    """
    tf2onnx = require_tf2onnx()
    log = log or (lambda message: None)
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise UserError(f"{out_path}: an ONNX model's file name must end in .onnx")
    model = load_keras_model(model_or_path)
    source = None if is_keras_model(model_or_path) else Path(model_or_path)
    w, h = _model_input_size(model, input_size)

    import tensorflow as tf
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name=INPUT_NAME),)
    # tf2onnx names the ONNX output after model.output_names (the last layer's name);
    # outputs_as_nchw must use that name (the KerasTensor's own name may be 'Placeholder:0')
    output_name = (list(getattr(model, "output_names", None) or [])
                   or [model.outputs[0].name.split(":")[0].split("/")[0]])[0]
    log(f"tf2onnx {tf2onnx.__version__}: converting ({w}x{h}, opset {opset}, "
        f"{'NCHW' if nchw else 'NHWC'})")
    try:
        model_proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=spec, opset=opset,
            inputs_as_nchw=[INPUT_NAME] if nchw else None,
            outputs_as_nchw=[output_name] if nchw else None)
    except Exception as e:  # noqa: BLE001 - tf2onnx raises anything; say which versions failed
        raise UserError(f"tf2onnx {tf2onnx.__version__} could not convert the model with "
                        f"TensorFlow {tf.__version__}: {type(e).__name__}: {_first_line(e)}") from e
    graph_inputs = [i.name for i in model_proto.graph.input]
    graph_outputs = [o.name for o in model_proto.graph.output]
    if len(graph_inputs) != 1 or len(graph_outputs) != 1:
        raise UserError(f"tf2onnx produced {len(graph_inputs)} inputs and {len(graph_outputs)} "
                        "outputs; expected one of each")
    layout = "NCHW" if nchw else "NHWC"
    if nchw and not _output_channels_first(model_proto, graph_outputs[0],
                                           int(model.outputs[0].shape[-1])):
        raise UserError("tf2onnx did not make the output NCHW; export without nchw")
    data = model_proto.SerializeToString()

    result = OnnxExport(out_path, out_path.with_suffix(".json"), opset, (w, h), layout)
    if verify:
        result.max_abs_diff = verify_onnx(model, data, (w, h), layout)
        if result.max_abs_diff is None:
            result.notes.append("not verified: onnxruntime is not installed")
        elif result.max_abs_diff > VERIFY_TOLERANCE:
            result.notes.append(f"ONNX Runtime differs from Keras by up to {result.max_abs_diff:.3g}")
    extra = {
        "quantization": "none",
        "onnx": {"opset": opset, "input_name": graph_inputs[0], "output_name": graph_outputs[0],
                 "layout": layout, "tf2onnx": tf2onnx.__version__, "tensorflow": tf.__version__,
                 "verified_max_abs_diff": result.max_abs_diff},
    }
    if source is not None:
        extra["source"] = str(source)
        if source.is_file():
            extra["source_sha256"] = file_sha256(source)
    extra.update(meta_extra)
    publish_model(out_path, data, make_meta((w, h), VARIANT, **extra))
    return result


def export_onnx_fp32(job, fmt, model, input_size, path: Path) -> None:
    """The ONNX row of edge_seg.model_formats: ``job`` is the converter's ExportJob
    (edge_seg.converters.tflite_export), ``model`` already at ``input_size``."""
    result = export_onnx(model, path, nchw=job.nchw, log=job.log, source=str(job.source),
                         source_sha256=job.source_sha, source_model=job.source_model,
                         native_input_size=list(job.native_size))
    job.log(f"  {result.describe()}")
    for note in result.notes:
        job.log(f"  warning: {note}")


def _output_channels_first(model_proto, name: str, channels: int) -> bool:
    """Whether the ONNX output ``name`` is (N, C, H, W) with C = ``channels``."""
    for out in model_proto.graph.output:
        if out.name == name:
            dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
            return len(dims) == 4 and dims[1] == channels and dims[3] != channels
    return False


def verify_onnx(model, onnx_model, input_size, layout: str = "NHWC", seed: int = 0,
                batch: int = 2) -> float | None:
    """``onnx_model``: a path or the serialised model. Max abs difference between ONNX Runtime (CPU) and Keras logits on seeded random
    input in [-1, 1] (the normalised range); None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import numpy as np
    w, h = input_size
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, h, w, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False), np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    feed = x.transpose(0, 3, 1, 2) if layout == "NCHW" else x
    got = session.run(None, {session.get_inputs()[0].name: feed})[0]
    if layout == "NCHW":
        got = got.transpose(0, 2, 3, 1)
    if got.shape != expected.shape:
        raise UserError(f"ONNX output shape {got.shape} differs from Keras {expected.shape}")
    return float(np.abs(got - expected).max())

"""The model formats `edge-seg convert` writes: one table, one row per format.

Everything that differs between formats is a column here, and everything else is derived
from the table: convert's flags and their help, its option checks and its output file names
(edge_seg.converters), the TFLite converter's settings, and which files `edge-seg tune` takes
for model variants and which of them is the float reference (edge_seg.tune.variants). The data
lives in the runtime because tune reads it without TensorFlow; the export functions the rows
name live in ``edge_seg.converters`` (``"module:function"``, relative to that package) and
are imported only by the converter.

Adding a format is one row here plus its export function: ``fn(job, fmt, model, size, path)``
writes the model (and its sidecar) to ``path``; ``check``, when a row has one, is called
with the Keras model before any conversion starts, so a format that cannot be made fails
before the others are written.

    python -m edge_seg.model_formats      # the table as Markdown (docs/quantisation.md shows it)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge_seg.errors import UserError

FLOAT = "float32"
# the input/output types a full-integer model can take (convert --io); the first is the default.
# int8 first: the graph computes in int8, and a uint8 input costs a QUANTIZE to int8 that runs
# outside XNNPACK (1.5-2 ms of 11 on the bundled model, docs/benchmarks.md); the runtime feeds
# either through one lookup table and argmaxes the integer logits as they are
INTEGER_IO = ("int8", "uint8", FLOAT)
# the convert option that keeps the final bilinear upsampling of the logits in a TFLite graph
# (edge_seg.converters.keras_model.logits_model); without it the logits come out at stride 2
FULL_RES_LOGITS = "--full-res-logits"


@dataclass(frozen=True)
class Format:
    name: str                 # the variant name recorded in the model's metadata
    flag: str                 # edge-seg convert's flag
    help: str
    suffix: str               # the file name after the model's stem (and size)
    calibration: bool         # needs calibration frames (convert --calibration)
    weights: str              # how the weights are stored
    activations: str          # how the activations are computed
    io: tuple[str, ...]       # input/output types it can be made with, the default first
    mode: str                 # the metadata's quantization.mode
    exporter: str             # "module:function" in edge_seg.converters
    check: str | None = None  # "module:function" called with the Keras model before any export
    options: tuple[str, ...] = ()  # convert options that change these formats and no other

    @property
    def extension(self) -> str:
        return "." + self.suffix.rpartition(".")[2].lower()

    @property
    def kind(self) -> str:
        """The runtime that runs it: "tflite" (LiteRT) or "onnx" (ONNX Runtime)."""
        return self.extension.lstrip(".")

    @property
    def full_precision(self) -> bool:
        return self.weights == FLOAT and self.activations == FLOAT

    @property
    def integer_activations(self) -> bool:
        return self.activations != FLOAT

    @property
    def integer(self) -> bool:
        """Integer weights or activations: what the drift check will not take as its float model."""
        return self.integer_activations or self.weights.startswith("int")

    @property
    def weight_bits(self) -> int:
        return int(re.search(r"\d+", self.weights).group())

    def file_name(self, stem: str) -> str:
        return f"{stem}{self.suffix}"


# The conversion order: one Keras model in, each selected row out, TFLite before ONNX.
FORMATS: tuple[Format, ...] = (
    Format("fp32", "--fp32", "plain float32 TFLite", "-fp32.tflite", False,
           FLOAT, FLOAT, (FLOAT,), "none", "tflite_export:export_tflite", options=(FULL_RES_LOGITS,)),
    Format("fp16", "--fp16", "float16 weights (the GPU-delegate variant)", "-fp16.tflite", False,
           "float16", FLOAT, (FLOAT,), "float16 weights", "tflite_export:export_tflite",
           options=(FULL_RES_LOGITS,)),
    Format("dynamic", "--dynamic", "dynamic-range int8 weights, float activations",
           "-dynamic.tflite", False, "int8 per channel", FLOAT, (FLOAT,), "dynamic-range int8 weights",
           "tflite_export:export_tflite", options=(FULL_RES_LOGITS,)),
    Format("int8", "--int8", "post-training full-integer int8", "-int8.tflite", True,
           "int8 per tensor", "int8", INTEGER_IO, "full-integer int8 (post-training)",
           "tflite_export:export_tflite", options=("--io", "--per-channel", FULL_RES_LOGITS)),
    Format("qat-int8", "--qat", "quantisation-aware fine-tune, then full-integer int8",
           "-qat-int8.tflite", True, "int8 per channel", "int8", INTEGER_IO,
           "full-integer int8 (quantisation-aware training)", "tflite_export:export_qat_int8",
           check="qat:check_quantizable",
           options=("--io", FULL_RES_LOGITS, "--qat-epochs", "--qat-steps", "--qat-lr", "--qat-batch")),
    Format("onnx-fp32", "--onnx", "ONNX (tf2onnx, opset 17) for ONNX Runtime / TensorRT on a "
           "Jetson (needs the [onnx] extra)", ".onnx", False, FLOAT, FLOAT, (FLOAT,), "none",
           "onnx_export:export_onnx_fp32", check="onnx_export:require_tf2onnx",
           options=("--nchw",)),
)


def get(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise UserError(f"unknown format {name!r}; choose one of {', '.join(names())}")


def names() -> tuple[str, ...]:
    return tuple(fmt.name for fmt in FORMATS)


def flags() -> str:
    return " ".join(fmt.flag for fmt in FORMATS)


def select(wanted) -> list[Format]:
    """The rows named in ``wanted``, in the table's (conversion) order."""
    wanted = set(wanted)
    for name in wanted:
        get(name)  # an unknown name fails here
    return [fmt for fmt in FORMATS if fmt.name in wanted]


def io_choices() -> tuple[str, ...]:
    """Every input/output type some format can be made with, defaults first."""
    return tuple(dict.fromkeys(t for fmt in FORMATS if len(fmt.io) > 1 for t in fmt.io))


def extensions() -> tuple[str, ...]:
    """The model file types, in the table's order: the files `edge-seg tune` looks at."""
    return tuple(dict.fromkeys(fmt.extension for fmt in FORMATS))


def by_extension() -> dict[str, list[str]]:
    return {ext: [fmt.name for fmt in FORMATS if fmt.extension == ext] for ext in extensions()}


def of_file(path, variant: str | None = None) -> Format | None:
    """The row a model file was made by: the variant its metadata records, else (no variant
    recorded) the longest row suffix its name ends with; None for a variant outside the table."""
    if variant:
        return next((fmt for fmt in FORMATS if fmt.name == variant), None)
    name = Path(path).name.lower()
    matches = [fmt for fmt in FORMATS if name.endswith(fmt.suffix)]
    return max(matches, key=lambda fmt: len(fmt.suffix), default=None)


def float_preference() -> tuple[str, ...]:
    """The formats with float activations, most precise weights first (table order breaks ties):
    which variant stands in for the float model when there is no fp32 one."""
    floats = [fmt for fmt in FORMATS if not fmt.integer_activations]
    return tuple(fmt.name for fmt in sorted(floats, key=lambda fmt: -fmt.weight_bits))


def io_text(fmt: Format) -> str:
    return fmt.io[0] if len(fmt.io) == 1 else f"{fmt.io[0]} (--io {', '.join(fmt.io[1:])})"


def markdown_table() -> str:
    rows = ["| format | flag | file | calibration | weights | activations | input/output | options |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for fmt in FORMATS:
        options = ", ".join(f"`{o}`" for o in fmt.options) or "–"
        rows.append(f"| {fmt.name} | `{fmt.flag}` | `<model>{fmt.suffix}` | "
                    f"{'yes' if fmt.calibration else 'no'} | {fmt.weights} | {fmt.activations} | "
                    f"{io_text(fmt)} | {options} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")

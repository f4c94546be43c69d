"""Where the model's time goes, stage by stage, int8 beside fp32.

    .venv/bin/python benchmarks/profile_stages.py [--model PATH.keras] [--threads 1,2]
        [--size WxH] [--io int8|uint8] [--full-res-logits] [--calibration MANIFEST|ROOT|synthetic]
        [--rounds 7] [--json OUT] [--markdown OUT] [--stages]

A TFLite graph is one call, so no runtime hook says what each layer costs. The profiler
attributes time by prefix differencing instead: the Keras model is cut after each stage (a
sub-model from the input to that stage's output), every prefix is converted to the same
TFLite variants as the product (fp32 with float I/O; int8 with the same calibration frames and
the product's int8 I/O, ``--io``, through edge_seg.converters.tflite_export), and a stage costs
the time of its prefix minus the time of the one before. The last prefix is the whole model, so
the stage times add up to its time. Every prefix has the I/O type of the product, so no prefix
pays a conversion the whole model does not (with uint8 I/O, each prefix's int8 output was
requantised to uint8 and a stage that shrinks its output could read below zero). The "io" row
is the model's time minus that of the same model converted with the other integer I/O type:
with ``--io uint8``, the input QUANTIZE outside XNNPACK that the first stage's row contains.
The model is profiled as convert exports it: without its final x2 upsampling of the logits
(edge_seg.converters.keras_model.logits_model) unless ``--full-res-logits``.

Stages come from the Keras layer names: MobileNetV2 blocks (``Conv1``, ``expanded_conv``,
``block_N_*``) grouped by the output stride of each block, any other layer by its name's
prefix (``dec16_up`` -> ``dec16``, ``head``), and the layers after the last convolution (the
upsampling of the logits) as one stage; stages are ordered by their last layer. A stage whose cut would leave out layers of the
stages before it (a branch) is merged into the next one.

Timing: short shuffled blocks with pauses (benchmarks/blocks.py). Converted prefixes are cached in a temporary folder keyed by the model,
the cut, the variant, the I/O types and the calibration set.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.blocks import CallRunner, measure  # noqa: E402
from benchmarks.machine import header_text, print_header  # noqa: E402
from edge_seg import model_formats  # noqa: E402
from edge_seg.errors import UserError  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
DEFAULT_MANIFEST = REPO / "calibration" / "camvid-drive-train.json"
SYNTHETIC = "synthetic"
SYNTHETIC_FRAMES = 16
INTEGER_IO = tuple(t for t in model_formats.INTEGER_IO if t != model_formats.FLOAT)


def timed_variants(io: str = INTEGER_IO[0]) -> tuple[tuple[str, str], ...]:
    """What each timed TFLite graph is: (variant, I/O types), int8 with ``io``."""
    return (("int8", io), ("fp32", model_formats.FLOAT))


def io_reference(io: str = INTEGER_IO[0]) -> tuple[str, str]:
    """The whole int8 model with the other integer I/O type, timed for the io row."""
    return ("int8", next(t for t in INTEGER_IO if t != io))
# MobileNetV2 layer names (keras.applications): the stem and first block are block 0
_MNV2 = re.compile(r"^(?:Conv1|bn_Conv1|Conv1_relu|expanded_conv)|^block_(\d+)_")
_PREFIX = re.compile(r"^[A-Za-z]+\d*")


@dataclass
class Stage:
    name: str
    layers: list = field(default_factory=list)   # layer names, in graph order
    macs: int = 0

    @property
    def output(self) -> str:
        return self.layers[-1]

    def as_dict(self) -> dict:
        return {"name": self.name, "first_layer": self.layers[0], "last_layer": self.output,
                "layers": len(self.layers), "macs": self.macs}


# ------------------------------------------------------------------ stages

def _stage_keys(model) -> list[tuple[str, object]]:
    """(stage key, layer) for every non-input layer, in graph order."""
    import tf_keras as keras

    from edge_seg.train.models import layer_macs

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    in_h = model.input_shape[1]

    def stride(layer) -> int:
        return max(1, in_h // layer.output.shape[1])
    block = {layer.name: int(m.group(1) or 0) for layer in layers if (m := _MNV2.match(layer.name))}
    block_stride = {block[layer.name]: stride(layer) for layer in layers if layer.name in block}
    last_mac = max((i for i, layer in enumerate(layers) if layer_macs(layer)), default=len(layers) - 1)
    out_stride = stride(layers[last_mac])
    keys = []
    for i, layer in enumerate(layers):
        if i > last_mac:
            key = f"upsample x{out_stride}" if out_stride > 1 else "output"
        elif layer.name in block:
            key = f"encoder /{block_stride[block[layer.name]]}"
        else:
            key = (m.group(0) if (m := _PREFIX.match(layer.name)) else layer.name)
        keys.append((key, layer))
    return keys


def find_stages(model) -> list[Stage]:
    """The model's stages, ordered by their last layer in the graph, each a set of layers whose
    cut (the sub-model up to its last layer) holds exactly its layers and those of the stages
    before. A branch of one stage may sit between layers of another in the graph's order (a
    skip projection computed early), so layers are grouped by stage first, then ordered."""
    from edge_seg.train.models import layer_macs

    by_key: dict[str, Stage] = {}
    last: dict[str, int] = {}
    for i, (key, layer) in enumerate(_stage_keys(model)):
        stage = by_key.setdefault(key, Stage(key))
        stage.layers.append(layer.name)
        stage.macs += layer_macs(layer)
        last[key] = i
    stages = sorted(by_key.values(), key=lambda s: last[s.name])
    merged: list[Stage] = []
    before: set[str] = set()
    pending: Stage | None = None
    for i, stage in enumerate(stages):
        if pending is not None:
            stage = Stage(f"{pending.name} + {stage.name}", pending.layers + stage.layers,
                          pending.macs + stage.macs)
        wanted = before | set(stage.layers)
        if i == len(stages) - 1 or _ancestors(model, stage.output) == wanted:
            merged.append(stage)
            before, pending = wanted, None
        else:
            pending = stage
    return merged


def _ancestors(model, layer_name: str) -> set[str]:
    """Names of the non-input layers the output of ``layer_name`` depends on, itself included."""
    import tf_keras as keras

    sub = keras.Model(model.input, model.get_layer(layer_name).output)
    return {layer.name for layer in sub.layers if not isinstance(layer, keras.layers.InputLayer)}


def cut(model, stage: Stage):
    """The prefix of ``model`` that ends with ``stage``; the model itself for the last stage."""
    import tf_keras as keras

    if stage.output == model.layers[-1].name:
        return model
    return keras.Model(model.input, model.get_layer(stage.output).output, name=f"cut_{stage.output}")


# ------------------------------------------------------------------ calibration and conversion

@dataclass
class CalibrationFrames:
    frames: list        # normalised (1, H, W, 3) float32, as the converter's generator yields them
    source: str
    sha256: str

    def rep(self):
        return lambda: ([f] for f in self.frames)


def calibration_frames(spec: str | None, size, limit: int | None) -> CalibrationFrames:
    """The frames the product's int8 export would calibrate on (a manifest or dataset root,
    read once through its representative dataset), or synthetic street scenes: the default
    manifest where its dataset is present, else synthetic frames."""
    from edge_seg.converters.tflite_export import representative_dataset, resolve_calibration

    if spec != SYNTHETIC:
        try:
            cal = resolve_calibration(spec or DEFAULT_MANIFEST, size)
        except UserError:
            if spec:
                raise
        else:
            samples = cal.samples[:limit] if limit else cal.samples
            frames = [batch[0] for batch in representative_dataset(samples, size)()]
            return CalibrationFrames(frames, f"{cal.source} ({len(frames)} frames)",
                                     f"{cal.sha256}:{len(frames)}")
    from edge_seg.preprocess import normalize
    from edge_seg.scenes import render_scene

    n = limit or SYNTHETIC_FRAMES
    frames = [normalize(np.ascontiguousarray(render_scene(seed, tuple(size)).image[..., ::-1]))[None]
              for seed in range(n)]
    return CalibrationFrames(frames, f"synthetic street scenes ({n} frames)", f"synthetic:{n}")


def model_digest(model) -> str:
    """Identifies the weights and graph of a Keras model for the conversion cache."""
    h = hashlib.sha256(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def converted(model, stage: Stage, variant: str, io: str, cal: CalibrationFrames, cache: Path,
              digest: str) -> bytes:
    """The TFLite bytes of the prefix ending with ``stage``, from the cache when present."""
    from edge_seg.converters.tflite_export import convert
    from edge_seg.io.publish import atomic_write_bytes

    key = hashlib.sha256(f"{digest}|{stage.output}|{variant}|{io}|{cal.sha256}".encode()).hexdigest()[:20]
    path = cache / f"{key}.tflite"
    if path.is_file():
        return path.read_bytes()
    rep = cal.rep() if variant == "int8" else None
    content = convert(cut(model, stage), variant, rep, io=io) if rep else convert(cut(model, stage), variant)
    atomic_write_bytes(path, content)
    return content


# ------------------------------------------------------------------ timing

class GraphRunner(CallRunner):
    """A metadata-free converted graph (a prefix has no segmentation output) on XNNPACK."""

    def __init__(self, content: bytes, threads: int, name: str):
        from benchmarks.bench_int8 import litert_runner

        super().__init__(litert_runner(content, threads), name)  # load_graph, one random input set


def stage_table(stages: list[Stage], ms: dict, total_macs: int, io_type: str = INTEGER_IO[0]) -> dict:
    """Rows per stage from prefix times ``ms[(variant, io, stage index)]``, int8 with ``io_type``."""
    variants, reference = timed_variants(io_type), io_reference(io_type)
    rows = []
    totals = {v: ms[(v, io, len(stages) - 1)] for v, io in variants}
    prev = {v: 0.0 for v, _ in variants}
    for i, stage in enumerate(stages):
        row = {"stage": stage.name, "first_layer": stage.layers[0], "last_layer": stage.output,
               "macs": stage.macs, "gmac": stage.macs / 1e9}
        for v, io in variants:
            t = ms[(v, io, i)] - prev[v]
            prev[v] = ms[(v, io, i)]
            row[f"{v}_ms"] = t
            row[f"{v}_share"] = t / totals[v] if totals[v] > 0 else float("nan")
            row[f"{v}_gmacs"] = stage.macs / (t / 1e3) / 1e9 if t > 0 and stage.macs else None
        # a time ratio (below 1: int8 is faster); meaningless where noise made a stage negative
        both = row["int8_ms"] > 0 and row["fp32_ms"] > 0
        row["int8_vs_fp32"] = row["int8_ms"] / row["fp32_ms"] if both else None
        rows.append(row)
    io_ms = ms[(*reference, len(stages) - 1)]
    io = {"int8_ms": totals["int8"] - io_ms, "int8_share": (totals["int8"] - io_ms) / totals["int8"],
          "int8_io_types": variants[0][1], "reference_io_types": reference[1], "reference_ms": io_ms}
    total = {"macs": total_macs, "gmac": total_macs / 1e9,
             **{f"{v}_ms": totals[v] for v, _ in variants},
             **{f"{v}_gmacs": total_macs / (totals[v] / 1e3) / 1e9 for v, _ in variants},
             "int8_vs_fp32": totals["int8"] / totals["fp32"]}
    return {"rows": rows, "io": io, "total": total}


# ------------------------------------------------------------------ report

def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`", "", "```", header_text(result["machine"]), "```", "",
             f"Model {result['model']}, {result['macs'] / 1e9:.3f} GMAC; int8 calibrated on "
             f"{result['calibration']}; {result['timing']['rounds']} rounds of "
             f"{result['timing']['block']}-run blocks, median of block medians.", ""]
    for threads, table in result["threads"].items():
        lines += [f"### {threads} thread{'s' if threads != '1' else ''}", "",
                  "| stage | layers | GMAC | int8 ms | int8 share | int8 GMAC/s | fp32 ms | fp32 share | "
                  "fp32 GMAC/s | int8/fp32 time |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in table["rows"]:
            lines.append(f"| {r['stage']} | {r['first_layer']} .. {r['last_layer']} | {r['gmac']:.4f} | "
                         f"{r['int8_ms']:.2f} | {r['int8_share']:.1%} | {_f(r['int8_gmacs'], '.1f')} | "
                         f"{r['fp32_ms']:.2f} | {r['fp32_share']:.1%} | {_f(r['fp32_gmacs'], '.1f')} | "
                         f"{_f(r['int8_vs_fp32'], '.2f')} |")
        io, t = table["io"], table["total"]
        lines += [f"| io | {io['int8_io_types']} I/O minus {io['reference_io_types']} I/O | - | "
                  f"{io['int8_ms']:.2f} | {io['int8_share']:.1%} | - | - | - | - | - |",
                  f"| total | whole model | {t['gmac']:.4f} | {t['int8_ms']:.2f} | 100% | {t['int8_gmacs']:.1f} | "
                  f"{t['fp32_ms']:.2f} | 100% | {t['fp32_gmacs']:.1f} | {t['int8_vs_fp32']:.2f} |", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ command

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="a .keras model (default: the bundled reference)")
    ap.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2")
    ap.add_argument("--size", default=None, help="WxH input size (default: the model's own)")
    ap.add_argument("--io", default=INTEGER_IO[0], choices=INTEGER_IO,
                    help="input/output type of the int8 graphs (default: convert's)")
    ap.add_argument(model_formats.FULL_RES_LOGITS, dest="full_res_logits", action="store_true",
                    help="profile the model with its final upsampling of the logits, as "
                         f"'edge-seg convert {model_formats.FULL_RES_LOGITS}' exports it")
    ap.add_argument("--calibration", default=None,
                    help=f"int8 calibration: a manifest, a dataset root or '{SYNTHETIC}' (default: "
                         f"{DEFAULT_MANIFEST.relative_to(REPO)} where its data is present, else synthetic)")
    ap.add_argument("--calibration-frames", type=int, default=None,
                    help="use only the first N calibration frames (default: all, as the product)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=10, help="timed runs per model per round")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between blocks")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "edge-seg-profile-stages"),
                    help="folder of converted prefixes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--stages", action="store_true", help="list the stage boundaries and exit")
    return ap.parse_args(argv)


def check_args(args) -> tuple[list[int], tuple[int, int] | None]:
    from edge_seg.preprocess import parse_size

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--threads {args.threads}: expected counts such as 1,2") from None
    if not threads or min(threads) < 1:
        raise UserError(f"--threads {args.threads}: expected counts such as 1,2")
    for name in ("rounds", "block"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.pause < 0 or (args.calibration_frames is not None and args.calibration_frames < 1):
        raise UserError("--pause must be >= 0 and --calibration-frames >= 1")
    try:
        size = parse_size(args.size) if args.size else None
    except ValueError as e:
        raise UserError(f"--size: {e}") from None
    if not Path(args.model).is_file():
        raise UserError(f"--model {args.model}: no such file")
    return threads, size


def load(args, size):
    from edge_seg.converters.keras_model import load_keras_model, logits_model, model_input_size
    from edge_seg.converters.sizes import rebuild_at_size

    model = load_keras_model(Path(args.model))
    if size:
        model = rebuild_at_size(model, size)
    # the digest of the whole model: a cut of the model without its last upsampling is the
    # same cut of the whole model, so both profiles share their converted prefixes
    digest = model_digest(model)
    model, _ = logits_model(model, args.full_res_logits)
    return model, model_input_size(model), digest


def run(args) -> dict:
    from edge_seg.train.models import count_macs

    threads, size = check_args(args)
    model, size, digest = load(args, size)
    stages = find_stages(model)
    if args.stages:
        for s in stages:
            print(f"{s.name}\t{s.layers[0]} .. {s.output}\t{len(s.layers)} layers\t{s.macs / 1e9:.4f} GMAC")
        return {"stages": [s.as_dict() for s in stages]}
    header = print_header(threads, size, args.model)
    cal = calibration_frames(args.calibration, size, args.calibration_frames)
    cache = Path(args.cache)
    graphs = {}
    for i, stage in enumerate(stages):
        print(f"converting prefix {i + 1}/{len(stages)} (.. {stage.output})", file=sys.stderr, flush=True)
        for v, io in timed_variants(args.io):
            graphs[(v, io, i)] = converted(model, stage, v, io, cal, cache, digest)
    reference = io_reference(args.io)
    graphs[(*reference, len(stages) - 1)] = converted(model, stages[-1], *reference, cal, cache, digest)
    result = {"machine": header, "command": " ".join(["python benchmarks/profile_stages.py",
                                                      *(args.argv or [])]),
              "model": str(args.model), "input_size": list(size), "macs": count_macs(model),
              "int8_io": args.io, "full_res_logits": args.full_res_logits,
              "output_size": [int(model.output_shape[2]), int(model.output_shape[1])],
              "calibration": cal.source, "stages": [s.as_dict() for s in stages],
              "timing": {"rounds": args.rounds, "block": args.block, "pause_s": args.pause,
                         "statistic": "median of block medians, ms"},
              "threads": {}}
    for t in threads:
        runners = {k: GraphRunner(g, t, f"{k[0]}-{k[1]}-{k[2]}") for k, g in graphs.items()}
        blocks = measure(runners, args.rounds, args.block, args.pause)
        ms = {k: statistics.median(v) for k, v in blocks.items()}
        table = stage_table(stages, ms, result["macs"], args.io)
        # every block median, so a reader can see how far apart the rounds were
        table["prefix_blocks"] = {f"{v}/{io}/{i}": blocks[(v, io, i)] for v, io, i in blocks}
        result["threads"][str(t)] = table
    return result


def main(argv=None) -> int:
    from edge_seg.io.publish import atomic_write_bytes, atomic_write_json

    args = parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    try:
        result = run(args)
        if args.stages:
            return 0
        text = markdown(result)
        print(text)
        if args.json:
            atomic_write_json(args.json, result, "--json")
        if args.markdown:
            atomic_write_bytes(args.markdown, text.encode(), "--markdown")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

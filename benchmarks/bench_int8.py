"""int8 speed: the default int8 model, a baseline int8 (uint8 I/O, full-resolution logits)
and fp32 TFLite, in one run, on the CPU named in the header.

    .venv/bin/python benchmarks/bench_int8.py [--model models/unet-mobilenetv2-camvid-idd.keras]
        [--threads 1,2] [--baseline FILE.tflite] [--rounds 7] [--block 10] [--pause 0.2]
        [--json out.json] [--markdown out.md]

Rows, batch 1 at the model's input size, per ``--threads`` count, all through LiteRT with
XNNPACK (the interpreter's default CPU delegate, as edge_seg.segmenter runs them):

* **int8 default**: what ``edge-seg convert --int8`` makes now (int8 input and output, the
  logits at stride 2): ``<model>-int8.tflite`` beside the model when present, else converted
  in memory;
* **int8 baseline**: the model as bundled before, uint8 input and output and the logits
  upsampled x2 in the graph: ``--baseline FILE`` (the bundled file is in the repository's
  history, docs/benchmarks.md), else ``convert --int8 --io uint8 --full-res-logits`` in
  memory, the same graph (its calibration scales can differ from the bundled file's in the
  last float bit, docs/quantisation.md);
* **fp32** the same two ways (logits at stride 2, and x2 in the graph);
* the float Keras model through a compiled ``tf.function`` and ONNX Runtime (CPU execution
  provider) on the tf2onnx export, at the largest thread count only (TensorFlow's thread
  pool is set once per process);
* the CPU's practical int8 and fp32 GEMM peaks: stacked 1x1 convolutions (``--peak-layers``
  x 512->512 channels on 64x64), in GMAC/s; the model's own int8 GMAC/s over the int8 one is
  the fraction of peak.

Every row is timed in short blocks, the rows shuffled each round with a pause between blocks
(benchmarks/blocks.py), never one invocation per row in turn. Converted in memory, int8 is
calibrated on the committed CamVid manifest when the data is there, else on random frames
(speed does not depend on calibration; the baseline then is not the bundled file).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.machine import header_text, int8_dot_instructions, print_header  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"


def litert_runner(content: bytes, threads: int):
    """The model call of a converted graph (the peak probes carry no metadata), on XNNPACK, every
    input set once to random values."""
    from edge_seg.backends.litert import load_graph

    interp = load_graph(content, threads)
    rng = np.random.default_rng(0)
    for inp in interp.get_input_details():
        if inp["dtype"] == np.float32:
            x = rng.uniform(-1, 1, inp["shape"]).astype(np.float32)
        else:
            info = np.iinfo(inp["dtype"])
            x = rng.integers(info.min, info.max + 1, inp["shape"]).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
    return interp.invoke


def peak_model(threads: int, layers: int = 4, channels: int = 512, hw: int = 64):
    """(int8 run, fp32 run, MACs) of a stack of 1x1 convolutions: the practical GEMM peaks."""
    import tensorflow as tf
    import tf_keras as keras

    from edge_seg.converters.tflite_export import convert

    inp = keras.Input((hw, hw, channels))
    x = inp
    for _ in range(layers):
        x = keras.layers.Conv2D(channels, 1, use_bias=True)(x)
    model = keras.Model(inp, x)

    def rep():
        rng = np.random.default_rng(0)
        for _ in range(4):
            yield [rng.uniform(-1, 1, (1, hw, hw, channels)).astype(np.float32)]
    content = convert(model, "int8", rep, io="int8")
    del tf
    return (litert_runner(content, threads), litert_runner(convert(model, "fp32"), threads),
            layers * hw * hw * channels * channels)


def load_model(path: Path):
    """(Keras model, its file or None, how the tables name it)."""
    import tf_keras as keras

    from edge_seg.converters.tflite_export import load_keras_model
    from edge_seg.train.models import build_model

    if path.is_file():
        return load_keras_model(path), path, _rel(path)
    keras.utils.set_random_seed(0)
    return (build_model("unet-mobilenetv2", (512, 256)), None,
            "unet-mobilenetv2 default alpha, random init (reference model not found)")


def onnx_row(model, x, threads: int):
    """(run, file size, note) of ONNX Runtime on the same float model; None when unavailable."""
    try:
        from edge_seg.backends.onnxrt import load_onnx
        from edge_seg.converters.onnx_export import export_onnx
        tmp = Path(tempfile.mkdtemp()) / "model.onnx"
        export_onnx(model, tmp, verify=False)
        onnx = load_onnx(tmp, threads, "cpu")
        return (lambda: onnx.run(x), tmp.stat().st_size, f"tf2onnx, {onnx.info.backend}")
    except Exception as e:  # noqa: BLE001 -- reported, not fatal
        print(f"ONNX Runtime row skipped: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
        return None


MANIFEST = REPO / "calibration" / "camvid-drive-train.json"


def calibration(size):
    """(representative dataset, how it was calibrated): the committed manifest's frames, as
    convert uses them, where the data is present, else random frames."""
    from edge_seg.converters.tflite_export import representative_dataset, resolve_calibration
    from edge_seg.errors import UserError

    try:
        cal = resolve_calibration(MANIFEST, size)
    except UserError:
        def rep():
            rng = np.random.default_rng(0)
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, size[1], size[0], 3)).astype(np.float32)]
        return rep, "calibrated on random frames"
    return representative_dataset(cal.samples, size), f"calibrated on {MANIFEST.name}"


def model_bytes(path: Path) -> tuple[bytes, str]:
    from edge_seg.backends.metadata import model_sha256
    return path.read_bytes(), f"{_rel(path)} (sha256 {model_sha256(path)[:12]})"


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def tflite_rows(args, model, model_path, size) -> dict:
    """{row: (content, note)}: the int8 default, the int8 baseline, fp32 both ways."""
    from edge_seg.backends.embedded import original_bytes
    from edge_seg.converters.keras_model import logits_model
    from edge_seg.converters.tflite_export import convert

    stride2, _ = logits_model(model)
    rep, how = None, ""
    beside = Path(model_path).with_name(f"{Path(model_path).stem}-int8.tflite") if model_path else None
    rows = {}
    if beside is not None and beside.is_file():
        rows["int8 default"] = model_bytes(beside)
    else:
        rep, how = calibration(size)
        rows["int8 default"] = (convert(stride2, "int8", rep), f"converted in memory, {how}")
    if args.baseline:
        rows["int8 baseline"] = model_bytes(Path(args.baseline))
    else:
        if rep is None:
            rep, how = calibration(size)
        content = convert(model, "int8", rep, io="uint8")
        sha = hashlib.sha256(original_bytes(content)).hexdigest()[:12]
        rows["int8 baseline"] = (content, f"convert --io uint8 --full-res-logits in memory, {how} "
                                          f"(sha256 {sha})")
    rows["fp32 default"] = (convert(stride2, "fp32"), "converted in memory, logits at stride 2")
    rows["fp32 full-res"] = (convert(model, "fp32"), "converted in memory, logits x2 in the graph")
    return rows


def build_rows(args, model, model_path, size, threads: int, extra: bool) -> tuple[dict, dict, int]:
    """({row: runner}, {row: (file bytes or None, note)}, MACs of the peak probe)."""
    from benchmarks.blocks import CallRunner

    runners, notes = {}, {}
    for name, (content, note) in args.tflite.items():
        runners[name] = CallRunner(litert_runner(content, threads), name)
        notes[name] = (len(content), note)
    if extra:
        import tensorflow as tf
        x = np.random.default_rng(0).uniform(-1, 1, (1, size[1], size[0], 3)).astype(np.float32)
        call = tf.function(lambda t: model(t, training=False))
        xt = tf.constant(x)
        runners["float Keras, tf.function"] = CallRunner(lambda: call(xt).numpy(), "keras")
        notes["float Keras, tf.function"] = (None, "graph mode")
        onnx = None if args.no_onnx else onnx_row(model, x, threads)
        if onnx:
            runners["float ONNX Runtime (CPU EP)"] = CallRunner(onnx[0], "onnx")
            notes["float ONNX Runtime (CPU EP)"] = onnx[1:]
    peak_run, fp32_peak_run, peak_macs = peak_model(threads, args.peak_layers)
    runners["int8 peak probe (1x1 conv)"] = CallRunner(peak_run, "int8 peak")
    notes["int8 peak probe (1x1 conv)"] = (None, f"{args.peak_layers} x 512->512 1x1 conv at 64x64")
    runners["fp32 peak probe (1x1 conv)"] = CallRunner(fp32_peak_run, "fp32 peak")
    notes["fp32 peak probe (1x1 conv)"] = (None, "the same stack in fp32")
    return runners, notes, peak_macs


RATIOS = (("int8 default vs fp32 default", "fp32 default", "int8 default"),
          ("int8 baseline vs fp32 full-res", "fp32 full-res", "int8 baseline"),
          ("int8 default vs int8 baseline", "int8 baseline", "int8 default"))


def summarize(blocks: dict, notes: dict, macs: int, peak_macs: int) -> dict:
    """Per row the median of block medians (and the fastest and slowest block); ratios are
    speed-ups (the second row's time over the first's)."""
    ms = {k: statistics.median(v) for k, v in blocks.items()}
    int8_ms = ms["int8 default"]
    peak = peak_macs / (ms["int8 peak probe (1x1 conv)"] / 1e3) / 1e9
    result = {"rows": [], "ratios": {name: ms[slow] / ms[fast] for name, slow, fast in RATIOS},
              "peak_gmacs": peak, "fp32_peak_gmacs": peak_macs / (ms["fp32 peak probe (1x1 conv)"] / 1e3) / 1e9,
              "model_int8_gmacs": macs / (int8_ms / 1e3) / 1e9}
    result["fraction_of_int8_peak"] = result["model_int8_gmacs"] / peak
    for k, (size_bytes, note) in notes.items():
        result["rows"].append({"runtime": k, "ms": ms[k], "block_min_ms": min(blocks[k]),
                               "block_max_ms": max(blocks[k]), "blocks": blocks[k],
                               "size_bytes": size_bytes, "vs_int8_default": ms[k] / int8_ms, "note": note})
    return result


def markdown(result: dict) -> str:
    size, macs, timing = result["input_size"], result["macs"], result["timing"]
    lines = [f"`{result['command']}`", "", "```", header_text(result["machine"]), "```", "",
             f"Model {result['model']}: {macs / 1e9:.3f} GMAC per {size[0]}x{size[1]} frame; "
             f"{timing['rounds']} rounds of {timing['block']}-run blocks, rows shuffled each round, "
             f"{timing['pause_s']} s pauses; ms = median of block medians; load average at start "
             f"{result['load_avg_at_start'][0]:.2f}.", ""]
    for threads, table in result["threads"].items():
        lines += [f"### {threads} thread{'s' if threads != '1' else ''}", "",
                  "| runtime | ms | blocks min-max | x int8 default time | file MB | note |",
                  "|---|---|---|---|---|---|"]
        for r in table["rows"]:
            mb = f"{r['size_bytes'] / 1e6:.2f}" if r["size_bytes"] else "-"
            lines.append(f"| {r['runtime']} | {r['ms']:.2f} | {r['block_min_ms']:.2f}-{r['block_max_ms']:.2f} | "
                         f"{r['vs_int8_default']:.2f} | {mb} | {r['note']} |")
        ratios = "; ".join(f"{name} **{v:.2f}x**" for name, v in table["ratios"].items())
        peak = table["peak_gmacs"]
        lines += ["", f"Speed-ups: {ratios}.",
                  f"int8 peak (1x1 conv probe) {peak:.0f} GMAC/s, fp32 {table['fp32_peak_gmacs']:.0f}; the "
                  f"default int8 model reaches {table['model_int8_gmacs']:.0f} GMAC/s = "
                  f"{table['fraction_of_int8_peak']:.0%} of the int8 peak.", ""]
    dots = ", ".join(result["int8_dot_instructions"]) or (
        "none (no AVX-VNNI / AVX512-VNNI / ARM dotprod): int8 kernels do no more MACs per cycle than fp32 "
        "ones here, so int8 buys size, not speed")
    lines.append(f"int8 dot-product instructions: {dots}.")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--baseline", default=None,
                    help="the int8 model to compare the default with (default: convert --io uint8 "
                         "--full-res-logits in memory)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=10, help="timed runs per row per round")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between blocks")
    ap.add_argument("--peak-layers", type=int, default=4)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    return ap.parse_args(argv)


def main(argv=None):
    from benchmarks.blocks import measure

    args = parse_args(argv)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not threads or min(threads) < 1 or min(args.rounds, args.block) < 1 or args.pause < 0:
        print(f"error: --threads {args.threads}, --rounds, --block: counts of at least 1; --pause >= 0",
              file=sys.stderr)
        return 2
    if args.baseline and not Path(args.baseline).is_file():
        print(f"error: --baseline {args.baseline}: no such file", file=sys.stderr)
        return 2
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(max(threads))
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from edge_seg.converters.keras_model import model_input_size
    from edge_seg.train.models import count_macs

    model, model_path, model_note = load_model(Path(args.model))
    size = model_input_size(model)
    macs = count_macs(model)
    header = print_header(threads, size, model_path)
    load_at_start = os.getloadavg()
    args.tflite = tflite_rows(args, model, model_path, size)
    result = {"machine": header, "model": model_note, "input_size": list(size), "macs": macs,
              "load_avg_at_start": load_at_start, "int8_dot_instructions": int8_dot_instructions(),
              "timing": {"rounds": args.rounds, "block": args.block, "pause_s": args.pause,
                         "statistic": "median of block medians, ms"},
              "command": " ".join(["python benchmarks/bench_int8.py", *(argv if argv is not None else sys.argv[1:])]),
              "threads": {}}
    for t in threads:
        runners, notes, peak_macs = build_rows(args, model, model_path, size, t, t == max(threads))
        result["threads"][str(t)] = summarize(measure(runners, args.rounds, args.block, args.pause),
                                              notes, macs, peak_macs)
    text = markdown(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

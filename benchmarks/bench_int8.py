"""int8 speed targets, side by side in one run, on the CPU named in the header.

    .venv/bin/python benchmarks/bench_int8.py [--model models/unet-mobilenetv2-camvid-idd.keras]
        [--threads 2] [--runs 40] [--json out.json] [--markdown out.md]

Rows, batch 1 at the model's input size, ``--threads`` threads:

* int8 TFLite (full-integer, uint8 I/O) and fp32 TFLite through LiteRT with XNNPACK (the
  interpreter's default CPU delegate, as edge_seg.segmenter runs them). Uses
  ``<model>-int8.tflite`` / ``-fp32.tflite`` beside the model when present, else converts
  in memory (int8 calibrated with the committed CamVid manifest when the data is there,
  else on random frames: speed does not depend on calibration);
* the float Keras model called through a compiled ``tf.function`` (graph mode);
* ONNX Runtime (CPU execution provider) on the same float model exported with tf2onnx
  (converters.onnx_export), the alternative a user might pick;
* the CPU's practical int8 peak: a large int8 model of stacked 1x1 convolutions
  (``--peak-layers`` x 512->512 channels on 64x64) through the same LiteRT runtime,
  reported in GMAC/s; the model's own int8 GMAC/s over it is the fraction of peak.

Measurements are interleaved (round-robin, ``--rounds`` rounds) so a noisy neighbour
hurts every row alike. Targets: int8 >= 2.5x faster than fp32 TFLite, >= 4x faster than
the Keras tf.function.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.machine import header_text, int8_dot_instructions, print_header  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"


def litert_runner(content: bytes, threads: int):
    """The model call of a converted graph (the peak probes carry no metadata), on XNNPACK."""
    from edge_seg.backends.litert import load_graph

    interp = load_graph(content, threads)
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(0)
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


def get_tflite(model, model_path, variant, size):
    from edge_seg.converters.tflite_export import convert, representative_dataset

    path = Path(model_path).with_name(f"{Path(model_path).stem}-{variant}.tflite") if model_path else None
    if path is not None and path.is_file():
        return path.read_bytes(), str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    if variant == "fp32":
        return convert(model, "fp32"), "converted in memory"
    manifest = REPO / "calibration" / "camvid-drive-train.json"
    rep, how = None, "int8 calibrated on random frames"
    try:
        from edge_seg.converters.tflite_export import resolve_calibration
        cal = resolve_calibration(manifest, size)
        rep, how = representative_dataset(cal.samples[:50], size), "int8 calibrated on 50 CamVid frames"
    except Exception:  # noqa: BLE001 -- no data here: speed does not depend on calibration
        def rep():
            rng = np.random.default_rng(0)
            for _ in range(8):
                yield [rng.uniform(-1, 1, (1, size[1], size[0], 3)).astype(np.float32)]
    return convert(model, "int8", rep), f"converted in memory ({how})"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40, help="timed runs per row (split over the rounds)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--peak-layers", type=int, default=4)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    return ap.parse_args(argv)


def load_model(path: Path):
    """(Keras model, its file or None, how the tables name it)."""
    import tf_keras as keras

    from edge_seg.converters.tflite_export import load_keras_model
    from edge_seg.train.models import build_model

    if path.is_file():
        return load_keras_model(path), path, str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
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


def build_rows(args, model, model_path, size) -> tuple[dict, int]:
    """({row name: (run, file size, note)}, MACs of the peak probe)."""
    import tensorflow as tf

    rows = {}
    fp32, fp32_src = get_tflite(model, model_path, "fp32", size)
    int8, int8_src = get_tflite(model, model_path, "int8", size)
    rows["int8 TFLite (XNNPACK)"] = (litert_runner(int8, args.threads), len(int8), int8_src)
    rows["fp32 TFLite (XNNPACK)"] = (litert_runner(fp32, args.threads), len(fp32), fp32_src)

    x = np.random.default_rng(0).uniform(-1, 1, (1, size[1], size[0], 3)).astype(np.float32)
    call = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)
    rows["float Keras, tf.function"] = (lambda: call(xt).numpy(), None, "graph mode")
    onnx = None if args.no_onnx else onnx_row(model, x, args.threads)
    if onnx:
        rows["float ONNX Runtime (CPU EP)"] = onnx

    peak_run, fp32_peak_run, peak_macs = peak_model(args.threads, args.peak_layers)
    rows["int8 peak probe (1x1 conv)"] = (peak_run, None, f"{args.peak_layers} x 512->512 1x1 conv at 64x64")
    rows["fp32 peak probe (1x1 conv)"] = (fp32_peak_run, None, "the same stack in fp32")
    return rows, peak_macs


def time_rows(rows: dict, runs: int, rounds: int) -> dict:
    """ms per call of every row, interleaved round-robin so a noisy neighbour hurts all alike."""
    times = {k: [] for k in rows}
    for fn, _, _ in rows.values():
        for _ in range(3):
            fn()  # warm-up (graph tracing, XNNPACK packing)
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for k, (fn, _, _) in rows.items():
            for _ in range(per_round):
                t = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t) * 1e3)
    return times


def summarize(times: dict, rows: dict, macs: int, peak_macs: int) -> dict:
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    best = {k: float(np.min(v)) for k, v in times.items()}
    int8_ms = p50["int8 TFLite (XNNPACK)"]
    peak_gmacs = peak_macs / (p50["int8 peak probe (1x1 conv)"] / 1e3) / 1e9
    model_gmacs = macs / (int8_ms / 1e3) / 1e9
    result = {
        "min_based": {"speedup_int8_vs_fp32_tflite": best["fp32 TFLite (XNNPACK)"] / best["int8 TFLite (XNNPACK)"],
                      "speedup_int8_vs_keras": best["float Keras, tf.function"] / best["int8 TFLite (XNNPACK)"],
                      "peak_gmacs": peak_macs / (best["int8 peak probe (1x1 conv)"] / 1e3) / 1e9,
                      "model_int8_gmacs": macs / (best["int8 TFLite (XNNPACK)"] / 1e3) / 1e9},
        "macs": macs, "rows": [], "peak_gmacs": peak_gmacs, "model_int8_gmacs": model_gmacs,
        "fp32_peak_gmacs": peak_macs / (p50["fp32 peak probe (1x1 conv)"] / 1e3) / 1e9,
        "int8_dot_instructions": int8_dot_instructions(),
        "fraction_of_int8_peak": model_gmacs / peak_gmacs,
        "speedup_int8_vs_fp32_tflite": p50["fp32 TFLite (XNNPACK)"] / int8_ms,
        "speedup_int8_vs_keras": p50["float Keras, tf.function"] / int8_ms,
    }
    if "float ONNX Runtime (CPU EP)" in p50:
        result["speedup_int8_vs_onnxruntime"] = p50["float ONNX Runtime (CPU EP)"] / int8_ms
    for k, (_, size_bytes, note) in rows.items():
        v = times[k]
        result["rows"].append({"runtime": k, "p50_ms": p50[k], "p90_ms": float(np.percentile(v, 90)),
                               "min_ms": float(np.min(v)), "runs": len(v), "size_bytes": size_bytes,
                               "vs_int8": p50[k] / int8_ms, "note": note})
    return result


def markdown(result: dict, args) -> str:
    r0, best = result["rows"][0], result["min_based"]
    size, macs, peak = result["input_size"], result["macs"], result["peak_gmacs"]
    lines = [f"`{result['command']}`", "", "```", header_text(result["machine"]), "```", "",
             "| runtime | p50 ms | p90 ms | min ms | x int8 time (p50) | file MB | note |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mb = f"{r['size_bytes'] / 1e6:.2f}" if r["size_bytes"] else "-"
        lines.append(f"| {r['runtime']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['vs_int8']:.2f} | {mb} | {r['note']} |")
    lines += ["",
              f"Model {result['model']}: {macs / 1e9:.3f} GMAC per {size[0]}x{size[1]} frame; {args.threads} threads; "
              f"{r0['runs']} interleaved runs per row; load average at start {result['load_avg_at_start'][0]:.2f}.",
              f"int8 is {result['speedup_int8_vs_fp32_tflite']:.2f}x faster than fp32 TFLite (target >= 2.5x) and "
              f"{result['speedup_int8_vs_keras']:.2f}x faster than the Keras tf.function (target >= 4x).",
              f"int8 peak (1x1 conv probe): {peak:.0f} GMAC/s; the model reaches {result['model_int8_gmacs']:.0f} "
              f"GMAC/s = {result['fraction_of_int8_peak']:.0%} of it.",
              "On the fastest run of each row (less sensitive to other load on the machine): int8 "
              f"{best['speedup_int8_vs_fp32_tflite']:.2f}x vs fp32 TFLite, {best['speedup_int8_vs_keras']:.2f}x vs "
              f"Keras; peak {best['peak_gmacs']:.0f} GMAC/s, model {best['model_int8_gmacs']:.0f} GMAC/s.",
              f"int8 / fp32 GEMM peak on this CPU: {peak / result['fp32_peak_gmacs']:.2f}x "
              f"({peak:.0f} vs {result['fp32_peak_gmacs']:.0f} GMAC/s); int8 dot-product instructions: "
              + (", ".join(result["int8_dot_instructions"]) or
                 "none (no AVX-VNNI / AVX512-VNNI / ARM dotprod): int8 kernels do no more MACs per cycle "
                 "than fp32 ones here, so int8 buys size, not speed")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from edge_seg.converters.tflite_export import model_input_size
    from edge_seg.train.models import count_macs

    model, model_path, model_note = load_model(Path(args.model))
    size = model_input_size(model)
    macs = count_macs(model)
    header = print_header(args.threads, size, model_path)
    print(f"model: {model_note}, {size[0]}x{size[1]}, {macs / 1e9:.3f} GMAC, {model.count_params():,} params",
          file=sys.stderr)
    load_at_start = os.getloadavg()
    rows, peak_macs = build_rows(args, model, model_path, size)
    result = summarize(time_rows(rows, args.runs, args.rounds), rows, macs, peak_macs)
    result.update(machine=header, model=model_note, input_size=list(size), load_avg_at_start=load_at_start,
                  command=" ".join(["python benchmarks/bench_int8.py", *(argv if argv is not None else sys.argv[1:])]))
    text = markdown(result, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return result


if __name__ == "__main__":
    main()

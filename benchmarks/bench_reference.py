"""What to expect on a device we have not measured: our models timed beside a public reference
network whose latency on that device is published.

    .venv/bin/python benchmarks/bench_reference.py [--model PATH ...] [--threads 1,2]
        [--references mobilenet_v2,mobilenet_v1] [--rounds 5] [--block 10] [--pause 0.3]
        [--estimates] [--json OUT] [--markdown OUT]
    .venv/bin/python benchmarks/bench_reference.py --estimates --from OUT.json   # no timing
    .venv/bin/python benchmarks/bench_reference.py --published                   # the sources

Each reference (``REFERENCES``: MobileNetV2 1.0 and MobileNet v1 1.0 at 224x224, the
1000-class classifiers the published benchmarks run, random weights) is converted with the
project's own export (edge_seg.converters.tflite_export: fp32, and full-integer int8 with the
bundled int8 model's I/O type, calibrated on synthetic street scenes), and timed beside our
models: the bundled ``models/*.tflite`` and an fp32 conversion of the bundled ``.keras``;
``--model`` adds more (a ``.tflite`` as it is, a ``.keras`` converted to fp32 and int8).

Timing: every block of runs is a process of its own (``--time-one``, LiteRT with XNNPACK, the
model call only), the (model, threads) pairs in a new random order each round with a pause
between blocks; a model's time is the median of its block medians. Interpreters sharing one
process, timed one call each in turn, measured two copies of one model 1.34x apart.

Estimate = published latency of the reference on the device x (our time / the reference's
time here), same precision, and the measured thread count nearest the published one. The
published figures are the rows of ``PUBLISHED``, each with its source. A ratio measured on
this CPU carries over to another only as far as the two spend their time alike: see
docs/benchmarks.md for the caveats (int8 on CPUs without dot-product instructions, ncnn
against LiteRT, fp16 arithmetic).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_seg.errors import UserError  # noqa: E402

MODELS_DIR = REPO / "models"
DEFAULT_KERAS = MODELS_DIR / "unet-mobilenetv2-camvid-idd.keras"
CALIBRATION_FRAMES = 8   # speed does not depend on the calibration frames
MODEL_SUFFIXES = (".tflite", ".keras", ".h5")
STATISTICS = {"median": "ms", "min": "ms_min"}  # --statistic -> the graph's field of block medians

# name -> (tf_keras.applications class, input side): the networks the sources time
REFERENCES = {
    "mobilenet_v2": ("MobileNetV2", 224),
    "mobilenet_v1": ("MobileNet", 224),
}

NCNN = "Tencent/ncnn benchmark/README.md"
NCNN_BOARDS = "nihui/ncnn-small-board README.md"
# Published latencies of the references (ms per 224x224 image, batch 1). ncnn's benchncnn
# runs random weights, like ours; "avg" of its loop unless the note says otherwise.
_PI4 = {"device": "Raspberry Pi 4 Model B", "cpu": "BCM2711, 4x Cortex-A72 1.8 GHz", "int8_dot": False,
        "framework": "ncnn", "source": NCNN}
_ROCK5B = {"device": "Raspberry Pi 5 (proxy: Radxa Rock 5B)", "cpu": "RK3588, 4x Cortex-A76 2.4 GHz",
           "int8_dot": True, "framework": "ncnn", "source": NCNN}
_NOT_A_PI5 = ("not a Pi 5: the same cores and clock, more cache and memory bandwidth; ncnn computes "
              "in fp16 on these cores")
PUBLISHED = (
    {**_PI4, "network": "mobilenet_v2", "precision": "fp32", "threads": 4, "ms": 61.88,
     "note": "`benchncnn 10 4 0 -1 1`"},
    {**_PI4, "network": "mobilenet_v2", "precision": "fp32", "threads": 1, "ms": 93.48,
     "note": "`benchncnn 10 1 0 -1 1`"},
    {**_PI4, "network": "mobilenet_v1", "precision": "fp32", "threads": 4, "ms": 61.17,
     "note": "`benchncnn 10 4 0 -1 1`"},
    {**_PI4, "network": "mobilenet_v1", "precision": "int8", "threads": 4, "ms": 34.37,
     "note": "`benchncnn 10 4 0 -1 1`, mobilenet_int8"},
    {**_PI4, "cpu": "BCM2711, 4x Cortex-A72 1.5 GHz", "network": "mobilenet_v2", "precision": "fp32",
     "threads": 4, "ms": 72.62, "note": "`benchncnn 8 4 0`, the board's original 1.5 GHz clock"},
    {**_ROCK5B, "network": "mobilenet_v2", "precision": "fp32", "threads": 4, "ms": 5.50,
     "note": f"`benchncnn 10 4 2 -1 0` (big cores); {_NOT_A_PI5}"},
    {**_ROCK5B, "network": "mobilenet_v1", "precision": "int8", "threads": 4, "ms": 5.15,
     "note": f"`benchncnn 10 4 2 -1 0`, mobilenet_int8; {_NOT_A_PI5}"},
    {**_ROCK5B, "cpu": "RK3588, 1x Cortex-A76 2.4 GHz", "network": "mobilenet_v2", "precision": "fp32",
     "threads": 1, "ms": 18.96, "note": f"`benchncnn 10 1 0 -1 0`; {_NOT_A_PI5}"},
    {"device": "Jetson AGX Orin (CPU)", "cpu": "12x Cortex-A78AE 2.2 GHz", "int8_dot": True,
     "network": "mobilenet_v1", "framework": "ncnn", "precision": "fp32", "threads": 12, "ms": 3.49,
     "source": NCNN_BOARDS,
     "note": "all big cores, fp16 arithmetic where supported; the table's figure is benchncnn's "
             "min, not avg; the Orin's GPU is not estimated (a CPU ratio says nothing of it)"},
)
PUBLISHED_KEYS = ("device", "cpu", "int8_dot", "network", "framework", "precision", "threads",
                  "ms", "source", "note")


# ------------------------------------------------------------------ models

def bundled_io() -> str:
    """The I/O type of the bundled int8 model, so the references are converted as it was."""
    from edge_seg import model_formats

    side = MODELS_DIR / "unet-mobilenetv2-camvid-idd-int8.json"
    try:
        return json.loads(side.read_text())["quantization"]["io"]
    except (OSError, KeyError, ValueError):
        return model_formats.INTEGER_IO[0]


def build_reference(name: str, side: int | None = None):
    """The reference network with random weights (``side``: another input size, for tests)."""
    import tf_keras as keras

    cls, default_side = REFERENCES[name]
    s = side or default_side
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, cls)(input_shape=(s, s, 3), alpha=1.0, weights=None,
                                            classes=1000)


def convert_graph(model, precision: str, io: str, frames: int = CALIBRATION_FRAMES) -> bytes:
    """fp32, or full-integer int8 calibrated on synthetic street scenes at the model's size."""
    from benchmarks.profile_stages import SYNTHETIC, calibration_frames
    from edge_seg.converters.tflite_export import convert, model_input_size

    if precision == "fp32":
        return convert(model, "fp32")
    cal = calibration_frames(SYNTHETIC, model_input_size(model), frames)
    return convert(model, "int8", cal.rep(), io=io)


def precision_of(path: Path) -> str:
    """"int8" for a model with integer activations, else "fp32" (fp16 weights run in fp32)."""
    from edge_seg import model_formats
    from edge_seg.backends.metadata import read_meta

    try:
        return "int8" if model_formats.get(read_meta(path)["variant"]).integer_activations else "fp32"
    except (UserError, KeyError):
        from edge_seg.backends.litert import load_graph
        dtype = load_graph(path).get_input_details()[0]["dtype"].__name__
        return "fp32" if dtype == "float32" else "int8"


def sha12(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def graph_entry(name: str, kind: str, network: str, precision: str, path: Path, content: bytes,
                note: str) -> dict:
    return {"name": name, "kind": kind, "network": network, "precision": precision,
            "path": str(path), "sha256": sha12(content), "note": note}


def cached(cache: Path, key: str, make) -> tuple[Path, bytes]:
    """The converted graph ``key`` from the cache folder, converting it when missing."""
    from edge_seg.io.publish import atomic_write_bytes

    path = cache / f"{key}.tflite"
    if not path.is_file():
        atomic_write_bytes(path, make())
    return path, path.read_bytes()


def reference_graphs(names, cache: Path, io: str) -> list[dict]:
    out = []
    for name in names:
        for precision in ("fp32", "int8"):
            key = f"{name}-{precision}-{io}"
            print(f"converting {name} ({precision})", file=sys.stderr, flush=True)
            path, content = cached(cache, key, lambda: convert_graph(build_reference(name), precision, io))
            out.append(graph_entry(f"{name} {precision}", "reference", name, precision, path, content,
                                   f"random weights, 1000 classes, {REFERENCES[name][1]}x{REFERENCES[name][1]}"))
    return out


def our_graphs(extra, cache: Path, io: str, defaults: bool = True) -> list[dict]:
    """The bundled .tflite models and the fp32 conversion of the bundled .keras, then --model."""
    from edge_seg.backends.metadata import model_sha256

    out = []
    tflites = sorted(MODELS_DIR.glob("*.tflite")) if defaults else []
    kerases = [(DEFAULT_KERAS, ("fp32",))] if defaults else []
    for p in map(Path, extra):
        if p.suffix == ".tflite":
            tflites.append(p)
        else:
            kerases.append((p, ("fp32", "int8")))
    for p in tflites:
        out.append(graph_entry(p.name, "ours", "", precision_of(p), p, p.read_bytes(),
                               f"sha256 {model_sha256(p)[:12]}"))
    for p, precisions in kerases:
        out += keras_graphs(p, precisions, cache, io)
    return out


def keras_graphs(path: Path, precisions, cache: Path, io: str) -> list[dict]:
    from edge_seg.backends.metadata import file_sha256
    from edge_seg.converters.tflite_export import load_keras_model

    digest, out, model = file_sha256(path)[:16], [], None
    for precision in precisions:
        def make():
            nonlocal model
            model = model or load_keras_model(path)
            return convert_graph(model, precision, io)
        print(f"converting {path.name} ({precision})", file=sys.stderr, flush=True)
        graph, content = cached(cache, f"{digest}-{precision}-{io}", make)
        out.append(graph_entry(f"{path.stem} {precision} (converted)", "ours", "", precision, graph,
                               content, f"{path.name} (sha256 {digest[:12]}) converted here"))
    return out


# ------------------------------------------------------------------ timing

def time_one(path: str, threads: int, runs: int, warmup: int) -> float:
    """Median ms of ``runs`` calls of one graph (the child process's whole work)."""
    from benchmarks.profile_stages import GraphRunner
    from edge_seg.runner import time_model

    runner = GraphRunner(Path(path).read_bytes(), threads, Path(path).name)
    return time_model(runner, [None], warmup=warmup, runs=runs)["infer_p50"]


def spawn_block(path: str, threads: int, runs: int, warmup: int) -> float:
    """One block of runs in a process of its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--time-one", path, "--threads", str(threads),
           "--runs", str(runs), "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"timing {Path(path).name} at {threads} threads failed: {tail}")
    return float(json.loads(lines[-1])["ms"])


def measure(paths: list[str], threads: list[int], rounds: int, block: int, pause: float,
            warmup: int = 3, run_block=spawn_block, sleep=time.sleep, seed: int = 0) -> dict:
    """{(path, threads): [block medians]}: ``rounds`` rounds, every (path, threads) pair once
    a round in a new random order, ``pause`` seconds after each block."""
    pairs = [(p, t) for p in paths for t in threads]
    blocks = {pair: [] for pair in pairs}
    rng = random.Random(seed)
    for r in range(rounds):
        rng.shuffle(pairs)
        for k, (p, t) in enumerate(pairs):
            print(f"\rround {r + 1}/{rounds}, block {k + 1}/{len(pairs)}", end="", file=sys.stderr, flush=True)
            blocks[(p, t)].append(run_block(p, t, block, warmup))
            sleep(pause)
    print(file=sys.stderr)
    return blocks


# ------------------------------------------------------------------ ratios and estimates

def nearest_threads(wanted: int, measured) -> int:
    """The measured thread count to take a published one's ratio from: the same count, else
    the nearest (a 4-thread figure takes the 2-thread ratio of a 2-core machine)."""
    return min(measured, key=lambda t: (abs(t - wanted), -t))


def ratios(graphs: list[dict], statistic: str = "median") -> list[dict]:
    """Our time over the reference's, per our model, reference network and thread count, in
    the model's own precision. ``statistic``: of the block medians, "median" (the default) or
    "min" (the fastest block, the one least slowed by other work on a shared machine)."""
    key = STATISTICS[statistic]
    refs = {(g["network"], g["precision"]): g for g in graphs if g["kind"] == "reference"}
    out = []
    for g in (g for g in graphs if g["kind"] == "ours"):
        for (network, precision), ref in sorted(refs.items()):
            if precision != g["precision"]:
                continue
            for t, ms in g[key].items():
                if t in ref[key]:
                    out.append({"model": g["name"], "sha256": g["sha256"], "precision": precision,
                                "reference": network, "threads": int(t), "ours_ms": ms,
                                "reference_ms": ref[key][t], "ratio": ms / ref[key][t]})
    return out


def estimates(ratio_rows: list[dict], published=PUBLISHED) -> list[dict]:
    """Published latency x measured ratio, for every published row and each of our models in
    that row's precision."""
    out = []
    for row in published:
        matching = [r for r in ratio_rows if r["reference"] == row["network"]
                    and r["precision"] == row["precision"]]
        for model in dict.fromkeys(r["model"] for r in matching):
            mine = {r["threads"]: r for r in matching if r["model"] == model}
            r = mine[nearest_threads(row["threads"], list(mine))]
            est = row["ms"] * r["ratio"]
            out.append({**row, "model": model, "sha256": r["sha256"], "ratio": r["ratio"],
                        "ratio_threads": r["threads"], "estimate_ms": est, "estimate_fps": 1000.0 / est})
    return out


def check_published(published=PUBLISHED) -> None:
    """Every row complete, sourced and about a reference this script builds."""
    for i, row in enumerate(published):
        missing = [k for k in PUBLISHED_KEYS if row.get(k) in (None, "")]
        if missing:
            raise ValueError(f"PUBLISHED row {i}: missing {', '.join(missing)}")
        if row["network"] not in REFERENCES or row["precision"] not in ("fp32", "int8"):
            raise ValueError(f"PUBLISHED row {i}: unknown network or precision")
        if not (row["ms"] > 0 and isinstance(row["threads"], int) and row["threads"] > 0):
            raise ValueError(f"PUBLISHED row {i}: ms and threads must be positive")


# ------------------------------------------------------------------ output

def measured_table(result: dict) -> list[str]:
    threads, key = result["threads"], STATISTICS[result.get("statistic", "median")]
    lines = ["| model | kind | precision | sha256 | " + " | ".join(f"{t} thr ms" for t in threads)
             + " | note |", "|---|---|---|---|" + "---|" * len(threads) + "---|"]
    for g in result["graphs"]:
        ms = " | ".join(f"{g[key][str(t)]:.2f}" for t in threads)
        lines.append(f"| {g['name']} | {g['kind']} | {g['precision']} | {g['sha256']} | {ms} | {g['note']} |")
    return lines


def ratio_table(ratio_rows: list[dict]) -> list[str]:
    lines = ["| our model | precision | reference | threads | ours ms | reference ms | ours / reference |",
             "|---|---|---|---|---|---|---|"]
    for r in ratio_rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['reference']} | {r['threads']} | "
                     f"{r['ours_ms']:.2f} | {r['reference_ms']:.2f} | {r['ratio']:.2f} |")
    return lines


def estimate_table(rows: list[dict]) -> list[str]:
    lines = ["| device (CPU) | published: reference, framework, precision, threads | ms | our model | "
             "ratio (threads here) | **estimate ms** | ~FPS | source |",
             "|---|---|---|---|---|---|---|---|"]
    for e in rows:
        lines.append(f"| {e['device']} ({e['cpu']}) | {e['network']}, {e['framework']}, {e['precision']}, "
                     f"{e['threads']} | {e['ms']:.2f} | {e['model']} | {e['ratio']:.2f} ({e['ratio_threads']}) | "
                     f"**~{e['estimate_ms']:.0f}** | {e['estimate_fps']:.0f} | {e['source']}: {e['note']} |")
    return lines


def published_table(published=PUBLISHED) -> list[str]:
    lines = ["| device | CPU | int8 dot-product | network | framework | precision | threads | ms | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in published:
        lines.append(f"| {p['device']} | {p['cpu']} | {'yes' if p['int8_dot'] else 'no'} | {p['network']} | "
                     f"{p['framework']} | {p['precision']} | {p['threads']} | {p['ms']:.2f} | "
                     f"{p['source']}: {p['note']} |")
    return lines


def markdown(result: dict, with_estimates: bool) -> str:
    from benchmarks.machine import header_text

    t = result["timing"]
    lines = [f"`{result['command']}`", "", "```", header_text(result["machine"]), "```", "",
             *measured_table(result), "",
             f"ms: {result.get('statistic', 'median')} of {t['rounds']} block medians of {t['block']} runs, "
             f"each block a process of its own, blocks in a new random order each round, {t['pause_s']} s apart; the model call "
             f"only (LiteRT, XNNPACK). Load average at start {result['load_avg_at_start']:.2f}.", "",
             *ratio_table(result["ratios"])]
    if with_estimates:
        lines += ["", "Estimates (published ms x ratio; not measurements):", "",
                  *estimate_table(result["estimates"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ command

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="another model (.tflite, .keras); repeatable")
    ap.add_argument("--no-defaults", action="store_true", help="time only the --model models")
    ap.add_argument("--references", default=",".join(REFERENCES), help="comma-separated, from: "
                    + ", ".join(REFERENCES))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=10, help="timed runs per block (one process)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs at the start of each block")
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between blocks")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "edge-seg-bench-reference"),
                    help="folder of converted graphs")
    ap.add_argument("--estimates", action="store_true", help="also print the device estimates")
    ap.add_argument("--statistic", default="median",
                    help="of each model's block medians, for the ratios: median, or min (the fastest "
                         "block, least slowed by other work on a busy machine)")
    ap.add_argument("--from", dest="from_json", default=None,
                    help="a --json file of an earlier run: recompute ratios and estimates, time nothing")
    ap.add_argument("--published", action="store_true", help="print the published figures and exit")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--time-one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=10, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def check_args(args) -> tuple[list[int], list[str]]:
    try:
        threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        raise UserError(f"--threads {args.threads}: expected counts such as 1,2") from None
    if not threads or threads[0] < 1:
        raise UserError(f"--threads {args.threads}: expected counts such as 1,2")
    refs = [r.strip() for r in args.references.split(",") if r.strip()]
    unknown = [r for r in refs if r not in REFERENCES]
    if unknown or not refs:
        raise UserError(f"--references {args.references}: choose from {', '.join(REFERENCES)}")
    if min(args.rounds, args.block) < 1 or args.warmup < 0 or args.pause < 0:
        raise UserError("--rounds and --block must be at least 1, --warmup and --pause at least 0")
    for m in map(Path, args.model):
        if not m.is_file():
            raise UserError(f"--model {m}: no such file")
        if m.suffix not in MODEL_SUFFIXES:
            raise UserError(f"--model {m}: expected one of {', '.join(MODEL_SUFFIXES)}")
    if args.no_defaults and not args.model:
        raise UserError("--no-defaults needs at least one --model")
    return threads, refs


def run(args) -> dict:
    from benchmarks.machine import print_header

    threads, refs = check_args(args)
    header = print_header(threads, "224x224 (references), each model's own")
    cache, io = Path(args.cache), bundled_io()
    graphs = reference_graphs(refs, cache, io) + our_graphs(args.model, cache, io, not args.no_defaults)
    load = os.getloadavg()[0]
    blocks = measure([g["path"] for g in graphs], threads, args.rounds, args.block, args.pause, args.warmup)
    for g in graphs:
        g["blocks"] = {str(t): blocks[(g["path"], t)] for t in threads}
        summarize(g)
    command = " ".join(["python benchmarks/bench_reference.py", *args.argv])
    return {"machine": header, "command": command, "threads": threads, "graphs": graphs,
            "io": io, "load_avg_at_start": load,
            "timing": {"rounds": args.rounds, "block": args.block, "warmup": args.warmup,
                       "pause_s": args.pause}}


def summarize(graph: dict) -> None:
    """A graph's ms per thread count from its block medians, by every STATISTICS entry."""
    graph["ms"] = {t: statistics.median(v) for t, v in graph["blocks"].items()}
    graph["ms_min"] = {t: min(v) for t, v in graph["blocks"].items()}


def load_result(path: str) -> dict:
    try:
        result = json.loads(Path(path).read_text())
        result["graphs"], result["threads"]  # noqa: B018 -- the keys every table needs
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--from {path}: not a result of this benchmark ({type(e).__name__})") from None
    for g in result["graphs"]:
        if g.get("blocks"):
            summarize(g)
    return result


def write_outputs(result: dict, text: str, json_path: str | None, markdown_path: str | None) -> None:
    """The tables to stdout, and each file asked for written whole or not at all."""
    from edge_seg.io.publish import atomic_write_bytes, atomic_write_json

    print(text)
    for path, write in ((json_path, lambda p: atomic_write_json(p, result, "--json")),
                        (markdown_path, lambda p: atomic_write_bytes(p, text.encode(), "--markdown"))):
        if path:
            write(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    try:
        if args.time_one:
            print(json.dumps({"ms": time_one(args.time_one, int(args.threads), args.runs, args.warmup)}))
            return 0
        check_published()
        if args.statistic not in STATISTICS:
            raise UserError(f"--statistic {args.statistic}: choose one of {', '.join(STATISTICS)}")
        if args.published:
            print("\n".join(published_table()))
            return 0
        result = load_result(args.from_json) if args.from_json else run(args)
        if any(STATISTICS[args.statistic] not in g for g in result["graphs"]):
            raise UserError(f"--statistic {args.statistic}: the run in --from has no block medians")
        result["statistic"] = args.statistic
        result["ratios"] = ratios(result["graphs"], args.statistic)
        result["estimates"] = estimates(result["ratios"])
        write_outputs(result, markdown(result, args.estimates), args.json, args.markdown)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

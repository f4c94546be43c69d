"""Runtime speed and memory targets, measured on demand on the CPU named in the header -- not a test.

    python -m benchmarks.bench_pipeline                       # bundled model, 300-frame 1024x512 video
    python -m benchmarks.bench_pipeline --model M.tflite --float-model M-fp32.tflite --threads 1,2
    python -m benchmarks.bench_pipeline --soak 10000          # + RSS over a 10,000-frame demo run
    python -m benchmarks.bench_pipeline --collect             # only: the cost of run --collect

Targets (ratios are measured in one run, interleaved round by round, because the machine
is shared and its speed drifts):

1. the full pipeline (decode, preprocess, infer, post-process, overlay, encode) on a
   1024x512-or-larger video runs at >= 85% of the FPS of invoking the model alone in a loop
   with the same number of threads; p50/p99 frame latency reported;
2. the drift check at --check-every 10 costs <= 10% of the pipeline's FPS;
3. a 10,000-frame soak on the demo source keeps RSS growth < 10 MB after warm-up;
4. (--collect) keeping frames to label (run --collect, one considered a second) costs <= 3%
   of the pipeline's FPS.

The video is the synthetic demo clip rendered to an .mp4 (or --video). Without
--float-model, the drift check compares with the fp16 variant beside the int8 model (the
bundled one has it); for a model without such a twin the drift target is skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: benchmarks.machine

from benchmarks.machine import print_header  # noqa: E402
from edge_seg.backends import bundled  # noqa: E402
from edge_seg.backends.metadata import read_meta  # noqa: E402
from edge_seg.io.publish import atomic_write_json
from edge_seg.run.command import RunOptions, run_pipeline  # noqa: E402
from edge_seg.segmenter import Segmenter  # noqa: E402

TARGET_RATIO, TARGET_DRIFT_COST, TARGET_RSS_MB, TARGET_COLLECT_COST = 0.85, 0.10, 10.0, 0.03


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def make_video(path: Path, frames: int, size=(1024, 512), seed: int = 11) -> Path:
    import cv2

    from edge_seg.scenes import FPS, render_clip
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, tuple(size))
    for scene in render_clip(seed, frames, size=tuple(size)):
        writer.write(scene.image)
    writer.release()
    return path


def float_twin(model: Path) -> Path | None:
    """The fp16 variant beside an int8 model (``X-int8.tflite`` -> ``X-fp16.tflite``): float
    maths, so it serves as the drift check's reference."""
    twin = model.with_name(model.name.replace("-int8.tflite", "-fp16.tflite"))
    return twin if twin != model and twin.is_file() else None


_SEGMENTERS: dict = {}


def model_alone_fps(model: Path, threads: int, frame: np.ndarray, seconds: float) -> dict:
    """set_tensor + invoke in a loop, nothing else."""
    key = (str(model), threads)
    if key not in _SEGMENTERS:
        _SEGMENTERS.clear()
        _SEGMENTERS[key] = Segmenter(model, threads=threads, log=lambda m: None)
    seg = _SEGMENTERS[key]
    x = seg.preprocess(frame)
    for _ in range(3):
        seg.infer(x)
    n, times = 0, []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or n < 10:
        t0 = time.perf_counter()
        seg.interpreter.set_tensor(seg.input_index, x)
        seg.interpreter.invoke()
        times.append(time.perf_counter() - t0)
        n += 1
    return {"fps": n / sum(times), "p50_ms": 1e3 * float(np.percentile(times, 50)),
            "p99_ms": 1e3 * float(np.percentile(times, 99))}


def pipeline(model: Path, video: Path, threads: int, out: Path | None, float_model: Path | None = None,
             every: int = 10, realtime: bool = False, collect: Path | None = None,
             collect_every: float = 1.0) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary
        s = run_pipeline(RunOptions(source=str(video), model=str(model), threads=threads, show=False,
                                    save=str(out) if out else None, overwrite=True,  # its own scratch file
                                    quiet=True, check_every=every,
                                    check_float=str(float_model) if float_model else None,
                                    realtime=realtime, collect=str(collect) if collect else None,
                                    collect_every=collect_every))
    frame = s["latency_ms"]["frame"]
    out_d = {"fps": s["fps"], "frames": s["frames"], "dropped": s["dropped_frames"],
             "frame_p50_ms": frame["p50"], "frame_p99_ms": frame["p99"],
             "stages_p50_ms": {k: round(v["p50"], 2) for k, v in s["latency_ms"].items()}}
    if collect:
        out_d["collected"] = s["collected"]
    if float_model:
        a = s["agreement"]
        out_d.update(checks=a["checks"], skipped_busy=a["skipped_busy"],
                     agreement=a["agreement_miou7"])
    return out_d


def soak(frames: int, warmup: int, threads: int | None, model: Path) -> dict:
    samples = []  # (frames done, RSS MB)
    stop = threading.Event()

    def watch(run):
        def sample():
            while not stop.is_set():
                done = run.renderer.frames if run.renderer is not None else 0
                samples.append((done, rss_mb()))
                stop.wait(0.5)
        threading.Thread(target=sample, daemon=True).start()

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        s = run_pipeline(RunOptions(source="demo", model=str(model), threads=threads, show=False,
                                    max_frames=frames, quiet=True), on_start=watch)
    stop.set()
    samples.append((s["frames"], rss_mb()))
    after = [(f, r) for f, r in samples if f >= warmup]
    base = after[0][1] if after else float("nan")
    return {"frames": s["frames"], "seconds": time.perf_counter() - t0, "fps": s["fps"],
            "warmup_frames": warmup, "rss_at_warmup_mb": base, "rss_end_mb": samples[-1][1],
            "rss_max_after_warmup_mb": max(r for _, r in after) if after else float("nan"),
            "growth_mb": samples[-1][1] - base,
            "max_growth_mb": (max(r for _, r in after) - base) if after else float("nan")}


def collect_cost(model: Path, video: Path, threads: int, rounds: int, every_s: float, tmp: Path) -> dict:
    """The pipeline with and without --collect, interleaved round by round; each collecting
    round starts a fresh folder, so every considered frame is written."""
    import shutil
    rows = []
    for r in range(rounds):
        plain = pipeline(model, video, threads, tmp / "out.mp4")
        folder = tmp / f"collect-{r}"
        kept = pipeline(model, video, threads, tmp / "out.mp4", collect=folder, collect_every=every_s)
        shutil.rmtree(folder, ignore_errors=True)
        c = kept["collected"]
        # the CPU collecting took, as a share of what the run had: steadier than FPS on a busy machine
        share = c["cpu_s"] / (kept["frames"] / kept["fps"] * (os.cpu_count() or 1))
        rows.append({"plain": plain, "collect": kept, "ratio": kept["fps"] / plain["fps"],
                     "cpu_share": share})
        print(f"threads {threads} round {r + 1}: pipeline {plain['fps']:.1f} FPS, collecting "
              f"{kept['fps']:.1f} FPS ({rows[-1]['ratio']:.1%}; {c['kept']} kept of {c['considered']} "
              f"considered, {c['dropped_full_queue']} dropped; collecting used {c['cpu_s'] * 1e3:.0f} ms "
              f"CPU = {share:.2%} of the CPUs)  [load {load_average()}]", flush=True)
    ratio = statistics.median(r["ratio"] for r in rows)
    share = statistics.median(r["cpu_share"] for r in rows)
    print(f"threads {threads}: collecting/pipeline FPS median {ratio:.1%} over {rounds} rounds, "
          f"one frame considered per {every_s:g} s of video (cost {1 - ratio:+.1%}, target <= "
          f"{TARGET_COLLECT_COST:.0%}: {'met' if 1 - ratio <= TARGET_COLLECT_COST else 'NOT met'}); "
          f"CPU share of collecting median {share:.2%}", flush=True)
    return {"rounds": rows, "ratio_median": ratio, "cpu_share_median": share, "collect_every_s": every_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="int8 model (default: the bundled one)")
    p.add_argument("--float-model", type=Path, help="its float twin for the drift-check cost")
    p.add_argument("--video", type=Path, help="a 1024x512+ video (default: the demo clip rendered)")
    p.add_argument("--frames", type=int, default=150, help="frames of the rendered video")
    p.add_argument("--threads", default=str(os.cpu_count() or 1), help="comma list, e.g. 1,2")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds (median reported); 0 = only the soak")
    p.add_argument("--alone-seconds", type=float, default=3.0, help="model-alone time per round")
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--soak", type=int, default=0, metavar="N", help="also soak N demo frames")
    p.add_argument("--warmup", type=int, default=500, help="soak frames before RSS is baselined")
    p.add_argument("--collect", action="store_true",
                   help="measure only the cost of run --collect (with/without, interleaved)")
    p.add_argument("--collect-every", type=float, default=1.0, help="its --collect-every")
    p.add_argument("--json", type=Path, help="write all numbers here")
    args = p.parse_args(argv)

    model = bundled.resolve_model(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="edge-seg-bench-"))
    print(f"model {model.name}, load average {load_average()}, {os.cpu_count()} CPUs")
    if args.rounds <= 0 and args.soak:
        args.frames = 2
    video = args.video or make_video(tmp / "demo-1024x512.mp4", args.frames)
    import cv2
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    n_video = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert ok, f"cannot read {video}"
    print(f"video {video.name}: {frame.shape[1]}x{frame.shape[0]}, {n_video} frames")
    model_size = "x".join(map(str, read_meta(model)["input_size"]))
    header = print_header([int(t) for t in args.threads.split(",")],
                          f"video {frame.shape[1]}x{frame.shape[0]} -> model {model_size}", model)
    float_model = (args.float_model or float_twin(model)) if args.rounds > 0 else None
    results = {"machine": header, "model": str(model), "float_model": str(float_model) if float_model else None,
               "video": {"path": str(video), "size": [frame.shape[1], frame.shape[0]], "frames": n_video},
               "load_average_start": load_average(), "by_threads": {}}
    if args.collect:
        results["collect"] = {t: collect_cost(model, video, int(t), args.rounds, args.collect_every, tmp)
                              for t in args.threads.split(",")}
        args.rounds = 0
    for threads in (int(t) for t in args.threads.split(",") if args.rounds > 0):
        rounds = []
        for r in range(args.rounds):
            alone = model_alone_fps(model, threads, frame, seconds=args.alone_seconds)
            pipe = pipeline(model, video, threads, tmp / "out.mp4")
            drift = pipeline(model, video, threads, tmp / "out.mp4", float_model, args.check_every) \
                if float_model else None
            row = {"alone": alone, "pipeline": pipe, "drift": drift,
                   "ratio": pipe["fps"] / alone["fps"],
                   "drift_cost": (1 - drift["fps"] / pipe["fps"]) if drift else None}
            rounds.append(row)
            print(f"threads {threads} round {r + 1}: model alone {alone['fps']:.1f} FPS, pipeline "
                  f"{pipe['fps']:.1f} FPS ({row['ratio']:.0%})" + (
                      f", with drift check {drift['fps']:.1f} FPS (cost {row['drift_cost']:+.1%}, "
                      f"{drift['checks']} checks, {drift['skipped_busy']} skipped busy)" if drift else "")
                  + f"  [load {load_average()}]", flush=True)
            print(f"    stage p50 ms: {pipe['stages_p50_ms']}", flush=True)
        live = pipeline(model, video, threads, None, realtime=True)
        ratio = statistics.median(r["ratio"] for r in rounds)
        cost = statistics.median(r["drift_cost"] for r in rounds) if float_model else None
        results["by_threads"][threads] = {"rounds": rounds, "ratio_median": ratio,
                                          "drift_cost_median": cost, "realtime": live}
        print(f"threads {threads}: pipeline/model-alone median {ratio:.0%} over {len(rounds)} rounds "
              f"(target >= {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})" + (
                  f"; drift-check cost median {cost:+.1%} (target <= {TARGET_DRIFT_COST:.0%}: "
                  f"{'met' if cost <= TARGET_DRIFT_COST else 'NOT met'})" if cost is not None else ""))
        print(f"threads {threads}: frame latency p50/p99, file mode (every frame, queues full) "
              f"{statistics.median(r['pipeline']['frame_p50_ms'] for r in rounds):.0f}/"
              f"{statistics.median(r['pipeline']['frame_p99_ms'] for r in rounds):.0f} ms; "
              f"live mode (--realtime, newest frame only) {live['frame_p50_ms']:.0f}/"
              f"{live['frame_p99_ms']:.0f} ms at {live['fps']:.1f} FPS, {live['dropped']} of "
              f"{live['frames'] + live['dropped']} frames dropped", flush=True)
        print(f"    live stage p50 ms: {live['stages_p50_ms']}", flush=True)
    if args.soak:
        s = soak(args.soak, args.warmup, None, model)
        results["soak"] = s
        print(f"soak: {s['frames']} demo frames in {s['seconds']:.0f} s ({s['fps']:.1f} FPS), RSS "
              f"{s['rss_at_warmup_mb']:.1f} MB after {s['warmup_frames']} frames -> {s['rss_end_mb']:.1f} MB "
              f"at the end (growth {s['growth_mb']:+.1f} MB, max {s['max_growth_mb']:+.1f} MB; target < "
              f"{TARGET_RSS_MB:g} MB: {'met' if s['max_growth_mb'] < TARGET_RSS_MB else 'NOT met'})")
    results["load_average_end"] = load_average()
    print(f"load average at the end {results['load_average_end']}")
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What `edge-seg run --serve` costs the pipeline, measured on demand -- not a test.

    python -m benchmarks.bench_serve                       # CamVid val frames as a 480x360 clip
    python -m benchmarks.bench_serve --video street.mp4 --threads 2 --rounds 3

Targets (pipeline FPS, every frame of a 480x360 street clip, 2 interpreter threads):

1. with --serve and nobody watching  >= 97% of the same run without --serve;
2. with one viewer on /stream.mjpg   >= 90% of the same run without --serve.

The three configurations run interleaved, round by round, so a shared machine's drifting
load affects them alike; the ratios are of the medians. The viewer reads the stream as fast
as it can (a browser on the same network). Beside FPS, the process's CPU time per frame
(user + system, all threads, the viewer's reading included) shows the cost where other
programs' load blurs the FPS.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_int8 import int8_dot_instructions
from benchmarks.bench_pipeline import Viewer, load_average
from edge_seg.backends import bundled
from edge_seg.io.publish import atomic_write_json
from edge_seg.device_profile import cpu_model
from edge_seg.run.command import RunOptions, run_pipeline

REPO = Path(__file__).resolve().parents[1]
CAMVID_VAL = REPO.parent / "shared" / "datasets" / "camvid" / "val"
TARGET_IDLE, TARGET_VIEWER = 0.97, 0.90
CONFIGS = ("plain", "serve", "viewer")


def camvid_clip(path: Path, fps: float = 15.0) -> Path:
    """The CamVid val frames (480x360 driving video) as one .mp4."""
    import cv2
    files = sorted(CAMVID_VAL.glob("*.png"))
    if not files:
        raise SystemExit(f"no CamVid val frames in {CAMVID_VAL}; give --video")
    first = cv2.imread(str(files[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                             (first.shape[1], first.shape[0]))
    for f in files:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


def encode_ms(frame, repeats: int = 50) -> float:
    """Median time of the viewers' JPEG encode (edge_seg.serve.server.FrameHub's settings)."""
    import cv2

    from edge_seg.serve.server import JPEG_QUALITY
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def one_run(config: str, model: Path, video: Path, threads: int) -> dict:
    viewers = []

    def on_start(run):
        if config == "viewer":
            viewers.append(Viewer(run.server.port))

    opts = RunOptions(source=str(video), model=str(model), threads=threads, show=False, quiet=True,
                      serve="127.0.0.1:0" if config != "plain" else None, no_profile=True)
    cpu0 = time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        s = run_pipeline(opts, on_start=on_start)
    out = {"fps": s["fps"], "frames": s["frames"],
           "cpu_ms_per_frame": 1e3 * (time.process_time() - cpu0) / max(1, s["frames"])}
    for v in viewers:
        v.close()
        out.update(viewer_parts=v.parts, viewer_mb=v.bytes / 1e6)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model (default: the bundled one)")
    p.add_argument("--video", type=Path, help="a street clip (default: CamVid val frames, 480x360)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    p.add_argument("--json", type=Path, help="write all numbers here")
    args = p.parse_args(argv)

    import cv2
    model = bundled.resolve_model(args.model)
    video = args.video or camvid_clip(Path(tempfile.mkdtemp(prefix="edge-seg-bench-")) / "camvid-val.mp4")
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert ok, f"cannot read {video}"
    vnni = int8_dot_instructions()
    print(f"CPU {cpu_model()} ({'VNNI yes' if any('vnni' in f for f in vnni) else 'VNNI no'}: "
          f"{', '.join(vnni) or 'no int8 dot product'}), {args.threads} threads, "
          f"load average {load_average()}")
    print(f"model {model.name}; clip {video.name}: {frame.shape[1]}x{frame.shape[0]}, {n_frames} frames, "
          f"every frame processed, no --save")
    rows = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        order = CONFIGS[r % 3:] + CONFIGS[:r % 3]  # rotate who goes first
        for config in order:
            rows[config].append(one_run(config, model, video, args.threads))
        print(f"round {r + 1}: " + ", ".join(
            f"{c} {rows[c][-1]['fps']:.2f} FPS ({rows[c][-1]['cpu_ms_per_frame']:.0f} CPU ms/frame)"
            for c in CONFIGS)
            + f" (viewer got {rows['viewer'][-1].get('viewer_parts', 0)} frames)"
            + f"  [load {load_average()}]", flush=True)
    med = {c: statistics.median(x["fps"] for x in rows[c]) for c in CONFIGS}
    cpu = {c: statistics.median(x["cpu_ms_per_frame"] for x in rows[c]) for c in CONFIGS}
    idle, viewer = med["serve"] / med["plain"], med["viewer"] / med["plain"]
    print(f"median FPS: without --serve {med['plain']:.2f}, --serve no viewer {med['serve']:.2f}, "
          f"one viewer {med['viewer']:.2f}")
    print(f"median CPU ms per frame: without --serve {cpu['plain']:.1f}, --serve no viewer "
          f"{cpu['serve']:.1f}, one viewer {cpu['viewer']:.1f} "
          f"({cpu['serve'] - cpu['plain']:+.1f} / {cpu['viewer'] - cpu['plain']:+.1f} ms)")
    enc = encode_ms(frame)
    print(f"JPEG encode of one {frame.shape[1]}x{frame.shape[0]} frame (what one viewer adds per "
          f"frame, off the loop's threads): median {enc:.2f} ms = {enc * med['plain'] / 10:.1f}% of "
          f"the frame time without --serve")
    print(f"--serve, no viewer / without: {idle:.3f} (target >= {TARGET_IDLE}: "
          f"{'met' if idle >= TARGET_IDLE else 'NOT met'})")
    print(f"one viewer / without:         {viewer:.3f} (target >= {TARGET_VIEWER}: "
          f"{'met' if viewer >= TARGET_VIEWER else 'NOT met'})")
    if args.json:
        atomic_write_json(args.json, {"cpu": cpu_model(), "int8_dot": vnni, "threads": args.threads,
                                      "model": str(model), "video": str(video), "rounds": rows,
                                      "median_fps": med, "median_cpu_ms_per_frame": cpu,
                                      "encode_ms": enc, "ratio_serve_idle": idle,
                                      "ratio_one_viewer": viewer, "load_average_end": load_average()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

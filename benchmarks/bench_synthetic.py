"""How fast the synthetic street scenes render (the demo source and the synthetic datasets).

    .venv/bin/python benchmarks/bench_synthetic.py [--size 1024x512] [--scenes 3] [--clip 16]
        [--json out.json]

Reports milliseconds per frame, wall clock and CPU time of this process: CPU time is the
steadier number when other jobs compete for the cores. Two paths: ``render_scene`` (a
fresh world per frame, as the dataset writer uses it) and ``render_clip`` (consecutive
frames of one world, as the demo source plays it; the first frame is left out).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import print_header  # noqa: E402


def per_frame_ms(frames) -> tuple[float, float]:
    """(wall, CPU) ms per item of the iterable ``frames``."""
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for _ in frames:
        n += 1
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def main(argv=None) -> dict:
    from edge_seg.preprocess import parse_size
    from edge_seg.scenes import render_clip, render_scene

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1024x512", help="frame WIDTHxHEIGHT (default: the demo size)")
    p.add_argument("--scenes", type=int, default=3, help="render_scene calls timed")
    p.add_argument("--clip", type=int, default=16, help="render_clip frames (the first is not timed)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    size = parse_size(args.size)
    header = print_header(1, size)

    render_scene(0, size)  # warm-up: imports, caches
    scene = per_frame_ms(render_scene(seed, size) for seed in range(1, 1 + args.scenes))
    clip = render_clip(5, args.clip, size=size)
    next(clip)
    frame = per_frame_ms(clip)
    print(f"render_scene: {scene[0]:.1f} ms wall / {scene[1]:.1f} ms CPU per frame ({args.scenes} scenes)")
    print(f"render_clip:  {frame[0]:.1f} ms wall / {frame[1]:.1f} ms CPU per frame ({args.clip - 1} frames)")
    result = {"machine": header, "size": list(size),
              "render_scene_ms": {"wall": scene[0], "cpu": scene[1], "frames": args.scenes},
              "render_clip_ms": {"wall": frame[0], "cpu": frame[1], "frames": args.clip - 1}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

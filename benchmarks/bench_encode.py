"""What a recording costs: CPU per frame and file size of the H.264 presets ``--save`` could
use, beside OpenCV's MPEG-4 Part 2, on the demo clip.

    .venv/bin/python benchmarks/bench_encode.py [--size 1024x512] [--frames 90] [--json out.json]

CPU time of this process (one encoder thread, as the recorder runs it) is the number that
matters on a device, where the cores belong to the model; the size is that of the whole clip.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import print_header  # noqa: E402

PRESETS = ("ultrafast", "superfast", "veryfast")


def encode_x264(frames, path: Path, preset: str, fps: int = 30) -> None:
    import av
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt, stream.options = "yuv420p", {"preset": preset, "crf": "23"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        out.mux(stream.encode())


def encode_mp4v(frames, path: Path, fps: int = 30) -> None:
    import cv2
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()


def cost(encode, frames, path: Path) -> dict:
    cpu = time.process_time()
    encode(frames, path)
    return {"cpu_ms_per_frame": (time.process_time() - cpu) / len(frames) * 1e3,
            "bytes": path.stat().st_size}


def main(argv=None) -> dict:
    from edge_seg.io.video import X264_OPTIONS
    from edge_seg.preprocess import parse_size
    from edge_seg.scenes import render_clip

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1024x512", help="frame WIDTHxHEIGHT (default: the demo size)")
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    size = parse_size(args.size)
    header = print_header(1, size)
    frames = [scene.image for scene in render_clip(0, args.frames, size=size)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            rows[f"H.264 {preset}"] = cost(lambda f, p: encode_x264(f, p, preset), frames,
                                           Path(tmp) / f"{preset}.mp4")
        rows["MPEG-4 Part 2 (OpenCV mp4v)"] = cost(encode_mp4v, frames, Path(tmp) / "mp4v.mp4")
    print(f"{args.frames} demo frames {size[0]}x{size[1]}; --save uses preset "
          f"{X264_OPTIONS['preset']}, CRF {X264_OPTIONS['crf']}")
    print("| encoder | CPU ms a frame | file size |\n| --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['cpu_ms_per_frame']:.1f} | {row['bytes'] / 1e6:.2f} MB |")
    result = {"machine": header, "size": list(size), "frames": args.frames, "encoders": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

"""Segment a camera, a video or the demo clip with the Python API: the loop of `edge-seg run`
in a few lines, without its capture/draw overlap, drift check or HUD.

    python examples/segment_video.py demo --headless --max-frames 100 --save out.mp4
    python examples/segment_video.py 0                   # camera 0, in a window (q quits)
    python examples/segment_video.py drive.mp4 --model models/unet-mobilenetv2-camvid-idd-fp16.tflite
"""
import argparse
import sys

import numpy as np

from edge_seg.errors import UserError
from edge_seg.labels import CATEGORY_NAMES
from edge_seg.segmenter import Segmenter
from edge_seg.io.sinks import FrameSink, Window, gui_available
from edge_seg.io.sources import open_source

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("source", help="camera index, video file, image folder or glob, URL, or 'demo'")
parser.add_argument("--model", help=".tflite or .onnx with its .json sidecar [default: the bundled int8 model]")
parser.add_argument("--save", help="write the overlays to a video (.mp4) or a folder of PNG frames")
parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames [default: the whole source]")
parser.add_argument("--headless", action="store_true", help="never open a window")


def main(args) -> None:
    seg = Segmenter(args.model)           # preprocessing, int8 input, argmax: all inside
    source = open_source(args.source)     # a missing camera or a bad file: UserError, now
    sink = FrameSink(args.save, fps=source.fps or 30.0) if args.save else None
    window = None if args.headless or not gui_available() else Window()
    pixels, frames = np.zeros(len(CATEGORY_NAMES), np.int64), 0
    with source:                          # a capture thread reads ahead; stopped on leaving
        while (frame := source.read()) is not None:
            result = seg(frame.image)     # .mask: (H, W) category ids; .overlay: a BGR image
            pixels += np.bincount(result.mask.ravel(), minlength=len(pixels))
            frames += 1
            if sink:
                sink.write(result.overlay)
            if window:
                window.put(result.overlay)
                if not window.pump():
                    break
            if frames == args.max_frames:
                break
    if sink:
        sink.close()                      # the video is complete (playable) only after this
    print(f"{frames} frames of {source.description} through {seg.describe()}")
    for name, share in zip(CATEGORY_NAMES, pixels / max(pixels.sum(), 1)):
        print(f"  {name:<13}{share:7.1%}")


if __name__ == "__main__":
    try:
        main(parser.parse_args())
    except UserError as e:                # bad input: one line, exit code 2 (as edge-seg)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)

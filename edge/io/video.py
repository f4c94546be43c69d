"""Video files for ``--save``: which writer, codec and container each extension gets, whether
a recording cut off by a kill or a power loss still plays, and the H.264 writer.

H.264 goes through PyAV (FFmpeg): the Raspberry Pi's hardware encoder where it opens, libx264
otherwise. MP4 and QuickTime are written fragmented, a fragment a second that is flushed to
the disk as it is finished, so a recording cut off at any moment plays up to its last
fragment; Matroska needs no index anyway. Without PyAV, OpenCV's MPEG-4 Part 2 writer takes
over: browsers do not play it, and its MP4 files play nothing until closed.

Long recordings can be cut into segments named after their start, so they sort by time:
``out-20261130T120000Z-0001.mp4`` (UTC, so a clock change of the time zone cannot reorder
them), the oldest removed first to keep a cap on their number or total size.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

FOLDER = "DIR"  # the table's key for a folder of PNG frames


@dataclass(frozen=True)
class Format:
    suffix: str           # ".mp4", or FOLDER
    writer: str           # "PyAV", "OpenCV" or "PNG"
    codec: str
    container: str
    survives_kill: bool   # does the partial file of a killed run play up to its last seconds
    fallback: str | None = None  # the OpenCV fourcc when PyAV is not installed
    fallback_survives_kill: bool = False


FORMATS = (
    Format(".mp4", "PyAV", "H.264", "fragmented MP4", True, "mp4v", False),
    Format(".m4v", "PyAV", "H.264", "fragmented MP4", True, "mp4v", False),
    Format(".mov", "PyAV", "H.264", "fragmented QuickTime", True, "mp4v", False),
    Format(".mkv", "PyAV", "H.264", "Matroska", True, "mp4v", True),
    Format(".avi", "OpenCV", "MJPG", "AVI", False),
    Format(FOLDER, "PNG", "PNG", "one file a frame", True),
)
VIDEO_FORMATS = {f.suffix: f for f in FORMATS if f.suffix != FOLDER}
CODEC_NAMES = {"H.264": "H.264", "MJPG": "MJPEG", "mp4v": "MPEG-4 Part 2", "PNG": "PNG"}

# tried in this order: the V4L2 memory-to-memory encoder is the Raspberry Pi's hardware one
ENCODERS = ("h264_v4l2m2m", "libx264")
# muxer options: a fragment starts at each keyframe and reaches the file when it is complete
MUXER_OPTIONS = {
    "mp4": {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"},
    "mkv": {"flush_packets": "1"},
}
KEYFRAME_EVERY_S = 1.0
# ultrafast costs about the CPU OpenCV's MPEG-4 writer did, for a file still smaller; slower
# presets shrink the file further at 2-3x the CPU, and on a device the cores belong to the
# model (docs/outputs.md: benchmarks/bench_encode.py's figures)
X264_OPTIONS = {"preset": "ultrafast", "crf": "23"}
HARDWARE_BITS_PER_PIXEL = 0.1  # a hardware encoder takes a bit rate, not a quality


def formats_markdown() -> str:
    """The table as docs/outputs.md shows it (a test keeps the two the same)."""
    yes = {True: "yes", False: "no"}
    rows = ["| `--save` | writer | codec | container | a killed recording plays | without PyAV |",
            "| --- | --- | --- | --- | --- | --- |"]
    for f in FORMATS:
        name = "a folder" if f.suffix == FOLDER else f"`{f.suffix}`"
        without = (f"OpenCV {CODEC_NAMES[f.fallback]}, a killed recording plays: "
                   f"{yes[f.fallback_survives_kill]}") if f.fallback else "the same"
        rows.append(f"| {name} | {f.writer} | {CODEC_NAMES[f.codec]} | {f.container} | "
                    f"{yes[f.survives_kill]} | {without} |")
    return "\n".join(rows) + "\n"


@lru_cache(maxsize=1)
def load_pyav():
    """The ``av`` module, or None when it is not installed (OpenCV then writes the videos)."""
    try:
        import av
    except ImportError:
        return None
    return av


def uses_pyav(suffix: str) -> bool:
    return VIDEO_FORMATS[suffix].writer == "PyAV" and load_pyav() is not None


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """4:2:0 chroma needs an even width and height; frames are padded up to them."""
    w, h = size
    return w + w % 2, h + h % 2


def _configure(context, name: str, size: tuple[int, int], fps: float) -> None:
    context.width, context.height = _even(size)
    context.pix_fmt = "yuv420p"
    context.time_base = 1 / _rate(fps)
    context.framerate = _rate(fps)
    context.gop_size = max(1, round(fps * KEYFRAME_EVERY_S))
    if name != "libx264":
        context.bit_rate = int(size[0] * size[1] * fps * HARDWARE_BITS_PER_PIXEL)


@lru_cache(maxsize=8)
def pick_encoder(size: tuple[int, int] = (640, 480), fps: float = 30.0) -> str | None:
    """The first H.264 encoder in ENCODERS that opens for this frame size (None: none, or no
    PyAV). Opening is the only test: a hardware encoder is listed by every FFmpeg build."""
    av = load_pyav()
    if av is None:
        return None
    for name in ENCODERS:
        try:
            context = av.CodecContext.create(name, "w")
            _configure(context, name, size, fps)
            context.open()
            return name
        except (av.FFmpegError, ValueError, OSError):
            continue
    return None


class EncoderError(Exception):
    """The encoder or the container refused: the sink says why in one line."""


class PyAVWriter:
    """H.264 into MP4 (fragmented), QuickTime or Matroska, frame by frame. The protocol is
    OpenCV's VideoWriter's: ``write`` returns False for a frame that was not written, and
    ``release`` finalises (raising EncoderError when the file could not be completed).
    After each fragment the file's data is flushed to the disk, so a power loss keeps what
    a kill keeps."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        av = self._av = load_pyav()
        self.encoder = pick_encoder(tuple(size), float(fps))
        if self.encoder is None:
            raise EncoderError(f"no H.264 encoder ({', '.join(ENCODERS)}) opens for "
                               f"{size[0]}x{size[1]} frames")
        self.size, self._pad = tuple(size), _even(size)
        self._frames, self._fd = 0, None
        kind = "mkv" if path.suffix.lower() == ".mkv" else "mp4"
        try:
            self._container = av.open(str(path), "w", options=MUXER_OPTIONS[kind])
        except (av.FFmpegError, OSError) as e:
            raise EncoderError(f"cannot create the video ({e})") from None
        try:
            self._stream = self._container.add_stream(
                self.encoder, rate=_rate(fps), options=X264_OPTIONS if self.encoder == "libx264" else {})
            _configure(self._stream.codec_context, self.encoder, size, fps)
            self._container.start_encoding()  # opens the encoder and writes the header now
            self._fd = os.open(path, os.O_RDONLY)
        except (av.FFmpegError, ValueError, OSError) as e:
            self._abandon()
            raise EncoderError(f"cannot start the {self.encoder} encoder ({e})") from None

    def describe(self) -> str:
        return f"H.264 {self.encoder}"

    def write(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        if (w, h) != self._pad:
            image = cv2.copyMakeBorder(image, 0, self._pad[1] - h, 0, self._pad[0] - w,
                                       cv2.BORDER_REPLICATE)
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = self._frames
        try:
            self._mux(self._stream.encode(frame))
        except (self._av.FFmpegError, OSError):
            return False
        self._frames += 1
        return True

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)
            if packet.is_keyframe:  # the fragment before it has just been written
                os.fsync(self._fd)

    def release(self) -> None:
        """Drain the encoder and write the trailer; EncoderError when that fails."""
        try:
            self._mux(self._stream.encode(None))
            self._container.close()
        except (self._av.FFmpegError, OSError) as e:
            raise EncoderError(f"cannot finalise the video ({e})") from None
        finally:
            self._abandon()

    def _abandon(self) -> None:
        try:
            self._container.close()
        except (self._av.FFmpegError, OSError):
            pass  # already failed; the sink removes the partial file
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- segments ---------------------------------------------------------------------------
SEGMENT_STAMP = "%Y%m%dT%H%M%SZ"


def segment_path(base: Path, start: float, index: int) -> Path:
    """``out.mp4`` -> ``out-20261130T120000Z-0001.mp4``: sorts by start time, then by index."""
    stamp = time.strftime(SEGMENT_STAMP, time.gmtime(start))
    return base.with_name(f"{base.stem}-{stamp}-{index:04d}{base.suffix}")


def segment_files(base: Path) -> list[Path]:
    """The published segments of ``base`` in its folder (earlier runs' too), oldest first."""
    pattern = re.compile(rf"{re.escape(base.stem)}-\d{{8}}T\d{{6}}Z-\d{{4,}}{re.escape(base.suffix)}")
    try:
        names = [p for p in base.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []
    return sorted(names, key=lambda p: p.name)


def over_cap(segments: list[Path], max_files: int | None, max_bytes: int | None) -> list[Path]:
    """The oldest segments to remove so the rest keep under the caps; the newest always stays."""
    sizes = []
    for p in segments:
        try:
            sizes.append(p.stat().st_size)
        except OSError:
            sizes.append(0)
    total, drop = sum(sizes), 0
    while drop < len(segments) - 1 and (
            (max_files is not None and len(segments) - drop > max_files)
            or (max_bytes is not None and total > max_bytes)):
        total -= sizes[drop]
        drop += 1
    return segments[:drop]

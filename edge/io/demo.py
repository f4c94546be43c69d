"""The demo source, played from a cache so that it measures the product, not the renderer.

Rendering a 1024x512 street frame costs more than segmenting it, so a demo rendered live in
the capture thread would report the renderer's speed. The clip is rendered once instead,
before the run starts, into a lossless video in the user's cache folder
(``edge_seg.io.publish.cache_dir("demo")``), and then decoded like any video file: a few
milliseconds a frame. The file name carries everything its frames depend on (size, seed,
renderer version, frame count) and a checksum of its bytes, so a changed renderer or a
damaged file is rendered again. A cache that cannot be written or read falls back to live
rendering with one warning line.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path
from typing import Callable

import cv2

from edge_seg import log as logs
from edge_seg.errors import OutputError
from edge_seg.io import publish, readers

# HuffYUV: lossless for BGR frames through OpenCV, in every FFmpeg build, and cheap to decode
# (about 8 ms for 1024x512 where PNG takes 15-20 ms)
CODEC, SUFFIX = "HFYU", ".avi"
BYTES_PER_FRAME = 0.75  # of the raw frame, a generous bound for the free-space check


def renderer_version() -> str:
    """A digest of the renderer's source: any change to how scenes are drawn is a new clip."""
    folder = Path(readers.demo_renderer().__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _crc(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


class DemoCache:
    """The cached clips of one (size, seed) in ``folder``."""

    def __init__(self, folder: Path, size=readers.DEMO_SIZE, seed: int = 0,
                 log: Callable[[str], None] | None = None):
        self.folder, self.size, self.seed = Path(folder), tuple(size), int(seed)
        self.log = log or logs.callback("demo")
        self.key = f"demo-{self.size[0]}x{self.size[1]}-seed{self.seed}-r{renderer_version()}"
        self.rendered = 0  # clips rendered by this object (a re-render after damage counts)

    def _entries(self) -> list[tuple[int, Path]]:
        """(frames, path) of this key's clips, most frames first."""
        pattern = re.compile(re.escape(self.key) + r"-(\d+)f-([0-9a-f]{8})" + re.escape(SUFFIX))
        found = [(int(m.group(1)), p) for p in self.folder.glob(self.key + "-*")
                 if (m := pattern.fullmatch(p.name))]
        return sorted(found, reverse=True)

    def find(self, frames: int) -> tuple[Path, int] | None:
        """An intact clip of at least ``frames`` frames; a damaged one is removed."""
        for count, path in self._entries():
            if count < frames:
                break
            if path.name.endswith(f"-{_crc(path)}{SUFFIX}"):
                return path, count
            self.log(logs.Line("demo.damaged", f"warning: the cached demo clip {path} is damaged; "
                               f"rendering it again", path=str(path)))
            path.unlink(missing_ok=True)
        return None

    def render(self, frames: int) -> tuple[Path, int]:
        """Render ``frames`` frames into the cache; OutputError when it cannot be written."""
        w, h = self.size
        label = f"demo cache {self.folder}"
        publish.check_writable_folder(self.folder, label, need=int(frames * w * h * 3 * BYTES_PER_FRAME))
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = publish.partial_path(self.folder / f"{self.key}{SUFFIX}")
        try:
            self._write(tmp, frames)
            final = self.folder / f"{self.key}-{frames}f-{_crc(tmp)}{SUFFIX}"
            publish.publish(tmp, final, label)
        except OSError as e:
            raise publish.output_error(label, e) from None
        finally:
            publish.discard(tmp if tmp.exists() else None)
        self.rendered += 1
        for _, older in self._entries():  # shorter clips of the same key are now redundant
            if older != final:
                older.unlink(missing_ok=True)
        return final, frames

    def _write(self, tmp: Path, frames: int) -> None:
        writer = cv2.VideoWriter(str(tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*CODEC),
                                 readers.DEMO_FPS, self.size)
        if not writer.isOpened():
            raise OutputError(f"demo cache {self.folder}: this OpenCV cannot write {CODEC} video")
        logs.status("demo.render", f"demo: rendering the clip once into {self.folder} ({frames} "
                    f"frames, {self.size[0]}x{self.size[1]}) before the run, so that capture is a "
                    "decode", frames=frames, folder=str(self.folder))
        try:
            clip = readers.demo_renderer().render_clip(self.seed, frames, size=self.size)
            for scene in logs.progress(clip, total=frames, desc="demo clip", unit="frame"):
                writer.write(scene.image)
        finally:
            writer.release()
        if _frame_count(tmp) != frames:
            raise OutputError(f"demo cache {self.folder}: cannot write (the clip came out short)")


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()


class CachedDemoReader(readers.CaptureReader):
    """A cached demo clip, played endlessly (it starts again after its last frame)."""

    def __init__(self, path: Path, size):
        super().__init__(str(path), cv2.CAP_FFMPEG, False,
                         f"demo (synthetic street clip, {size[0]}x{size[1]}, from the cache)")
        self.path = path

    def read(self):
        try:
            return super().read()
        except EOFError:
            if not self.reopen():
                raise
            return super().read()


def open_demo(size=readers.DEMO_SIZE, seed: int = 0, frames: int | None = None,
              folder: Path | None = None, log: Callable[[str], None] | None = None) -> readers.Reader:
    """The demo source: the cached clip (rendered now when missing or damaged), or live
    rendering with one warning when the cache cannot be used. ``frames``: how many the run
    needs at most (None: endless); the clip holds up to ``DemoReader.CLIP_FRAMES``."""
    want = min(frames or readers.DemoReader.CLIP_FRAMES, readers.DemoReader.CLIP_FRAMES)
    live = readers.DemoReader(size, seed)  # checks the renderer is there
    cache = DemoCache(folder or publish.cache_dir("demo"), size, seed, log)
    try:
        path, _ = cache.find(want) or cache.render(want)
        reader = CachedDemoReader(path, size)
        if reader.open():
            return reader
        raise OutputError(f"demo cache: {path} cannot be read")
    except (OSError, OutputError) as e:
        why = f"demo cache {cache.folder}: {publish.cause(e)}" if isinstance(e, OSError) else str(e)
        cache.log(f"warning: {why}; rendering the demo frames live instead (capture then "
                  "times the renderer)")
    return live

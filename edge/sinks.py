"""Where rendered frames go: a video file or a folder of PNGs (encoded in a writer thread
so encoding overlaps inference), and an on-screen window.

``--save out.mp4`` (.mp4 .m4v .mov .mkv: MPEG-4 Part 2; .avi: MJPEG) or ``--save DIR``
(frame_000000.png, ...). ``close()`` drains the queue and releases the writer, which is
what makes an .mp4 playable: the run calls it on every exit path, Ctrl-C and SIGTERM
included.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError
from .timing import LatencyStats

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_CODECS


def check_save_target(path: str | os.PathLike) -> Path:
    """Fail early (one line) when ``--save`` cannot be written."""
    path = Path(path).expanduser()
    if is_video_path(path):
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise UserError(f"--save {path}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UserError(f"--save {path}: folder {parent} is not writable")
        return path
    if path.suffix and not path.is_dir():
        raise UserError(f"--save {path}: unknown video type {path.suffix!r}; use "
                        f"{', '.join(VIDEO_CODECS)} or a folder for PNG frames")
    if path.exists() and not path.is_dir():
        raise UserError(f"--save {path}: exists and is not a folder")
    return path


class FrameSink:
    """Writes frames in its own thread; ``write`` blocks only when ``queue_size`` are pending."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, queue_size: int = 8):
        self.path = check_save_target(path)
        self.video = is_video_path(self.path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.frames = 0
        self.encode = LatencyStats()
        self._writer = None
        self._size = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()
        if not self.video:
            self.path.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"{self.path} ({'video' if self.video else 'PNG frames'})"

    def write(self, image: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(image)

    def close(self) -> None:
        """Write what is queued, then finalise the file."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _open(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        fourcc = cv2.VideoWriter.fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.path), fourcc, float(self.fps), (w, h))
        if not writer.isOpened():
            raise UserError(f"--save {self.path}: OpenCV cannot write this video type here")
        self._writer, self._size = writer, (w, h)

    def _run(self) -> None:
        try:
            while True:
                image = self._queue.get()
                if image is None:
                    break
                t0 = time.perf_counter()
                if self.video:
                    if self._writer is None:
                        self._open(image)
                    if (image.shape[1], image.shape[0]) != self._size:
                        image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
                    self._writer.write(image)
                else:
                    target = self.path / f"frame_{self.frames:06d}.png"
                    if not cv2.imwrite(str(target), image):
                        raise UserError(f"--save {self.path}: cannot write {target.name}")
                self.frames += 1
                self.encode.add((time.perf_counter() - t0) * 1e3)
        except BaseException as e:  # surfaced by write()/close()
            self._error = e
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._queue.get_nowait() is None:
                        break
                except queue.Empty:
                    break
        finally:
            if self._writer is not None:
                self._writer.release()


def gui_available() -> bool:
    """True when OpenCV can open a window here (a GUI build and a display)."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and not os.uname().sysname == "Darwin":
        return False
    try:
        cv2.namedWindow("edge-seg", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("edge-seg")
        return True
    except cv2.error:
        return False


class Window:
    """``--show``: the newest rendered image in a window, pumped from the main thread
    (GUI toolkits want that); q or Esc asks the run to stop."""
    TITLE = "edge-seg"

    def __init__(self):
        self._latest = None
        self._lock = threading.Lock()
        cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)

    def put(self, image: np.ndarray) -> None:
        with self._lock:
            self._latest = image

    def pump(self) -> bool:
        """Show the newest image; False when the user asked to quit."""
        with self._lock:
            image, self._latest = self._latest, None
        if image is not None:
            cv2.imshow(self.TITLE, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.TITLE)
        except cv2.error:
            pass

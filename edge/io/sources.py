"""Where frames come from: cameras, streams, video files, images and the synthetic demo.

``open_source(spec)`` opens (and checks) a source in the calling thread, so a missing
camera or a file that is not a video is a one-line UserError before anything else starts.
``Source.start()`` then runs a capture thread:

* live sources (camera, Pi camera through picamera2, RTSP/HTTP URL, GStreamer pipeline,
  or any source with ``realtime=True``) keep only the newest frame: a slow consumer drops
  frames (counted) instead of falling behind, so latency never grows;
* files, folders and the demo clip deliver every frame, in order (a small queue).

A live source that stops delivering (camera unplugged, stream cut) is reopened with
exponential backoff until it returns (or ``reconnect_timeout`` seconds pass); frames that
cannot be decoded are skipped. Everything is counted in ``Source.stats``.
"""
from __future__ import annotations

import glob
import os
import queue
import re
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_seg import log as logs
from edge_seg.errors import SourceLostError, UserError
from edge_seg.io import demo
from edge_seg.io.readers import (DEMO, DEMO_SIZE, IMAGE_SUFFIXES, PICAMERA2, CaptureReader,
                             ImagesReader, Reader, _camera_reader, _picamera2_index,
                             _picamera2_reader, opencv_name, read_image_file, shown, valid_frame)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
OPEN_TIMEOUT_S = 10.0
OPEN_GRACE_S = 2.0  # beyond a stream's own open timeout, before the opening is given up
READ_TIMEOUT_MS = 5000  # a stream silent this long is lost (and reconnected)
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 8.0


@dataclass
class Frame:
    image: np.ndarray   # BGR uint8 (H, W, 3)
    index: int          # position in the source (0-based, before --every)
    t_capture: float    # time.perf_counter() when the frame was read (paced file: when due)
    capture_ms: float   # time spent reading/decoding it


@dataclass
class SourceStats:
    frames_read: int = 0
    dropped: int = 0       # live: overwritten before the pipeline took them
    corrupt: int = 0       # unreadable/undecodable frames skipped
    disconnects: int = 0   # live source lost
    reconnects: int = 0    # ... and back
    offline_s: float = 0.0  # time spent waiting for it to come back
    warning: str | None = None  # a file that ended early or had frames it could not decode

    def as_dict(self) -> dict:
        return asdict(self)


# -- opening a source from the command line ------------------------------------------
def _has_gstreamer() -> bool:
    match = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(match and match.group(1).upper() != "NO")


def _image_paths(spec: str) -> list[Path] | None:
    """A folder or a glob pattern -> sorted image files; None when ``spec`` is neither."""
    path = Path(spec).expanduser()
    if path.is_dir():
        found = path.iterdir()
    elif any(c in spec for c in "*?["):
        found = (Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
    else:
        return None
    # a folder named like an image ("x.png") is no image
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def redact_url(spec: str) -> str:
    """A stream URL with its password hidden (``rtsp://user:***@host/``), for banners,
    messages and reports; anything else unchanged."""
    text = str(spec)
    if not text.lower().startswith(URL_SCHEMES):
        return text
    scheme, _, rest = text.partition("://")
    auth, at, host = rest.partition("@")
    if not at or ":" not in auth or "/" in auth:
        return text
    return f"{scheme}://{auth.partition(':')[0]}:***@{host}"


def kind_of(spec: str) -> str:
    """camera | demo | picamera2 | url | gstreamer | images | image | video."""
    spec = str(spec).strip()
    if spec.isdigit():
        return "camera"
    if spec.lower() == DEMO:
        return "demo"
    if spec.lower().partition(":")[0] == PICAMERA2:
        return "picamera2"
    if spec.lower().startswith(URL_SCHEMES):
        return "url"
    if "!" in spec and " " in spec:
        return "gstreamer"
    if Path(spec).expanduser().is_dir() or any(c in spec for c in "*?["):
        return "images"
    if Path(spec).suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "video"


def _url_reader(spec: str, timeout_s: float) -> CaptureReader:
    params = (cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)
    if timeout_s:  # else FFmpeg's own default
        params += (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000))
    reader = CaptureReader(opencv_name(spec, "--source"), cv2.CAP_FFMPEG, True, redact_url(spec),
                           params=params)
    t0 = time.monotonic()
    if not reader.open():
        took = time.monotonic() - t0
        if timeout_s and took >= 0.9 * timeout_s:
            raise UserError(f"{redact_url(spec)}: no answer within {timeout_s:g} s "
                            "(--open-timeout), or not a video stream")
        raise UserError(f"{redact_url(spec)}: cannot open the stream (it failed after "
                        f"{took:.1f} s: connection refused, no such stream, or not video)")
    return reader


def open_reader(spec: str, capture_size=None, demo_size=DEMO_SIZE, log=None,
                timeout_s: float = OPEN_TIMEOUT_S, demo_frames: int | None = None) -> Reader:
    """Open and check ``spec``; UserError with one line when it cannot be used.
    ``demo_frames``: at most how many frames a run reads from the demo (None: endless)."""
    spec = str(spec).strip()
    kind = kind_of(spec)
    if kind == "camera":
        return _camera_reader(int(spec), capture_size, log)
    if kind == "demo":
        return demo.open_demo(demo_size, frames=demo_frames, log=log)
    if kind == "picamera2":
        return _picamera2_reader(_picamera2_index(spec), capture_size)
    if kind == "url":
        return _url_reader(spec, timeout_s)
    if kind == "gstreamer":
        if not _has_gstreamer():
            raise UserError("this OpenCV build has no GStreamer support (opencv-python wheels "
                            "lack it); use the system OpenCV (python3-opencv) for pipelines")
        reader = CaptureReader(spec, cv2.CAP_GSTREAMER, True, "GStreamer pipeline")
        if not reader.open():
            raise UserError(f"the GStreamer pipeline did not start: {spec}")
        return reader
    if kind == "images":
        paths = _image_paths(spec)
        if not paths:
            raise UserError(f"{spec}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) found")
        return ImagesReader(paths, f"{len(paths)} images from {spec}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"{spec}: no such file (expected a camera index, video, image, folder, "
                        "glob, URL, GStreamer pipeline, 'picamera2' or 'demo')")
    if kind == "image":
        if read_image_file(path, cv2.IMREAD_UNCHANGED) is None:
            raise UserError(f"{shown(spec)}: not an image OpenCV can read")
        return ImagesReader([path], shown(path))
    reader = CaptureReader(opencv_name(path, "--source"), cv2.CAP_ANY, False, str(path))
    if not reader.open():
        raise UserError(f"{spec}: not a video OpenCV can read")
    ok, image = reader.cap.read()
    if not ok or valid_frame(image) is None:
        reader.close()
        raise UserError(f"{spec}: not a video OpenCV can read (no decodable frame)")
    reader._pending = image  # delivered first: a pipe cannot be reopened to read it again
    return reader


def _unblock_fifo(spec: str) -> None:
    """A named pipe's reader waits in open() for a writer: becoming one, and leaving at
    once, ends that wait (the reader sees an empty pipe)."""
    try:
        path = Path(spec).expanduser()
        if stat.S_ISFIFO(path.stat().st_mode):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waits any more


def open_within(spec: str, timeout_s: float, stopped: Callable[[], bool], **kw) -> Reader | None:
    """``open_reader`` in a helper thread, waited for here: a stop signal (``stopped()``)
    ends the wait (None), and so does ``timeout_s`` (UserError), even when the opening
    itself hangs in a library call (a named pipe nobody writes to, a camera that does
    not answer). An opening given up is closed when it finishes."""
    lock, done = threading.Lock(), threading.Event()
    box: dict = {}

    def target():
        try:
            got = open_reader(spec, timeout_s=timeout_s, **kw)
        except BaseException as e:  # noqa: BLE001 -- handed to the waiting thread
            got, box["error"] = None, e
        with lock:
            box["reader"] = got
            if box.get("abandoned") and got is not None:
                got.close()
        done.set()

    threading.Thread(target=target, name="open-source", daemon=True).start()
    # a stream has its own open timeout, which says more when it fires first
    limit = timeout_s + (OPEN_GRACE_S if kind_of(spec) == "url" else 0.0) if timeout_s else None
    t0 = time.monotonic()
    while not done.wait(0.05):
        late = limit is not None and time.monotonic() - t0 > limit
        if stopped() or late:
            with lock:
                box["abandoned"] = True
            _unblock_fifo(spec)
            if not late:
                return None
            raise UserError(f"{shown(redact_url(spec))}: did not open within {timeout_s:g} s "
                            "(a camera or stream that does not answer, or a named pipe nobody "
                            "writes to); see --open-timeout")
    if "error" in box:
        raise box["error"]
    return box["reader"]


# -- the capture thread ---------------------------------------------------------------
class _End:
    pass


_END = _End()


class Source:
    """A Reader run by a capture thread. ``read()`` -> the next Frame, or None at the end."""

    def __init__(self, reader: Reader, realtime: bool = False, every: int = 1,
                 reconnect_timeout: float = 0.0, queue_size: int = 2,
                 log: Callable[[str], None] | None = None):
        self.reader = reader
        self.live = reader.live
        self.newest_only = reader.live or realtime
        self.pace = realtime and not reader.live and reader.fps is not None
        self.every = max(1, int(every))
        self.reconnect_timeout = reconnect_timeout
        self.stats = SourceStats()
        self.log = log or logs.callback("source")
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    @property
    def description(self) -> str:
        return self.reader.description

    @property
    def fps(self) -> float | None:
        return self.reader.fps

    def start(self) -> "Source":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.reader.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # consumer side
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (newest one for live sources); None when the source ended or
        ``stop()`` was called; re-raises an error from the capture thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.newest_only:
            with self._cond:
                while self._newest is None and not self._ended and not self._stop.is_set():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(0.1 if left is None else min(0.1, left))
                item, self._newest = self._newest, None
        else:
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                    break
                except queue.Empty:
                    if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                        return None
        if item is None or isinstance(item, _End):
            if self._error is not None:
                raise self._error
            return None
        return item

    # producer side
    def _deliver(self, item) -> None:
        if self.newest_only:
            with self._cond:
                if isinstance(item, _End):
                    self._ended = True
                else:
                    if self._newest is not None:
                        self.stats.dropped += 1
                    self._newest = item
                self._cond.notify_all()
            return
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        index = 0
        period = 1.0 / self.reader.fps if self.pace else 0.0
        next_due = time.perf_counter()
        try:
            while not self._stop.is_set():
                if index % self.every:
                    if not self._skip():
                        break
                    index += 1
                    continue
                t0 = time.perf_counter()
                try:
                    image = self._read_one()
                except EOFError:
                    self._note_damage()
                    break
                t1 = time.perf_counter()
                if image is _RETRY:
                    continue
                index += 1
                image = valid_frame(image)
                if image is None:
                    self.stats.corrupt += 1
                    continue
                self.stats.frames_read += 1
                t_capture = t1
                if period:
                    next_due += period
                    delay = next_due - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_due = time.perf_counter()
                    # a camera delivers the frame at its due time: the wait is not latency
                    t_capture = time.perf_counter()
                self._deliver(Frame(image, index - 1, t_capture, (t1 - t0) * 1e3))
        except BaseException as e:  # surfaced to the consumer by read()
            self._error = e
        finally:
            self._deliver(_END)

    def _note_damage(self) -> None:
        """At the end of a file: say so when it ended before its announced length or had
        frames that could not be decoded (a clean end otherwise reads the same)."""
        parts = []
        if self.reader.ended_early:
            parts.append(f"the source ended early, {self.reader.ended_early} (truncated or damaged)")
        if self.stats.corrupt:
            parts.append(f"{self.stats.corrupt} frame(s) of the source could not be decoded")
        if parts and not self.live:
            self.stats.warning = "; ".join(parts)
            self.log(logs.Line("source.incomplete", f"warning: {self.description}: "
                               f"{self.stats.warning}", corrupt=self.stats.corrupt))

    def _skip(self) -> bool:
        """Pass over one frame (--every); False at the end of the source."""
        try:
            self.reader.skip()
        except EOFError:
            return False
        except ConnectionError:
            pass  # a live source: noticed (and reconnected) on the next real read
        return True

    def _read_one(self):
        try:
            return self.reader.read()
        except ConnectionError as e:
            if not self.live:
                raise EOFError from e
            if self._reconnect(str(e)):
                return _RETRY
            raise EOFError from e

    def _reconnect(self, why: str) -> bool:
        """Backoff until the live source delivers again; False on stop; SourceLostError
        after ``reconnect_timeout``."""
        self.stats.disconnects += 1
        self.log(logs.Line("source.lost", f"warning: {why}; reconnecting (backoff "
                           f"{BACKOFF_START_S:g}..{BACKOFF_MAX_S:g} s)",
                           disconnects=self.stats.disconnects))
        t0 = time.monotonic()
        delay = BACKOFF_START_S
        try:
            while not self._stop.is_set():
                if self.reconnect_timeout and time.monotonic() - t0 > self.reconnect_timeout:
                    # not the end of a file: a supervisor must be able to tell (exit code 3)
                    raise SourceLostError(f"{self.description} was lost and did not come back "
                                          f"within --reconnect-timeout {self.reconnect_timeout:g} s")
                if self._stop.wait(delay):
                    return False
                if self.reader.reopen():
                    self.stats.reconnects += 1
                    offline = time.monotonic() - t0
                    self.log(logs.Line("source.back", f"{self.description} is back after "
                                       f"{offline:.1f} s", offline_s=offline))
                    return True
                delay = min(BACKOFF_MAX_S, delay * 2)
            return False
        finally:
            self.stats.offline_s += time.monotonic() - t0


class _Retry:
    pass


_RETRY = _Retry()


def open_source(spec: str, realtime: bool = False, every: int = 1, reconnect_timeout: float = 0.0,
                capture_size=None, log=None, open_timeout: float = OPEN_TIMEOUT_S,
                stopped: Callable[[], bool] | None = None,
                max_frames: int | None = None) -> Source | None:
    """Open and check ``spec`` now, waiting at most ``open_timeout`` seconds (0: no limit);
    None when ``stopped()`` turns true first. Call ``start()`` to begin capturing.
    ``max_frames``: the run stops after that many (None or 0: no limit)."""
    reader = open_within(spec, open_timeout, stopped or (lambda: False),
                         capture_size=capture_size, log=log,
                         demo_frames=max_frames * max(1, every) if max_frames else None)
    if reader is None:
        return None
    return Source(reader, realtime=realtime, every=every, reconnect_timeout=reconnect_timeout, log=log)

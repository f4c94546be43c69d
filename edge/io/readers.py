"""Readers: one frame at a time from a camera, a Pi camera (picamera2), a stream, a video
file, images or the synthetic demo clip, with no threads. ``edge_seg.io.sources`` picks the reader
for a ``--source`` and runs it in a capture thread."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from edge_seg.errors import UserError

# FFmpeg's own log lines ("moov atom not found", "error while decoding MB ...") would break
# the one-line error promise; bad files and frames are reported (and counted) here instead.
# Read when OpenCV first opens a video, so this must run before any VideoCapture.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEMO = "demo"
DEMO_SIZE = (1024, 512)
DEMO_FPS = 30.0
MAX_CONSECUTIVE_BAD = 25  # undecodable frames in a row before a file is considered ended


def valid_frame(image) -> np.ndarray | None:
    """A BGR uint8 (H, W, 3) frame, converted from gray/BGRA; None when unusable."""
    if not isinstance(image, np.ndarray) or image.size == 0 or image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        return None
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def shown(path) -> str:
    """A file name as it can be printed: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def opencv_name(path, label: str | None = None) -> str:
    """``path`` for an OpenCV call that takes a file name. OpenCV cannot take a name that
    is not valid UTF-8 (some builds crash on one): a UserError naming it instead."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{label + ' ' if label else ''}{shown(name)}: the name is not valid "
                        "UTF-8, which OpenCV cannot open or write; rename it") from None
    return name


def read_image_file(path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """An image file decoded from its bytes (any file name works); None when unreadable."""
    try:
        data = np.fromfile(os.fsencode(str(path)), np.uint8)
    except (OSError, ValueError):
        return None
    return cv2.imdecode(data, flags) if data.size else None


# -- readers: one frame at a time, no threads ---------------------------------------
class Reader:
    """``read()`` -> image, None for a bad frame (skipped), or raises EOFError at the end."""
    live = False
    fps: float | None = None
    description = "?"
    ended_early: str | None = None  # set when a file stops before its announced end

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def skip(self) -> None:
        """Advance one frame without needing its pixels (--every)."""
        self.read()

    def reopen(self) -> bool:
        """Live readers: try to reconnect; True when frames flow again."""
        return False

    def close(self) -> None:
        pass


def quiet_opencv():
    """OpenCV's own WARN lines would break the one-line error promise."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


class CaptureReader(Reader):
    """cv2.VideoCapture over a camera index, a video file, a URL or a GStreamer pipeline."""

    def __init__(self, target, api: int, live: bool, description: str,
                 params: tuple = (), capture_size: tuple[int, int] | None = None,
                 opener: Callable | None = None):
        self.target, self.api, self.live = target, api, live
        self.description = description
        self.params = list(params)
        self.capture_size = capture_size
        self._opener = opener or cv2.VideoCapture
        self.cap = None
        self.fps = None
        self.frame_count = 0

    def open(self) -> bool:
        quiet_opencv()
        cap = self._opener(self.target, self.api, self.params) if self.params else self._opener(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            return False
        if self.capture_size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.capture_size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.capture_size[1])
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.cap = cap
        self._bad_run = 0
        self._pending = None
        return True

    def read(self):
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self.cap.read()
        if ok and image is not None:
            self._bad_run = 0
            return image
        if self.live:
            raise ConnectionError(f"{self.description} stopped delivering frames")
        # a file: the end, or a frame the decoder could not read?
        pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES) or 0)
        self._bad_run += 1
        if self.frame_count and pos < self.frame_count - 1:
            if self._bad_run < MAX_CONSECUTIVE_BAD:
                return None
            # not its end: a truncated or damaged file, which must not read as a clean end
            self.ended_early = f"at frame {pos} of {self.frame_count}"
        raise EOFError

    def skip(self):
        if not self.cap.grab():
            self.read()

    def reopen(self) -> bool:
        self.close()
        if not self.open():
            return False
        ok, image = self.cap.read()
        if not ok or image is None:
            self.close()
            return False
        self._pending = image  # the first frame back is delivered by the next read()
        return True

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImagesReader(Reader):
    """Image files, in order; an unreadable one is a bad frame."""

    def __init__(self, paths: list[Path], description: str):
        self.paths = paths
        self.description = description
        self.position = 0

    def read(self):
        if self.position >= len(self.paths):
            raise EOFError
        path = self.paths[self.position]
        self.position += 1
        return read_image_file(path)

    def skip(self):
        if self.position >= len(self.paths):
            raise EOFError
        self.position += 1


def demo_renderer():
    """The scene renderer behind ``demo``, imported only when the demo source opens."""
    from edge_seg import scenes
    return scenes


class DemoReader(Reader):
    """The synthetic street clip (the ``demo`` renderer), endless (clip after clip)."""
    CLIP_FRAMES = 300

    def __init__(self, size=DEMO_SIZE, seed: int = 0):
        try:
            synthetic = demo_renderer()
        except ImportError as e:
            raise UserError(f"the demo source needs the scene renderer ({e})") from None
        self.synthetic = synthetic
        self.size, self.seed = tuple(size), seed
        self.fps = DEMO_FPS
        self.description = f"demo (synthetic street clip, {size[0]}x{size[1]})"
        self._clips = self._scenes()

    def _scenes(self) -> Iterator:
        seed = self.seed
        while True:
            yield from self.synthetic.render_clip(seed, self.CLIP_FRAMES, size=self.size)
            seed += 1

    def read(self):
        return next(self._clips).image


class PiCamera2Reader(Reader):
    """A Raspberry Pi camera (CSI, served by libcamera) through the ``picamera2`` library,
    which Raspberry Pi OS ships as a system package: OpenCV from pip cannot read these
    cameras (it has no libcamera or GStreamer). Only the small part of picamera2 used here
    is needed: ``Picamera2(camera_num)``, ``global_camera_info()``,
    ``create_video_configuration``, ``configure``, ``start``, ``capture_array(wait=False)``
    with ``wait(job, timeout)``, ``stop`` and ``close``."""
    live = True

    def __init__(self, index: int = 0, capture_size=None, module=None):
        self.index, self.capture_size = index, capture_size
        self.picamera2 = module or import_picamera2()
        self.description = f"Pi camera {index} (picamera2)"
        self.cam = None

    def open(self) -> bool:
        # RGB888 is stored B, G, R per pixel: the order OpenCV and the pipeline expect
        main = {"format": "RGB888"}
        if self.capture_size:
            main["size"] = tuple(int(v) for v in self.capture_size)
        cam = None
        try:
            cam = self.picamera2.Picamera2(camera_num=self.index)
            cam.configure(cam.create_video_configuration(main=main))
            cam.start()
        except Exception:  # noqa: BLE001 -- libcamera reports a busy or missing camera many ways
            _close_quietly(cam)
            return False
        self.cam = cam
        return True

    def read(self):
        try:
            job = self.cam.capture_array("main", wait=False)
            # a timeout instead of blocking forever when the camera stops (cable, power)
            return self.cam.wait(job, timeout=PICAMERA2_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001
            raise ConnectionError(f"{self.description} stopped delivering frames "
                                  f"({type(e).__name__})") from None

    def reopen(self) -> bool:
        self.close()
        return self.open()

    def close(self):
        _close_quietly(self.cam)
        self.cam = None


PICAMERA2 = "picamera2"
PICAMERA2_TIMEOUT_S = 2.0
PICAMERA2_HELP = ("on Raspberry Pi OS: sudo apt install python3-picamera2, and run edge-seg from "
                  "a venv made with 'python3 -m venv --system-site-packages'")


def import_picamera2():
    """The picamera2 module; UserError saying how to install it when it is absent."""
    try:
        import picamera2
    except ImportError as e:
        raise UserError(f"--source picamera2 needs the picamera2 library ({e}); "
                        f"{PICAMERA2_HELP}") from None
    return picamera2


def _close_quietly(cam) -> None:
    if cam is None:
        return
    for step in ("stop", "close"):
        try:
            getattr(cam, step)()
        except Exception:  # noqa: BLE001 -- closing a camera that already went away
            pass


def _picamera2_index(spec: str) -> int:
    """'picamera2' -> 0, 'picamera2:1' -> 1; UserError for anything else after the colon."""
    _, _, rest = spec.partition(":")
    if not rest:
        return 0
    if not rest.isdigit():
        raise UserError(f"--source {spec}: expected picamera2 or picamera2:N (N = camera number)")
    return int(rest)


def _picamera2_reader(index: int, capture_size=None, module=None) -> PiCamera2Reader:
    module = module or import_picamera2()
    try:
        cameras = len(module.Picamera2.global_camera_info())
    except Exception:  # noqa: BLE001 -- libcamera not running, no permission, ...
        cameras = None
    if cameras is not None and index >= cameras:
        raise UserError(f"no Pi camera {index}: libcamera lists {cameras} camera"
                        f"{'' if cameras == 1 else 's'} (check the ribbon cable and "
                        "'rpicam-hello --list-cameras')")
    reader = PiCamera2Reader(index, capture_size, module)
    if not reader.open():
        raise UserError(f"Pi camera {index} cannot be opened through picamera2 (busy? another "
                        "program, e.g. rpicam-vid, may hold it)")
    return reader


def _picamera2_fallback(index: int, capture_size=None) -> PiCamera2Reader | None:
    """``--camera N`` on a Raspberry Pi whose camera is not a V4L2 capture device: the Pi
    camera N through picamera2 when the library is installed and lists that camera."""
    try:
        import picamera2
        if index >= len(picamera2.Picamera2.global_camera_info()):
            return None
    except Exception:  # noqa: BLE001 -- not a Pi, or libcamera unusable: keep the V4L2 error
        return None
    reader = PiCamera2Reader(index, capture_size, picamera2)
    return reader if reader.open() else None



# -- the camera index of --source N ---------------------------------------------------
def _camera_reader(index: int, capture_size=None, log=None):
    linux = sys.platform.startswith("linux")
    reader = CaptureReader(index, cv2.CAP_V4L2 if linux else cv2.CAP_ANY, True, f"camera {index}",
                           capture_size=capture_size)
    if not reader.open():
        fallback = _picamera2_fallback(index, capture_size) if linux else None
        if fallback is not None:
            if log:
                log(f"camera {index}: no V4L2 capture device; using the Pi camera {index} "
                    "through picamera2")
            return fallback
        device = Path(f"/dev/video{index}")
        if linux and not device.exists():
            raise UserError(f"no camera at index {index} ({device} does not exist; "
                            "list cameras with 'v4l2-ctl --list-devices')")
        raise UserError(f"camera {index} cannot be opened (busy, or not a capture device)")
    return reader

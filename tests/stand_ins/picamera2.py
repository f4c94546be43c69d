"""A stand-in for the ``picamera2`` library: the part edge_seg.io.readers uses, so the Pi camera
source is tested anywhere. Put this folder first on sys.path (or PYTHONPATH).

Behaviour is set through environment variables, so a subprocess (``edge-seg run``) can be
driven too:

* FAKE_PICAMERA2_CAMERAS: how many cameras libcamera lists (default 1);
* FAKE_PICAMERA2_STALL_AFTER: frames a camera delivers before it stops (default: never);
* FAKE_PICAMERA2_FPS: frames per second it delivers, as a sensor would (default 30);
* FAKE_PICAMERA2_LOG: a file that receives one line per call (open, configure, start, stop,
  close), for tests to count.

Frames are BGR uint8 (the layout of picamera2's "RGB888"): a horizontal gradient in blue,
the frame number in green, the camera number in red.
"""
from __future__ import annotations

import os
import time

import numpy as np

DEFAULT_SIZE = (640, 480)


def _log(line: str) -> None:
    path = os.environ.get("FAKE_PICAMERA2_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class _Job:
    def __init__(self, result):
        self.result = result


class Picamera2:
    opened = 0  # Picamera2 objects made in this process

    def __init__(self, camera_num: int = 0):
        if camera_num >= len(self.global_camera_info()):
            raise IndexError(f"no camera {camera_num}")
        type(self).opened += 1
        self.camera_num = camera_num
        self.size = DEFAULT_SIZE
        self.started = self.closed = False
        self.frames = 0
        stall = os.environ.get("FAKE_PICAMERA2_STALL_AFTER")
        # each opening delivers this many frames before stalling (so a reopen recovers)
        self.stall_after = int(stall) if stall else None
        _log(f"open {camera_num}")

    @staticmethod
    def global_camera_info() -> list[dict]:
        n = int(os.environ.get("FAKE_PICAMERA2_CAMERAS", "1"))
        return [{"Model": "imx708", "Num": i, "Location": 2, "Id": f"/base/fake/imx708@{i}"}
                for i in range(n)]

    def create_video_configuration(self, main=None, **kwargs) -> dict:
        main = dict(main or {})
        main.setdefault("size", DEFAULT_SIZE)
        main.setdefault("format", "XBGR8888")
        return {"use_case": "video", "main": main}

    def configure(self, config: dict) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if config["main"]["format"] != "RGB888":
            raise ValueError("this stand-in makes RGB888 frames only")
        self.size = tuple(config["main"]["size"])
        _log(f"configure {self.size[0]}x{self.size[1]}")

    def start(self) -> None:
        self.started = True
        _log("start")

    def capture_array(self, name: str = "main", wait=None, signal_function=None):
        if not self.started:
            raise RuntimeError("Camera has not been started")
        if self.stall_after is not None and self.frames >= self.stall_after:
            result = TimeoutError("frame did not arrive")
        else:
            self.frames += 1
            w, h = self.size
            frame = np.empty((h, w, 3), np.uint8)
            frame[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
            frame[..., 1] = self.frames % 256
            frame[..., 2] = 40 * self.camera_num
            result = frame
        job = _Job(result)
        return job if wait is False else self.wait(job)

    def wait(self, job: _Job, timeout=None):
        time.sleep(1.0 / float(os.environ.get("FAKE_PICAMERA2_FPS", "30")))
        if isinstance(job.result, Exception):
            raise job.result
        return job.result

    def stop(self) -> None:
        self.started = False
        _log("stop")

    def close(self) -> None:
        self.closed = True
        _log("close")

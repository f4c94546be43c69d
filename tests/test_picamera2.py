"""The Raspberry Pi camera source (``--source picamera2[:N]``, ``--camera N`` fallback),
run against the picamera2 stand-in in tests/stand_ins (no camera, no libcamera needed)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge_seg.io import readers, sources
from edge_seg.errors import UserError

from conftest import edge_seg

STAND_INS = Path(__file__).resolve().parent / "stand_ins"


@pytest.fixture
def picamera2(monkeypatch, tmp_path):
    """The stand-in importable as ``picamera2``; its calls logged to a file."""
    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_PICAMERA2_LOG", str(log))
    monkeypatch.delenv("FAKE_PICAMERA2_STALL_AFTER", raising=False)
    monkeypatch.delenv("FAKE_PICAMERA2_CAMERAS", raising=False)
    import picamera2 as module
    assert Path(module.__file__).parent == STAND_INS
    yield log
    sys.modules.pop("picamera2", None)


@pytest.fixture
def no_picamera2(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError


def _frames(source, n):
    out = []
    while len(out) < n and (frame := source.read(timeout=10)) is not None:
        out.append(frame)
    return out


def test_kind_and_index():
    assert sources.kind_of("picamera2") == sources.kind_of("picamera2:1") == "picamera2"
    assert sources.kind_of("PiCamera2") == "picamera2"
    assert readers._picamera2_index("picamera2") == 0
    assert readers._picamera2_index("picamera2:2") == 2
    with pytest.raises(UserError, match="expected picamera2 or picamera2:N"):
        readers._picamera2_index("picamera2:front")


def test_frames_flow_through_the_live_source_machinery(picamera2):
    with sources.open_source("picamera2", capture_size=(320, 240)) as src:
        frames = _frames(src, 5)
    assert src.live and src.newest_only and src.description == "Pi camera 0 (picamera2)"
    assert len(frames) == 5
    for f in frames:
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert f.image[0, 0, 0] == 0 and f.image[0, -1, 0] == 255  # BGR as delivered
    greens = [int(f.image[0, 0, 1]) for f in frames]
    assert greens == sorted(greens) and len(set(greens)) == 5  # newer frames, in order
    assert src.stats.frames_read >= 5
    calls = picamera2.read_text().splitlines()
    assert calls[:3] == ["open 0", "configure 320x240", "start"]
    assert calls[-2:] == ["stop", "close"]  # the camera is released


def test_second_camera_and_missing_camera(picamera2, monkeypatch):
    monkeypatch.setenv("FAKE_PICAMERA2_CAMERAS", "2")
    with sources.open_source("picamera2:1") as src:
        (frame,) = _frames(src, 1)
    assert frame.image[0, 0, 2] == 40  # camera 1's mark
    with pytest.raises(UserError, match=r"no Pi camera 2: libcamera lists 2 cameras"):
        sources.open_reader("picamera2:2")
    monkeypatch.setenv("FAKE_PICAMERA2_CAMERAS", "0")
    with pytest.raises(UserError, match=r"no Pi camera 0: libcamera lists 0 cameras"):
        sources.open_reader("picamera2")


def test_a_stalled_camera_is_reopened(picamera2, monkeypatch):
    monkeypatch.setenv("FAKE_PICAMERA2_STALL_AFTER", "3")
    logs = []
    with sources.open_source("picamera2", log=logs.append) as src:
        frames = _frames(src, 5)
    assert len(frames) == 5
    assert src.stats.disconnects >= 1 and src.stats.reconnects >= 1
    assert any("stopped delivering frames (TimeoutError)" in m for m in logs)
    assert picamera2.read_text().splitlines().count("open 0") >= 2


def test_absent_library_is_one_line(no_picamera2):
    with pytest.raises(UserError) as e:
        sources.open_reader("picamera2")
    message = str(e.value)
    assert "\n" not in message
    assert "sudo apt install python3-picamera2" in message and "--system-site-packages" in message


def test_camera_index_falls_back_to_picamera2_when_no_v4l2_camera_opens(picamera2, monkeypatch):
    monkeypatch.setattr(readers.CaptureReader, "open", lambda self: False)
    monkeypatch.setattr(readers.sys, "platform", "linux")
    logs = []
    reader = sources.open_reader("0", log=logs.append)
    try:
        assert isinstance(reader, readers.PiCamera2Reader) and reader.index == 0
        assert logs == ["camera 0: no V4L2 capture device; using the Pi camera 0 through picamera2"]
    finally:
        reader.close()
    with pytest.raises(UserError, match="no camera at index 1"):  # picamera2 lists one camera only
        sources.open_reader("1")


def test_camera_index_without_picamera2_keeps_the_v4l2_error(no_picamera2, monkeypatch):
    monkeypatch.setattr(readers.CaptureReader, "open", lambda self: False)
    with pytest.raises(UserError, match="no camera at index 57"):
        sources.open_reader("57")


def test_edge_seg_run_with_the_stand_in_and_without_picamera2(tmp_path):
    run = edge_seg("run", "--source", "picamera2", "--headless", "--max-frames", "20",
                   "--capture-size", "320x240",
                   env={"PYTHONPATH": str(STAND_INS), "FAKE_PICAMERA2_LOG": str(tmp_path / "calls.log")})
    assert run.returncode == 0, run.stderr
    assert "source   Pi camera 0 (picamera2) (newest frame only)" in run.stdout
    assert "20 frames" in run.stdout
    missing = edge_seg("run", "--source", "picamera2", "--headless", "--max-frames", "20",
                       env={"PYTHONPATH": ""})
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("error: --source picamera2 needs")

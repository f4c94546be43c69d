"""Frame sources: kinds, bad input, corrupt frames, newest-frame-only, a camera that
disappears mid-run (monkeypatched capture) and sources that end abruptly."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import street_frames, write_video
from edge_seg.io import readers, sources
from edge_seg.errors import SourceLostError, UserError
from edge_seg.run.command import RunOptions, run_pipeline

RealCapture = cv2.VideoCapture  # the fake camera below replaces cv2.VideoCapture


def test_kind_of():
    assert sources.kind_of("0") == "camera"
    assert sources.kind_of("demo") == "demo"
    assert sources.kind_of("rtsp://cam.local/stream") == "url"
    assert sources.kind_of("http://10.0.0.2:8080/video") == "url"
    assert sources.kind_of("v4l2src ! videoconvert ! appsink") == "gstreamer"
    assert sources.kind_of("frames/*.png") == "images"
    assert sources.kind_of("x.JPG") == "image"
    assert sources.kind_of("drive.mp4") == "video"


def test_bad_sources_are_one_line_user_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(UserError, match="not a video"):
        sources.open_reader(str(text))
    with pytest.raises(UserError, match="no such file"):
        sources.open_reader(str(tmp_path / "absent.mp4"))
    with pytest.raises(UserError, match="no images"):
        sources.open_reader(str(tmp_path / "*.png"))
    if not __import__("pathlib").Path("/dev/video57").exists():
        with pytest.raises(UserError, match="no camera at index 57"):
            sources.open_reader("57")
    with pytest.raises(UserError, match="cannot open the stream"):
        sources.open_reader("rtsp://127.0.0.1:9/none")  # nothing listens on the discard port


def _frames(source):
    out = []
    while (frame := source.read(timeout=10)) is not None:
        out.append(frame)
    return out


def test_images_folder_with_a_corrupt_file_is_counted_and_skipped(tmp_path):
    for i, frame in enumerate(street_frames(3, seed=1)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame)
    (tmp_path / "1b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with sources.open_source(str(tmp_path)) as src:
        frames = _frames(src)
    assert len(frames) == 3 and src.stats.corrupt == 1 and src.stats.frames_read == 3
    assert all(f.image.shape == (160, 320, 3) for f in frames)


def test_every_nth_frame(tmp_path, street_video):
    with sources.open_source(str(street_video), every=5) as src:
        frames = _frames(src)
    assert [f.index for f in frames] == [0, 5, 10, 15, 20]


class FakeCamera:
    """Stands in for cv2.VideoCapture: delivers ``first`` frames, is unplugged for
    ``gone_opens`` reopen attempts, then delivers frames again (or never, if None)."""
    world = {}

    def __init__(self, *args, **kwargs):
        w = self.world
        w["opens"] = w.get("opens", 0) + 1
        self.opened = w["opens"] == 1 or (w["gone_opens"] is not None and w["opens"] > 1 + w["gone_opens"])

    def isOpened(self):
        return self.opened

    def read(self):
        w = self.world
        if not self.opened or (w["opens"] == 1 and w["served"] >= w["first"]):
            return False, None
        w["served"] += 1
        time.sleep(0.002)
        return True, np.full((120, 160, 3), w["served"] % 255, np.uint8)

    def grab(self):
        return self.read()[0]

    def set(self, *args):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


@pytest.fixture
def fake_camera(monkeypatch):
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCamera)
    monkeypatch.setattr(sources, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(sources, "BACKOFF_MAX_S", 0.05)

    def setup(first, gone_opens):
        FakeCamera.world = {"first": first, "gone_opens": gone_opens, "served": 0}
    return setup


def test_camera_that_disappears_comes_back_and_the_run_goes_on(fake_camera, tiny_models, tmp_path, capsys):
    fake_camera(first=8, gone_opens=3)
    out = tmp_path / "out.mp4"
    s = run_pipeline(RunOptions(camera=0, model=str(tiny_models["int8"]), show=False, save=str(out),
                                max_frames=20, threads=1, quiet=True))
    assert s["frames"] == 20 and s["stopped_by"] == "--max-frames"
    assert s["source"]["disconnects"] == 1 and s["source"]["reconnects"] == 1
    assert FakeCamera.world["opens"] == 1 + 3 + 1
    printed = capsys.readouterr()
    assert "source lost 1x / back 1x" in printed.out
    assert "reconnecting" in printed.err and "is back after" in printed.err
    assert RealCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == 20


def test_camera_that_never_returns_ends_the_run_cleanly(fake_camera, tiny_models, tmp_path, capsys):
    fake_camera(first=6, gone_opens=None)
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    with pytest.raises(SourceLostError, match="did not come back"):  # exit code 3, not 0
        run_pipeline(RunOptions(camera=0, model=str(tiny_models["int8"]), show=False, save=str(out),
                                threads=1, reconnect_timeout=0.3, quiet=True, report=str(report)))
    s = json.loads(report.read_text())
    assert s["stopped_by"] == "source lost" and 1 <= s["frames"] <= 6
    assert s["source"]["disconnects"] == 1 and s["source"]["reconnects"] == 0
    assert "edge-seg run:" in capsys.readouterr().out
    cap = RealCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == s["frames"] and cap.read()[0]


def test_truncated_video_ends_cleanly_with_the_summary(tiny_models, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", street_frames(40, seed=2))
    data = video.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: int(len(data) * 0.5)])
    s = run_pipeline(RunOptions(source=str(truncated), model=str(tiny_models["int8"]), show=False,
                                threads=1, quiet=True))
    assert 5 <= s["frames"] < 40 and s["stopped_by"] == "end of source"
    assert "edge-seg run:" in capsys.readouterr().out


class SteppedLiveReader(readers.Reader):
    """A live camera the test steps: ``allow(n)`` lets it deliver n more frames;
    ``wait_delivered(n)`` returns once the capture thread asks for frame n+1 (so frame n
    has been handed to the Source)."""
    live = True
    description = "stepped fake camera"
    fps = 30.0

    def __init__(self, total):
        self.total, self.served, self.permits, self.calls = total, 0, 0, 0
        self.cond = threading.Condition()

    def allow(self, n):
        with self.cond:
            self.permits += n
            self.cond.notify_all()

    def wait_delivered(self, n):
        with self.cond:
            assert self.cond.wait_for(lambda: self.calls > n, timeout=10), (self.calls, n)

    def read(self):
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
            if self.served >= self.total:
                raise EOFError
            assert self.cond.wait_for(lambda: self.permits > 0, timeout=10)
            self.permits -= 1
            self.served += 1
            return np.full((48, 64, 3), self.served % 255, np.uint8)


def test_live_source_keeps_only_the_newest_frame():
    # a slow pipeline: 5 frames arrive for every one it takes
    reader = SteppedLiveReader(total=30)
    src = sources.Source(reader).start()
    got = []
    try:
        for burst in range(6):
            reader.allow(5)
            reader.wait_delivered(5 * (burst + 1))
            got.append(src.read(timeout=10))
        assert src.read(timeout=10) is None  # the end of the source
    finally:
        src.close()
    assert [f.index for f in got] == [4, 9, 14, 19, 24, 29]  # always the newest
    assert src.stats.frames_read == 30 and src.stats.dropped == 24


class FakeClock:
    """The capture thread's clock: a frame read advances it by its decode time, a wait
    advances the clock by the wait (nothing really sleeps)."""

    def __init__(self, start=100.0):
        self.now = start

    def perf_counter(self):
        return self.now

    def monotonic(self):
        return self.now


class ClockedStop(threading.Event):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def wait(self, timeout=None):
        if timeout and not self.is_set():
            self.clock.now += timeout
        return self.is_set()


class DecodingFileReader(readers.Reader):
    """A 10 FPS file whose frames take 30 ms to decode; the next frame is read only once
    the consumer took the previous one (nothing dropped)."""
    fps = 10.0
    description = "clocked file"

    def __init__(self, clock, total):
        self.clock, self.total, self.n = clock, total, 0
        self.taken = threading.Semaphore(1)

    def read(self):
        assert self.taken.acquire(timeout=10)
        if self.n >= self.total:
            raise EOFError
        self.n += 1
        self.clock.now += 0.030
        return np.full((48, 64, 3), self.n, np.uint8)


def test_a_paced_file_frame_is_stamped_when_a_camera_would_deliver_it(monkeypatch):
    clock = FakeClock(start=100.0)
    monkeypatch.setattr(sources, "time", clock)
    reader = DecodingFileReader(clock, total=5)
    src = sources.Source(reader, realtime=True)
    src._stop = ClockedStop(clock)
    src.start()
    frames = []
    try:
        while (frame := src.read(timeout=10)) is not None:
            frames.append(frame)
            reader.taken.release()
    finally:
        src.close()
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    # due every 100 ms from the start; decoding (30 ms) happened before it was due, so the
    # frame's latency starts at its due time, not at the decode
    assert [f.t_capture for f in frames] == pytest.approx([100.1, 100.2, 100.3, 100.4, 100.5])
    assert [f.capture_ms for f in frames] == pytest.approx([30.0] * 5)

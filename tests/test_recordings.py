"""Recordings: H.264 through PyAV, playable after SIGKILL, segments under a cap, the format
table in the docs, and a browser that plays the file.

"Which codec" and "how many frames" are read back with PyAV's demuxer and decoder (FFmpeg),
"where a fragment ends" by walking the MP4 boxes here, independently of the writer; kills are
real signals on a subprocess; segment lengths are counted in frames (the demo clip's 30 fps),
never timed."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, edge_seg_argv
from edge_seg.errors import EXIT_OUTPUT_FAILED, EXIT_USAGE, OutputError, UserError
from edge_seg.io import sinks, video
from edge_seg.io.readers import DEMO_FPS
from edge_seg.run.command import RunOptions, run_pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def probe(path: Path) -> tuple[str, int]:
    """(codec name, frames decoded) as FFmpeg reads the file."""
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        return codec, sum(1 for _ in container.decode(video=0))


def demo_opts(tiny_models, **kw) -> RunOptions:
    return RunOptions(source="demo", model=str(tiny_models["int8"]), show=False, threads=1,
                      quiet=True, **kw)


def top_boxes(data: bytes) -> list[tuple[bytes, int]]:
    """(type, end offset) of each complete top-level MP4 box."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        if size < 8 or offset + size > len(data):
            break
        offset += size
        boxes.append((kind, offset))
    return boxes


# -- the table ------------------------------------------------------------------------------
def test_the_format_table_is_the_one_in_the_docs():
    assert video.formats_markdown() in (REPO / "docs" / "outputs.md").read_text()
    for f in video.FORMATS:
        if f.suffix != video.FOLDER:
            assert sinks.is_video_path(f"out{f.suffix}") and sinks.is_video_path(f"OUT{f.suffix.upper()}")


# -- H.264 ----------------------------------------------------------------------------------
def test_a_recording_is_h264_and_smaller_than_mpeg4(tiny_models, tmp_path, monkeypatch, capsys):
    h264, mpeg4 = tmp_path / "h264.mp4", tmp_path / "mpeg4.mp4"
    summary = run_pipeline(demo_opts(tiny_models, save=str(h264), max_frames=60))
    assert summary["saved"]["encoder"] == "H.264 libx264"
    monkeypatch.setattr(video, "load_pyav", lambda: None)  # as where PyAV is not installed
    monkeypatch.setattr(sinks, "_FALLBACK_SAID", [])
    run_pipeline(demo_opts(tiny_models, save=str(mpeg4), max_frames=60))
    assert capsys.readouterr().err.count("PyAV is not installed") == 1
    assert probe(h264) == ("h264", 60) and probe(mpeg4) == ("mpeg4", 60)
    sizes = {p.name: p.stat().st_size for p in (h264, mpeg4)}
    with capsys.disabled():
        print(f"\n  60 demo frames 1024x512: {sizes}")
    assert sizes["h264.mp4"] < sizes["mpeg4.mp4"]
    # a fragment (moof + mdat) every keyframe, one a second
    kinds = [kind for kind, _ in top_boxes(h264.read_bytes())]
    assert kinds[:2] == [b"ftyp", b"moov"] and kinds.count(b"moof") == 60 // DEMO_FPS


def test_the_banner_and_the_report_name_the_encoder(tiny_models, tmp_path, capsys):
    out, report = tmp_path / "out.mkv", tmp_path / "run.json"
    run_pipeline(RunOptions(source="demo", model=str(tiny_models["int8"]), show=False, threads=1,
                            save=str(out), report=str(report), max_frames=3))
    assert "H.264 libx264, Matroska" in capsys.readouterr().out
    assert json.loads(report.read_text())["saved"]["encoder"] == "H.264 libx264"
    assert probe(out) == ("h264", 3)


def test_the_first_encoder_that_opens_is_used(monkeypatch):
    opened = []
    real = av.CodecContext.create

    def create(name, mode):
        opened.append(name)
        if name == "h264_v4l2m2m":
            raise ValueError("no such device")
        return real(name, mode)

    monkeypatch.setattr(av.CodecContext, "create", create)
    video.pick_encoder.cache_clear()
    try:
        assert video.pick_encoder((320, 160), 15.0) == "libx264"
        assert opened == ["h264_v4l2m2m", "libx264"]  # the hardware encoder is tried first
    finally:
        video.pick_encoder.cache_clear()


def test_odd_frame_sizes_are_padded_to_even(tmp_path):
    sink = sinks.FrameSink(tmp_path / "odd.mp4", fps=10)
    image = np.full((33, 51, 3), 200, np.uint8)
    for _ in range(5):
        sink.write(image)
    sink.close()
    with av.open(str(tmp_path / "odd.mp4")) as c:
        stream = c.streams.video[0]
        assert (stream.width, stream.height) == (52, 34)
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    assert np.abs(frame.astype(int) - 200).max() <= 4  # the padding repeats the edge


# -- a kill ---------------------------------------------------------------------------------
def test_a_recording_killed_with_sigkill_plays_up_to_its_last_fragment(tiny_models, tmp_path):
    out = tmp_path / "b.mp4"
    argv = edge_seg_argv("run", "--source", "demo", "--model", tiny_models["int8"], "--headless",
                         "--threads", "1", "--save", out)
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # until the partial file holds a complete fragment after the header
            partials = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
            if partials and [k for k, _ in top_boxes(partials[0].read_bytes())].count(b"mdat") >= 1:
                break
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    [partial] = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert re.fullmatch(r"\.b\.partial-\d+\.mp4", partial.name)
    codec, frames = probe(partial)
    assert codec == "h264" and frames >= DEMO_FPS  # at least the first whole fragment


# -- segments -------------------------------------------------------------------------------
def test_segments_rotate_and_the_oldest_go_first(tiny_models, tmp_path, capsys):
    out, report = tmp_path / "cam.mp4", tmp_path / "run.json"
    summary = run_pipeline(demo_opts(tiny_models, save=str(out), max_frames=DEMO_FPS * 3 + 10,
                                     save_segment=1.0, save_max_files=2, report=str(report)))
    segments = summary["saved"]["segments"]
    assert [s["frames"] for s in segments] == [DEMO_FPS] * 3 + [10]
    assert [s["removed"] for s in segments] == [True, True, False, False]
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cam"))
    assert kept == [Path(s["path"]).name for s in segments[2:]]  # sorted by name = by time
    for name, frames in zip(kept, (DEMO_FPS, 10)):
        assert re.fullmatch(r"cam-\d{8}T\d{6}Z-\d{4}\.mp4", name)
        assert probe(tmp_path / name) == ("h264", frames)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    printed = capsys.readouterr().out
    assert "4 segments written, 2 kept, 2 removed" in printed and kept[-1] in printed
    assert json.loads(report.read_text())["saved"]["segments"] == segments


def test_a_size_cap_counts_earlier_runs_and_keeps_the_newest(tiny_models, tmp_path):
    old = [tmp_path / f"cam-2020010{d}T000000Z-0001.mkv" for d in (1, 2)]
    for p in old:
        p.write_bytes(b"\0" * 300_000)
    (tmp_path / "cam-notes.mkv").write_bytes(b"mine")  # not a segment's name: never touched
    summary = run_pipeline(demo_opts(tiny_models, save=str(tmp_path / "cam.mkv"), max_frames=DEMO_FPS * 2,
                                     save_segment=1.0, save_max_bytes=400_000))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not old[0].exists() and (tmp_path / "cam-notes.mkv").read_bytes() == b"mine"
    kept = video.segment_files(tmp_path / "cam.mkv")
    assert kept[-1].name == Path(summary["saved"]["segments"][-1]["path"]).name, names
    assert sum(p.stat().st_size for p in kept) <= 400_000 or len(kept) == 1


def test_over_cap_removes_the_oldest_and_never_the_newest(tmp_path):
    files = []
    for i, size in enumerate((50, 40, 30, 20)):
        files.append(tmp_path / f"s{i}")
        files[-1].write_bytes(b"x" * size)
    assert video.over_cap(files, 2, None) == files[:2]
    assert video.over_cap(files, None, 60) == files[:2]  # 30 + 20 fit
    assert video.over_cap(files, None, 10) == files[:3]  # the newest stays, even alone too big
    assert video.over_cap(files, 10, 1000) == []


def test_a_full_disk_in_a_later_segment_keeps_the_published_ones(tiny_models, tmp_path, monkeypatch):
    real = video.PyAVWriter
    written = []

    class FillsUp(real):
        def write(self, image):
            written.append(1)
            return len(written) <= DEMO_FPS + 5 and super().write(image)

    monkeypatch.setattr(video, "PyAVWriter", FillsUp)
    monkeypatch.setattr(sinks.FrameSink, "_no_space", lambda self: True)
    with pytest.raises(OutputError, match=r"no space left on the device\) after 35 frames") as e:
        run_pipeline(demo_opts(tiny_models, save=str(tmp_path / "cam.mp4"), save_segment=1.0,
                               max_frames=DEMO_FPS * 3))
    assert e.value.exit_code == EXIT_OUTPUT_FAILED
    [segment] = [p for p in tmp_path.iterdir()]  # the finished one; no partial file
    assert probe(segment) == ("h264", DEMO_FPS)


def test_segment_options_are_checked(tiny_models, tmp_path):
    from edge_seg.cli import main
    base = ["run", "--source", "demo", "--model", str(tiny_models["int8"]), "--headless"]
    for extra, says in ((["--save", str(tmp_path / "f"), "--save-segment", "1m"], "folder of PNG frames"),
                        (["--save", str(tmp_path / "a.mp4"), "--save-max-files", "3"], "needs --save-segment"),
                        (["--save", str(tmp_path / "a.mp4"), "--save-segment", "0s"], "positive amount"),
                        (["--save", str(tmp_path / "a.mp4"), "--save-segment", "10x"], "positive amount"),
                        (["--save", str(tmp_path / "a.mp4"), "--save-segment", "1m",
                          "--save-max-bytes", "lots"], "positive amount")):
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code == EXIT_USAGE and says in result.output, (extra, result.output)
        assert "Traceback" not in result.output
    with pytest.raises(UserError, match="must be positive"):
        sinks.FrameSink(tmp_path / "a.mp4", segment_s=1.0, max_files=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45)])
def test_segment_lengths_and_sizes_parse(text, seconds):
    from edge_seg.run.command import _bytes, _duration
    assert _duration(None, None, text) == seconds
    assert _bytes(None, None, "500M") == 500_000_000 and _bytes(None, None, "32GB") == 32 * 10 ** 9


# -- a browser ------------------------------------------------------------------------------
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_chromium_plays_the_recording(tiny_models, tmp_path):
    clip = tmp_path / "clip.mp4"
    run_pipeline(demo_opts(tiny_models, save=str(clip), max_frames=DEMO_FPS * 2, hud=False))
    with av.open(str(clip)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="bgr24")
    h, w = first.shape[:2]
    # magenta around the video: a blank or unplayed video is black, white or magenta
    page = tmp_path / "page.html"
    page.write_text(f"""<!doctype html><html><body style="margin:0;background:#f0f">
<video src="{clip.name}" width="{w}" height="{h}" muted preload="auto"></video></body></html>""")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--force-color-profile=srgb",
         "--hide-scrollbars", "--autoplay-policy=no-user-gesture-required",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         f"--screenshot={shot}", f"--window-size={w + 40},{h + 40}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    drawn = cv2.imread(str(shot), cv2.IMREAD_COLOR)[:h, :w]
    assert drawn.std() > 20  # not one flat colour
    magenta = (np.abs(drawn.astype(int) - (255, 0, 255)).max(axis=2) <= 8).mean()
    assert magenta < 0.01, magenta
    # the first frame, as the browser decoded it
    assert cv2.matchTemplate(drawn, first, cv2.TM_CCOEFF_NORMED).max() > 0.9

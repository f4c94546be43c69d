"""`edge-seg run` end to end: demo and CamVid videos, TensorFlow unimportable, Ctrl-C /
SIGTERM, bad input (one line, exit code 2), the help."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, edge_seg, edge_seg_argv, python_without_tf, street_frames, write_video
from edge_seg.run.command import RunOptions, run, run_pipeline

def has_synthetic() -> bool:
    return (REPO / "edge" / "scenes" / "__init__.py").is_file()


needs_synthetic = pytest.mark.skipif(not has_synthetic(),
                                     reason="the demo source needs the scenes package")


def video_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@needs_synthetic
def test_demo_headless_save(tmp_path, capsys):
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    s = run_pipeline(RunOptions(source="demo", show=False, save=str(out), max_frames=30,
                                report=str(report)))
    printed = capsys.readouterr().out
    assert s["frames"] == 30 and "edge-seg run: 30 frames" in printed
    frames = video_frames(out)
    assert len(frames) == 30 and frames[0].shape == (512, 1024, 3)
    assert json.loads(report.read_text())["frames"] == 30


def test_camvid_video_headless_save(camvid_video, tmp_path, capsys):
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    s = run_pipeline(RunOptions(source=str(camvid_video), show=False, save=str(out),
                                max_frames=200, report=str(report)))
    assert s["frames"] == 101 and s["stopped_by"] == "end of source"
    frames = video_frames(out)
    assert len(frames) == 101 and frames[0].shape == (360, 480, 3)
    cv2.imwrite(str(tmp_path / "frame-050.png"), frames[50])
    # the overlay is the frame tinted: neither a copy of the input nor blank
    source = video_frames(camvid_video)[50]
    assert 5 < np.abs(frames[50].astype(int) - source.astype(int)).mean() < 120
    r = json.loads(report.read_text())
    for key in ("frames", "dropped_frames", "fps", "latency_ms", "backend", "delegate", "agreement"):
        assert key in r
    for stage in ("capture", "pre", "infer", "post", "draw", "encode", "frame"):
        assert {"p50", "p99"} <= set(r["latency_ms"][stage])


def test_pngs_folder_output_and_views(tiny_models, street_video, tmp_path):
    out = tmp_path / "frames"
    s = run_pipeline(RunOptions(source=str(street_video), model=str(tiny_models["uint8"]), show=False,
                                save=str(out), view="side-by-side", every=4, threads=1, quiet=True))
    pngs = sorted(out.glob("*.png"))
    assert s["frames"] == 6 and len(pngs) == 6
    assert cv2.imread(str(pngs[0])).shape == (160, 640, 3)


def test_runtime_runs_end_to_end_without_tensorflow(tmp_path, street_video):
    """What `make demo` does on a runtime-only install: the default (bundled) model."""
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    source = "demo" if has_synthetic() else str(street_video)
    code = (
        "from edge_seg.cli import main\n"
        f"try:\n    main(['run', '--source', {source!r}, '--headless', '--max-frames', '12', "
        f"'--save', {str(out)!r}, '--report', {str(report)!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]\n"
        "assert not bad, bad\nprint('NO-TF-OK')\n")
    done = subprocess.run(python_without_tf(code), capture_output=True, text=True, cwd=REPO, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "NO-TF-OK" in done.stdout and "Traceback" not in done.stderr
    assert len(video_frames(out)) == 12
    assert json.loads(report.read_text())["backend"].startswith("ai-edge-litert")


# Run before the run under test: its file source stalls after frame STALL_AT until the run
# stops it, so the signal arrives mid-run on every machine, however fast or slow.
STALL_AT = 11
STALL_SOURCE = """
from edge_seg.io import sources
deliver = sources.Source._deliver
def stalling_deliver(self, item):
    deliver(self, item)
    if isinstance(item, sources.Frame) and item.index == {at}:
        print('STALLED', flush=True)
        self._stop.wait()
sources.Source._deliver = stalling_deliver
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finalises_the_video_and_prints_the_summary(tmp_path, tiny_models, sig):
    video = write_video(tmp_path / "long.mp4", street_frames(120, seed=3), fps=30.0)
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    argv = edge_seg_argv("run", "--source", video, "--model", tiny_models["int8"], "--headless", "--save",
                         out, "--report", report, "--threads", "1", prelude=STALL_SOURCE.format(at=STALL_AT))
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == "STALLED":
                break
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"stopped by {sig.name}" in stdout and "Traceback" not in stderr
    saved = json.loads(report.read_text())["saved"]["frames"]
    # the run stopped within the frames captured before the signal, and kept what it had
    assert 1 <= saved <= STALL_AT + 1
    assert len(video_frames(out)) == saved  # finalised: every written frame plays back


def _one_line_error(done: subprocess.CompletedProcess, *fragments):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_input_is_one_line_exit_2(tmp_path, tiny_models, street_video):
    model = tiny_models["int8"]
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(model.read_bytes()[:4000])
    shutil.copy(model.with_suffix(".json"), truncated.with_suffix(".json"))
    no_meta = tmp_path / "lonely.tflite"
    shutil.copy(model, no_meta)
    cases = [
        (("--camera", "57"), "camera"),
        (("--source", str(text)), "not a video"),
        (("--source", str(street_video), "--model", str(truncated)), "cut.tflite"),
        (("--source", str(street_video), "--model", str(no_meta)), "no lonely.json beside it"),
        (("--source", "rtsp://127.0.0.1:9/none"), "cannot open the stream"),
        ((), "no input"),
    ]
    if Path("/dev/video57").exists():
        cases.pop(0)
    for args, fragment in cases:
        _one_line_error(edge_seg("run", "--headless", *args), fragment)


def test_help_explains_every_option():
    done = edge_seg("run", "--help", block_tf=True)
    assert done.returncode == 0, done.stderr
    for param in run.params:
        if param.name == "help":
            continue
        assert param.help and len(param.help) > 15, param.name
        for opt in param.opts + param.secondary_opts:
            assert opt in done.stdout, opt

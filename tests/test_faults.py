"""Fault injection on outputs: inputs never overwritten, runs never mixed, full disks and
unwritable paths reported in one line with exit code 4 (after the summary), kills that never
leave a half file under the final name, and advice that names only options that exist.

Full disks are a real size-limited tmpfs where one can be mounted (else skipped) and an
injected failing encoder / ``open``; permissions are a read-only mount and an injected
EACCES (the tests run as root, for whom file modes do not block writes); kills are real
signals on a subprocess; "does it play" is OpenCV's VideoCapture reading the file back."""
from __future__ import annotations

import ast
import errno
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, edge_seg, edge_seg_argv, street_frames, write_video
from edge_seg.io import publish, sinks
from edge_seg.errors import EXIT_OUTPUT_FAILED, EXIT_USAGE, OutputError, UserError
from edge_seg.run.command import RunOptions, run_pipeline

def frames_in(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def run_opts(tiny_models, source, **kw) -> RunOptions:
    return RunOptions(source=str(source), model=str(tiny_models["int8"]), show=False, threads=1,
                      quiet=True, **kw)


def error_lines(text: str) -> list[str]:
    """stderr without OpenCV's own [ WARN ] lines (the encoder's, beside ours)."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("[")]


def one_line(result, code: int, *fragments) -> str:
    """A CliRunner result or CompletedProcess: exit ``code``, one 'error: ' line."""
    rc = getattr(result, "exit_code", getattr(result, "returncode", None))
    err = result.stderr
    lines = [line for line in error_lines(err) if line.startswith("error: ")]
    assert rc == code, (rc, result.stdout, err)
    assert "Traceback" not in err and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def cli(*args):
    from edge_seg.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def noisy_video(tmp_path_factory) -> Path:
    """Frames that compress badly, so a small disk fills in a few frames."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), np.uint8) for _ in range(120)]
    return write_video(tmp_path_factory.mktemp("noise") / "noise.avi", frames, fps=30.0)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (skipped where mounting is not allowed)."""
    mounted = []

    def mount(size: str, *options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        opts = ",".join((f"size={size}",) + options)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def hidden_partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


# -- never overwrite an input or mix runs ---------------------------------------------------
def test_save_over_the_input_is_refused_and_the_input_kept(tiny_models, street_video, tmp_path):
    before = street_video.read_bytes()
    with pytest.raises(UserError, match="that is an input"):
        run_pipeline(run_opts(tiny_models, street_video, save=str(street_video), max_frames=4))
    sidecar = tiny_models["int8"].with_suffix(".json")
    with pytest.raises(UserError, match="that is an input"):
        run_pipeline(run_opts(tiny_models, street_video, report=str(sidecar), max_frames=4))
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), street_frames(1)[0])
    with pytest.raises(UserError, match="holds an input"):
        run_pipeline(run_opts(tiny_models, frames / "*.png", save=str(frames), overwrite=True))
    assert street_video.read_bytes() == before and (frames / "a.png").is_file()


def test_an_existing_output_needs_overwrite(tiny_models, street_video, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    run_pipeline(run_opts(tiny_models, street_video, save=str(out), report=str(report), max_frames=3))
    for kw in ({"save": str(out)}, {"report": str(report)}):
        with pytest.raises(UserError, match="already exists; pass --overwrite"):
            run_pipeline(run_opts(tiny_models, street_video, max_frames=5, **kw))
    run_pipeline(run_opts(tiny_models, street_video, save=str(out), report=str(report),
                          max_frames=5, overwrite=True))
    assert frames_in(out) == 5 and json.loads(report.read_text())["frames"] == 5
    assert hidden_partials(tmp_path) == []


def test_a_folder_with_old_frames_is_never_mixed(tiny_models, street_video, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for i in range(12):
        cv2.imwrite(str(old / sinks.FRAME_FILE.format(i)), street_frames(1)[0])
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        run_pipeline(run_opts(tiny_models, street_video, save=str(old), max_frames=3))
    assert len(list(old.iterdir())) == 12
    run_pipeline(run_opts(tiny_models, street_video, save=str(old), max_frames=3, overwrite=True))
    assert sorted(p.name for p in old.iterdir()) == [sinks.FRAME_FILE.format(i) for i in range(3)]
    (old / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other than saved frames"):
        run_pipeline(run_opts(tiny_models, street_video, save=str(old), max_frames=3, overwrite=True))
    assert (old / "notes.txt").read_text() == "mine"


# -- write failures: detected, one line, exit 4, summary first ------------------------------
class FailingWriter:
    """A video writer (OpenCV's or PyAV's, ``real``) that stops writing after ``ok`` frames,
    as on a full disk."""
    ok = 4
    real = cv2.VideoWriter
    fourcc = staticmethod(cv2.VideoWriter.fourcc)

    def __init__(self, *args):
        self.args = args
        self._w = self.real(*args)
        self.n = 0

    def __getattr__(self, name):
        return getattr(self._w, name)

    def write(self, image):
        self.n += 1
        return self._w.write(image) if self.n <= self.ok else False

    def release(self):
        self._w.release()


def use_failing_writer(monkeypatch, name: str) -> None:
    """FailingWriter in place of the writer that ``name``'s extension gets."""
    if sinks.video.uses_pyav(Path(name).suffix):
        monkeypatch.setattr(FailingWriter, "real", sinks.video.PyAVWriter)
        monkeypatch.setattr(sinks.video, "PyAVWriter", FailingWriter)
    else:
        monkeypatch.setattr(sinks.cv2, "VideoWriter", FailingWriter)


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_an_encoder_that_stops_writing_fails_the_run_after_the_summary(
        tiny_models, street_video, tmp_path, monkeypatch, capsys, name):
    use_failing_writer(monkeypatch, name)
    monkeypatch.setattr(sinks.FrameSink, "_no_space", lambda self: True)
    out, report = tmp_path / name, tmp_path / "run.json"
    with pytest.raises(OutputError, match=r"no space left on the device\) after 4 frames") as e:
        run_pipeline(run_opts(tiny_models, street_video, save=str(out), report=str(report)))
    assert e.value.exit_code == EXIT_OUTPUT_FAILED
    printed = capsys.readouterr().out
    assert "edge-seg run:" in printed and "NOT saved to" in printed and "report written" in printed
    r = json.loads(report.read_text())
    assert r["saved"]["published"] is False and "no space" in r["error"]
    assert not out.exists() and hidden_partials(tmp_path) == []


def test_a_frames_folder_on_a_full_disk(tiny_models, street_video, tmp_path, monkeypatch, capsys):
    calls = []

    def full_open(path, mode="r", *a, **kw):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return open(path, mode, *a, **kw)

    monkeypatch.setattr(sinks, "open", full_open, raising=False)
    out = tmp_path / "frames"
    with pytest.raises(OutputError, match=r"cannot write frame 2 \(no space left on the device\)"):
        run_pipeline(run_opts(tiny_models, street_video, save=str(out)))
    assert "stopped by output error" in capsys.readouterr().out
    assert not out.exists() and hidden_partials(tmp_path) == []


def test_real_full_disk_one_line_exit_4(tiny_models, noisy_video, tmpfs, tmp_path):
    disk = tmpfs("1200k")
    out = disk / "out.mp4"
    done = edge_seg("run", "--source", noisy_video, "--model", tiny_models["int8"], "--headless",
                    "--threads", "1", "--save", out, "--report", tmp_path / "run.json", timeout=120)
    one_line(done, EXIT_OUTPUT_FAILED, str(out), "no space left on the device")
    assert done.stdout.index("edge-seg run:") < len(done.stdout)  # the summary was printed
    assert json.loads((tmp_path / "run.json").read_text())["saved"]["published"] is False
    assert list(disk.iterdir()) == []  # neither the video nor its partial file
    # a disk already full is refused before the run starts
    (disk / "fill").write_bytes(b"\0" * (300 << 10))
    done = edge_seg("run", "--source", noisy_video, "--model", tiny_models["int8"], "--headless",
                    "--save", out, timeout=120)
    one_line(done, EXIT_OUTPUT_FAILED, "no space left on the device")
    assert "edge-seg run:" not in done.stdout


def test_a_frame_size_the_codec_cannot_take_is_explained(tiny_models, tmp_path, capsys, monkeypatch):
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.zeros((1, 1, 3), np.uint8))
    run_pipeline(run_opts(tiny_models, one, save=str(tmp_path / "h264.mp4")))  # padded to 2x2
    assert frames_in(tmp_path / "h264.mp4") == 1
    monkeypatch.setattr(sinks.video, "uses_pyav", lambda suffix: False)  # OpenCV's MPEG-4
    with pytest.raises(UserError, match="frames are 1x1 pixels; MPEG-4 video needs at least 2x2") as e:
        run_pipeline(run_opts(tiny_models, one, save=str(tmp_path / "out.mp4")))
    assert e.value.exit_code == EXIT_USAGE
    assert "NOT saved to" in capsys.readouterr().out
    run_pipeline(run_opts(tiny_models, one, save=str(tmp_path / "out.avi")))
    assert frames_in(tmp_path / "out.avi") == 1


def test_a_report_that_fails_after_the_run_keeps_the_summary(tiny_models, street_video, tmp_path,
                                                            monkeypatch, capsys):
    def disk_fills(run):
        def no_space(*a, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(publish.tempfile, "mkstemp", no_space)

    report = tmp_path / "run.json"
    with pytest.raises(OutputError, match=r"--report .*run.json: cannot write \(no space"):
        run_pipeline(run_opts(tiny_models, street_video, report=str(report), max_frames=3),
                     on_start=disk_fills)
    assert "edge-seg run: 3 frames" in capsys.readouterr().out and not report.exists()


# -- unwritable output paths: one line in every command, before the work -------------------
def _deny_writes_under(monkeypatch, folder: Path):
    real = publish.tempfile.mkstemp

    def mkstemp(*a, dir=None, **kw):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **kw)
    monkeypatch.setattr(publish.tempfile, "mkstemp", mkstemp)


def output_commands(tiny_models, street_video, data: Path, where: Path):
    model = tiny_models["int8"]
    return {
        "run --report": ("run", "--source", street_video, "--model", model, "--headless",
                         "--report", where / "r.json"),
        "run --save": ("run", "--source", street_video, "--model", model, "--headless",
                       "--save", where / "o.mp4"),
        "eval --report": ("eval", model, "--data", data, "--report", where / "rep"),
        "calibrate -o": ("calibrate", "--data", data, "-o", where / "c.json"),
        "data preview -o": ("data", "preview", data, "-o", where / "p.png"),
        "train --run-dir": ("train", "--data", data, "--run-dir", where / "run"),
        "convert -o": ("convert", REPO / "models" / "missing.keras", "--fp16", "-o", where),
    }


def test_permission_denied_is_one_line_in_every_command(tiny_models, street_video, synthetic_camvid,
                                                        tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    _deny_writes_under(monkeypatch, ro)
    for name, args in output_commands(tiny_models, street_video, synthetic_camvid, ro).items():
        line = one_line(cli(*args), EXIT_OUTPUT_FAILED, "cannot write (permission denied)")
        assert str(ro) in line, (name, line)


def test_read_only_mount_and_a_directory_report(tiny_models, street_video, synthetic_camvid, tmpfs, tmp_path):
    ro = tmpfs("1m", "ro")
    for name, args in output_commands(tiny_models, street_video, synthetic_camvid, ro).items():
        one_line(cli(*args), EXIT_OUTPUT_FAILED, "read-only file system")
    one_line(cli("run", "--source", street_video, "--model", tiny_models["int8"], "--headless",
                 "--report", tmp_path), EXIT_OUTPUT_FAILED, "is a directory")


def test_convert_onto_a_full_disk_is_one_line(tmp_path, monkeypatch):
    model = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
    if not model.is_file():
        pytest.skip("the reference .keras model is not in this checkout")
    monkeypatch.setattr(publish.os, "statvfs",
                        lambda p: os.statvfs_result((4096, 4096, 10, 0, 0, 0, 0, 0, 0, 255)))
    one_line(cli("convert", model, "--fp16", "-o", tmp_path), EXIT_OUTPUT_FAILED,
             "no space left on the device")
    assert list(tmp_path.iterdir()) == []


# -- kills ---------------------------------------------------------------------------------
def _start_saving(tiny_models, save: Path, *extra) -> subprocess.Popen:
    video = write_video(save.parent / "long.mp4", street_frames(150, seed=3), fps=30.0)
    argv = edge_seg_argv("run", "--source", video, "--model", tiny_models["int8"], "--realtime",
                         "--headless", "--threads", "1", "--save", save, *extra)
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the banner: the loop is about to start
        if line.strip().startswith("output"):
            break
    deadline = time.monotonic() + 60
    while not [p for p in save.parent.iterdir() if ".partial-" in p.name and
               (p.is_file() and p.stat().st_size > 20000 or p.is_dir() and len(list(p.iterdir())) > 3)]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    return proc


def test_sighup_finalises_like_sigterm(tiny_models, tmp_path):
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    proc = _start_saving(tiny_models, out, "--report", str(report))
    proc.send_signal(signal.SIGHUP)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by SIGHUP" in stdout and "Traceback" not in stderr
    saved = json.loads(report.read_text())["saved"]
    assert saved["published"] and frames_in(out) == saved["frames"] > 0
    assert hidden_partials(tmp_path) == []


@pytest.mark.parametrize("name", ["out.mp4", "out.mkv", "frames"])
def test_sigkill_leaves_no_half_file_under_the_final_name(tiny_models, tmp_path, name):
    out = tmp_path / name
    proc = _start_saving(tiny_models, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    [partial] = [tmp_path / p for p in hidden_partials(tmp_path)]
    if name != "frames":  # fragmented MP4 / Matroska: plays up to its last fragment / cluster
        assert frames_in(partial) > 0


def test_sigterm_during_convert_removes_its_temporary_folders(tmp_path):
    model = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
    if not model.is_file():
        pytest.skip("the reference .keras model is not in this checkout")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(edge_seg_argv("convert", model, "--fp32", "--fp16", "-o", tmp_path / "out"),
                            env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    # TensorFlow's SavedModel folder inside the conversion's private temporary folder
    while not list(scratch.glob("edge-seg-convert-*/*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert list(scratch.iterdir()) == []
    assert not list((tmp_path / "out").glob("*.tflite")) or all(
        p.with_suffix(".json").is_file() for p in (tmp_path / "out").glob("*.tflite"))


# -- validate what is read -----------------------------------------------------------------
def test_check_float_refuses_a_quantised_model(tiny_models, street_video):
    for variant in ("int8", "uint8"):
        with pytest.raises(UserError, match="a quantised model"):
            run_pipeline(run_opts(tiny_models, street_video, check_float=str(tiny_models[variant])))
    done = cli("run", "--source", street_video, "--model", tiny_models["int8"], "--headless",
               "--check-float", tiny_models["int8"])
    one_line(done, EXIT_USAGE, "--check-float", "quantised")


def test_data_check_refuses_what_train_and_eval_refuse(synthetic_camvid, tmp_path):
    import shutil

    from edge_seg.train.datasets import load_split
    root = tmp_path / "no-val"
    shutil.copytree(synthetic_camvid, root)
    for folder in ("val", "valannot"):
        shutil.rmtree(root / folder, ignore_errors=True)
    with pytest.raises(UserError) as refused:  # what train and eval (default split) call
        load_split(root, "camvid", "val")
    done = cli("data", "check", root, "--format", "camvid")
    assert done.exit_code == 1 and str(refused.value) in done.stdout
    assert "no problems found" not in done.stdout
    ok = cli("data", "check", synthetic_camvid)
    assert ok.exit_code == 0 and "no problems found" in ok.stdout


# Which commands can show the messages of each module (the modules every command's code
# path reaches). A message suggesting an option must be right for all of them.
REACHED_BY = {
    "edge/run/command.py": ["run"], "edge/run/loop.py": ["run"], "edge/io/sinks.py": ["run"],
    "edge/run/drift.py": ["run"],
    "edge/io/sources.py": ["run"], "edge/io/readers.py": ["run"],
    "edge/backends/bundled.py": ["run"],  # the bundled model: only run's default
    "edge/tune/command.py": ["tune"], "edge/backends/litert.py": ["run"],
    "edge/io/publish.py": ["run", "eval", "calibrate", "data preview"],  # the --overwrite advice
    "train/datasets.py": ["data check", "data preview", "train", "eval", "calibrate", "compare", "convert"],
    "train/data_cli.py": ["data check", "data preview"],
    "train/eval_cli.py": ["eval"], "train/trainer.py": ["train"], "train/epochs.py": ["train"],
    "train/models.py": ["train"],
    # the eval command's own messages live in eval_cli.py; cli.py's advice is train's --data parsing
    "train/cli.py": ["train"],
    # select.py's messages naming options are its manifest reader's, which convert uses
    "calibration/select.py": ["convert"], "calibration/cli.py": ["calibrate"],
    "converters/cli.py": ["convert"], "converters/sizes.py": ["convert"],
    "converters/tflite_export.py": ["convert"], "converters/compare.py": ["compare"],
}
ADVICE = re.compile(r"\b(?:pass|use|add|drop|give|try|with|or)\s+(--[a-z][a-z0-9-]*)")
OTHER_COMMAND = re.compile(r"'edge-seg ([a-z]+(?: [a-z]+)?)'[^']*?(--[a-z][a-z0-9-]*)")


def _messages(path: Path):
    """The text of every string (f-strings joined) passed to a raised exception or echoed."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts = []
            for arg in node.args:
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        parts.append(sub.value)
            text = "".join(parts)
            if "--" in text:
                yield node.lineno, text


def _options(command: str) -> set[str]:
    from edge_seg.cli import main
    cmd = main
    ctx = main.make_context("edge-seg", [], resilient_parsing=True)
    for word in command.split():
        cmd = cmd.get_command(ctx, word)
    return {o for p in cmd.params for o in p.opts + p.secondary_opts}


def test_advice_names_only_options_that_exist():
    wrong = []
    for module, commands in REACHED_BY.items():
        for line, text in _messages(REPO / module):
            named = {m.group(2): m.group(1) for m in OTHER_COMMAND.finditer(text)}
            for option in ADVICE.findall(text):
                for command in ([named[option]] if option in named else commands):
                    if option not in _options(command):
                        wrong.append(f"{module}:{line}: '{option}' is not an option of {command}")
    assert not wrong, "\n".join(wrong)
    # the walk sees the advice it is meant to check
    assert "--overwrite" in "".join(t for _, t in _messages(REPO / "edge/io/publish.py"))


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_a_video_the_encoder_could_not_finalise_is_not_published(tiny_models, street_video, tmp_path,
                                                                  monkeypatch, name):
    # a disk that fills while the index is written: every frame was taken, the file is cut
    real_release = FailingWriter.release

    def cut_release(self):
        real_release(self)
        path = Path(self.args[0])
        path.write_bytes(path.read_bytes()[:-200])

    monkeypatch.setattr(FailingWriter, "ok", 10 ** 6)
    monkeypatch.setattr(FailingWriter, "release", cut_release)
    use_failing_writer(monkeypatch, name)
    out = tmp_path / name
    with pytest.raises(OutputError, match="the finished video is incomplete"):
        run_pipeline(run_opts(tiny_models, street_video, save=str(out), max_frames=6))
    assert not out.exists() and hidden_partials(tmp_path) == []

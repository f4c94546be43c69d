"""Hostile inputs: each case is one row -- the command, the exit code, a line it must print,
and what must be unchanged afterwards (every file that was there, byte for byte, and no
hidden partial file). A new case is a new row in CASES; cases a row cannot express (a
server under attack, signals at a chosen moment) keep their own test functions below.

Commands run as real subprocesses, bounded by a timeout; servers listen and are talked to
on 127.0.0.1 only, with bounded counts."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from conftest import edge_seg, edge_seg_argv, street_frames, write_video
from edge_seg.errors import EXIT_ABANDONED, EXIT_OK, EXIT_OUTPUT_FAILED, EXIT_USAGE, RunAbandoned
from edge_seg.io import sinks
from edge_seg.run.command import RunOptions, run_pipeline
from edge_seg.serve import server

TIMEOUT_S = 120  # only reached when a case hangs
BAD = os.fsdecode(b"bad\xffname")  # a file name that is not UTF-8


@dataclass
class Case:
    name: str
    args: list[str]           # {model}, {tmp} and the setup's names are filled in
    code: int
    line: str                 # a fragment of one line of stdout or stderr
    setup: Callable[[Path], None] = lambda tmp: None
    creates: tuple[str, ...] = ()   # files the command may add; all else stays as it was
    env: dict = field(default_factory=dict)
    absent: str | None = None  # text that must appear in no output and no file created


def png(tmp: Path, name: str = "a.png") -> Path:
    tmp.joinpath(name).parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", street_frames(1, size=(160, 80))[0])
    tmp.joinpath(name).write_bytes(data.tobytes())
    return tmp / name


def video(tmp: Path, name: str, n: int = 8) -> Path:
    """Written under a UTF-8 name, then renamed: OpenCV cannot take the other kind."""
    made = write_video(tmp / "made.avi", street_frames(n, size=(160, 80)), fps=15.0)
    return made.rename(tmp / name)


def notes(tmp: Path) -> None:
    tmp.joinpath("notes.txt").write_text("not a folder\n")


def truncated_avi(tmp: Path) -> None:
    """A video cut short: its header announces 120 frames, 45% of the file is left."""
    rng = np.random.default_rng(0)
    full = write_video(tmp / "full.avi", (rng.integers(0, 255, (80, 160, 3), np.uint8)
                                          for _ in range(120)), fps=30.0)
    data = full.read_bytes()
    (tmp / "cut.avi").write_bytes(data[:len(data) * 45 // 100])
    full.unlink()


def folder_with(tmp: Path) -> None:
    png(tmp, "frames/a.png")
    png(tmp, f"frames/{BAD}.png")
    (tmp / "frames" / "dir.png").mkdir()  # a folder with an image's name is no image


def truncated_model(tmp: Path) -> None:
    """The bundled model (its metadata embedded, no sidecar copied) cut short by 1000 bytes,
    as an interrupted copy leaves it."""
    from edge_seg.backends.bundled import default_model
    (tmp / "cut.tflite").write_bytes(default_model().read_bytes()[:-1000])


def evaluation_only_cityscapes(tmp: Path) -> None:
    from edge_seg.train.synthetic_dataset import write_dataset
    root = write_dataset(tmp / "cs", "cityscapes", n_train=4, n_val=3, size=(64, 32), seed=2)
    for top in ("leftImg8bit", "gtFine"):
        shutil.rmtree(root / top / "train")


def collection_and_foreign_zip(tmp: Path) -> None:
    """A collection, and a zip that is some other tool's export."""
    from test_labeling import make_collection
    make_collection(tmp / "col")
    with zipfile.ZipFile(tmp / "other.zip", "w") as z:
        z.writestr("annotations/instances_default.json", "{}")


CASES = [
    Case("non-UTF-8 image name as --source: read from its bytes",
         ["run", "--source", f"{BAD}.png"], EXIT_OK, "stopped by end of source",
         setup=lambda t: png(t, f"{BAD}.png")),
    Case("non-UTF-8 video name as --source: one line naming it",
         ["run", "--source", f"{BAD}.avi"], EXIT_USAGE, "bad\\xffname.avi: the name is not valid UTF-8",
         setup=lambda t: video(t, f"{BAD}.avi")),
    Case("non-UTF-8 --save video name: one line, nothing written",
         ["run", "--source", "a.png", "--save", f"{BAD}.mp4"], EXIT_USAGE,
         "--save bad\\xffname.mp4: the name is not valid UTF-8", setup=png),
    Case("non-UTF-8 name inside a folder source, saved to a folder",
         ["run", "--source", "frames", "--save", "out"], EXIT_OK, "saved 2 frames to out",
         setup=folder_with, creates=("out",)),
    Case("a folder named like an image is not an image",
         ["run", "--source", "only"], EXIT_USAGE, "only: no images",
         setup=lambda t: (t / "only" / "x.png").mkdir(parents=True)),
    Case("the token never lands in the report",
         ["run", "--source", "a.png", "--serve", "127.0.0.1:0", "--serve-token", "s3cr3t-t0ken",
          "--report", "r.json", "--report-every", "0.01"], EXIT_OK, "report written to r.json",
         setup=png, creates=("r.json",), absent="s3cr3t-t0ken"),
    Case("an empty --serve-token is refused",
         ["run", "--source", "a.png", "--serve", "127.0.0.1:0", "--serve-token", ""], EXIT_USAGE,
         "--serve-token: the token is empty", setup=png),
    Case("an empty $EDGE_SEG_SERVE_TOKEN is refused",
         ["run", "--source", "a.png", "--serve", "127.0.0.1:0"], EXIT_USAGE,
         "$EDGE_SEG_SERVE_TOKEN: the token is empty", setup=png, env={server.TOKEN_ENV: ""}),
    Case("a FIFO nobody writes to: one line after --open-timeout",
         ["run", "--source", "ff.mp4", "--open-timeout", "0.2"], EXIT_USAGE,
         "ff.mp4: did not open within 0.2 s", setup=lambda t: os.mkfifo(t / "ff.mp4")),
    Case("a refused stream says it failed, not that it waited",
         ["run", "--source", "rtsp://127.0.0.1:9/none"], EXIT_USAGE, "cannot open the stream (it failed after"),
    Case("a truncated video warns that it ended early",
         ["run", "--source", "cut.avi", "--report", "r.json"], EXIT_OK,
         "warning: cut.avi: the source ended early, at frame", setup=truncated_avi, creates=("r.json",)),
    Case("a truncated model without a sidecar is damaged, not without metadata",
         ["run", "--source", "a.png", "--model", "cut.tflite"], EXIT_USAGE,
         "model cut.tflite: damaged (truncated or corrupt", setup=lambda t: (png(t), truncated_model(t))),
    Case("data check on an evaluation-only Cityscapes folder, asked for test",
         ["data", "check", "cs", "--splits", "test"], EXIT_OK, "no problems found",
         setup=evaluation_only_cityscapes),
    Case("data check on an evaluation-only Cityscapes folder says what its val/ is",
         ["data", "check", "cs"], 1, "'test' is the official val/ folder: to check only test, "
         "pass --splits test", setup=evaluation_only_cityscapes),
    Case("data export of a missing collection: one line",
         ["data", "export", "nope", "--format", "cvat", "-o", "out"], EXIT_USAGE,
         "nope: collection folder not found"),
    Case("data import of a zip that is not CVAT's: one line, nothing written",
         ["data", "import", "col", "other.zip", "-o", "lab", "--format", "cvat"], EXIT_USAGE,
         "other.zip: not a CVAT 'Segmentation mask 1.1' export (no labelmap.txt)",
         setup=collection_and_foreign_zip),
    Case("--collect naming a file: one line, the file untouched",
         ["run", "--source", "a.png", "--collect", "notes.txt"], EXIT_USAGE,
         "--collect notes.txt: exists and is not a folder", setup=lambda t: (png(t), notes(t))),
    Case("--collect below a file: cannot be written, nothing made",
         ["run", "--source", "a.png", "--collect", "notes.txt/frames"], EXIT_OUTPUT_FAILED,
         "--collect notes.txt/frames: cannot write", setup=lambda t: (png(t), notes(t))),
    Case("--collect into the source folder is refused",
         ["run", "--source", "frames", "--collect", "frames"], EXIT_USAGE,
         "--collect frames: that is an input of this command", setup=lambda t: png(t, "frames/a.png")),
    Case("--collect inside the --save frames folder is refused (publishing it would take it along)",
         ["run", "--source", "a.png", "--save", "out", "--collect", "out/c"], EXIT_USAGE,
         "--collect out/c: overlaps --save out", setup=png),
]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() if p.is_file() and not p.is_fifo() else None
            for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case, tiny_models, tmp_path, monkeypatch):
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    args = [a.format(model=tiny_models["int8"], tmp=tmp_path) for a in case.args]
    if args[0] == "run":
        args += ["--headless", "--threads", "1"]
        if "--model" not in args:
            args += ["--model", str(tiny_models["int8"])]
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)  # only a case's own token counts
    done = edge_seg(*args, cwd=tmp_path, env=case.env, timeout=TIMEOUT_S)
    output = done.stdout + done.stderr
    assert done.returncode == case.code, output
    assert "Traceback" not in output
    assert any(case.line in line for line in output.splitlines()), output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == (case.code not in (EXIT_OK, 1)), done.stderr
    assert not [line for line in done.stderr.splitlines() if line.lstrip().startswith("[")], done.stderr
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k.parts[0] not in case.creates} == before
    assert not [p for p in after if ".partial-" in str(p) or str(p).endswith(".tmp")]
    if case.absent:
        assert case.absent not in output
        assert not [p for p in case.creates if case.absent in (tmp_path / p).read_text()]


def test_a_truncated_video_is_reported_in_the_summary(tiny_models, tmp_path):
    truncated_avi(tmp_path)
    summary = run_pipeline(RunOptions(source=str(tmp_path / "cut.avi"), model=str(tiny_models["int8"]),
                                      show=False, threads=1, quiet=True))
    assert summary["stopped_by"] == "end of source"
    assert summary["source"]["warning"].startswith("the source ended early")
    whole = write_video(tmp_path / "whole.avi", street_frames(6, size=(160, 80)))
    summary = run_pipeline(RunOptions(source=str(whole), model=str(tiny_models["int8"]),
                                      show=False, threads=1, quiet=True))
    assert summary["frames"] == 6 and summary["source"]["warning"] is None


def test_an_unreadable_profile_folder_is_a_warning(tiny_models, tmp_path, monkeypatch, capsys):
    """A service user whose HOME cannot be read (HOME=/root): the tests run as root, for
    whom modes do not block reads, so the refusal is injected where the profile is looked up."""
    from edge_seg import device_profile

    class Unreadable(type(tmp_path)):
        def is_file(self):
            raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(device_profile, "default_profile_path",
                        lambda: Unreadable("/root/.config/edge-seg/profile.json"))
    png(tmp_path)
    summary = run_pipeline(RunOptions(source=str(tmp_path / "a.png"), show=False, threads=1,
                                      quiet=True, model=str(tiny_models["int8"])))
    assert summary["frames"] == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: profile /root/.config/edge-seg/profile.json cannot be read "
                        "(permission denied); ignored, starting with the default model"]


# -- the web server under attack --------------------------------------------------------------
def _stats() -> dict:
    return {"edge_seg": "test", "frames": 0, "processed": 0, "source": {}, "dropped_frames": 0,
            "corrupt_frames": 0, "fps": None, "running": True, "latency_ms": {},
            "agreement": None, "stream": None, "model": {}, "backend": {}}


def _request(port: int, path: str, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode("utf-8"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def web():
    srv = server.open_server("127.0.0.1:0", _stats, max_clients=2, token="s3cret")
    srv.start()
    yield srv
    srv.close()


def test_trickled_headers_neither_hold_a_connection_nor_lock_out_metrics(web):
    trickling = web.max_clients + server.SPARE_CONNECTIONS + 4
    socks = []
    for _ in range(trickling):  # every connection the server takes, and more, sending a byte each
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=30)
        sock.sendall(b"G")
        socks.append(sock)
    # the scrapes still get in: the longest-waiting unfinished request makes room
    for path in ("/metrics", "/stats.json"):
        assert _request(web.port, path, "Authorization: Bearer s3cret\r\n").startswith(b"HTTP/1.1 200")
    assert web.figures()["evicted"] >= 2
    # a request that does not finish its headers within the deadline is closed, however
    # steadily it trickles (sockets.recv returns b'' once the server hangs up)
    web.header_deadline = 0.2
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=30)
    stop = threading.Event()

    def trickle():
        for byte in b"GET / HTTP/1.1\r\nX: " + b"a" * 10_000:
            if stop.wait(0.02):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    assert _closed_by_server(sock)
    stop.set()
    sender.join(30)
    for s in socks + [sock]:
        s.close()


def test_a_client_without_the_token_holds_no_connection(web):
    with socket.create_connection(("127.0.0.1", web.port), timeout=30) as sock:
        sock.sendall(b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive asked
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401")  # ...and the connection closed after it


@pytest.mark.parametrize("token", ["tökén", "s3cret"])
def test_a_token_works_in_the_header_and_the_query(token):
    srv = server.open_server("127.0.0.1:0", _stats, token=token)
    srv.start()
    try:
        from urllib.parse import quote
        assert _request(srv.port, "/stats.json", f"Authorization: Bearer {token}\r\n").startswith(b"HTTP/1.1 200")
        assert _request(srv.port, f"/stats.json?token={quote(token)}").startswith(b"HTTP/1.1 200")
        assert _request(srv.port, "/stats.json", f"Authorization: Bearer {token}x\r\n").startswith(b"HTTP/1.1 401")
    finally:
        srv.close()


def test_every_address_is_said_in_the_banner():
    srv = server.open_server("0:0", _stats, token="s3cret")
    try:
        assert "(all addresses)" in srv.describe()
    finally:
        srv.close()


# -- signals ------------------------------------------------------------------------------------
def test_a_second_sigterm_while_finalising_removes_the_partial_file(tiny_models, tmp_path, monkeypatch):
    """The first SIGTERM stops the loop; the second arrives while the video is being
    checked before publishing (held there by an event): nothing is published, the partial
    file is gone and the run ends with RunAbandoned (exit code 5)."""
    out, report = tmp_path / "out.avi", tmp_path / "r.json"
    finalising, release = threading.Event(), threading.Event()
    verify = sinks.FrameSink._verify_video

    def held(self):
        finalising.set()
        release.wait(TIMEOUT_S)
        verify(self)

    monkeypatch.setattr(sinks.FrameSink, "_verify_video", held)
    video(tmp_path, "in.avi", n=60)

    def signals():
        while not list(tmp_path.glob(".out.partial-*")):
            if release.wait(0.01):
                return
        os.kill(os.getpid(), signal.SIGTERM)
        if finalising.wait(TIMEOUT_S):
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=signals, daemon=True)
    sender.start()
    with pytest.raises(RunAbandoned) as caught:
        run_pipeline(RunOptions(source=str(tmp_path / "in.avi"), model=str(tiny_models["int8"]),
                                show=False, threads=1, quiet=True, save=str(out),
                                report=str(report), realtime=True))
    release.set()
    sender.join(TIMEOUT_S)
    assert caught.value.exit_code == EXIT_ABANDONED == 5
    assert "a second SIGTERM while stopping" in str(caught.value)
    assert not out.exists() and not report.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def _wait_for_reader(fifo: Path) -> int:
    """A writer's end of ``fifo``, once the run has opened it for reading (an open for
    writing without blocking succeeds only then)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert time.monotonic() < deadline, "the run never opened the pipe"
            time.sleep(0.02)


def test_sigterm_while_a_fifo_opens_is_a_stop(tiny_models, tmp_path):
    fifo = tmp_path / "ff.mp4"
    os.mkfifo(fifo)
    argv = edge_seg_argv("run", "--source", fifo, "--headless", "--model", tiny_models["int8"],
                         "--open-timeout", "0")
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = _wait_for_reader(fifo)  # held open without data: the run's read blocks in OpenCV
    try:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        os.close(writer)
    assert proc.returncode == EXIT_OK, stderr
    assert "stopped by SIGTERM" in stdout and "Traceback" not in stderr


def test_sigterm_while_a_stream_does_not_answer_is_a_stop(tiny_models, tmp_path):
    """A listener on 127.0.0.1 that accepts and never answers: the run waits on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    argv = edge_seg_argv("run", "--source", f"http://127.0.0.1:{port}/cam", "--headless", "--model",
                         tiny_models["int8"])
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listener.settimeout(TIMEOUT_S)
    conn, _ = listener.accept()  # the run is inside its open, waiting for an answer
    try:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        conn.close()
        listener.close()
    assert proc.returncode == EXIT_OK, stderr
    assert "stopped by SIGTERM" in stdout and "error" not in stderr

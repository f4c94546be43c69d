"""The shared test helpers: the CLI subprocess (`edge_seg`) and the package-index check
behind the `network` marker."""
from __future__ import annotations

import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import INDEX_TIMEOUT_S, edge_seg, index_unreachable


def test_the_cli_runs_under_its_own_name_with_extra_env_and_cwd(tmp_path):
    prelude = ("import os\nprint('CWD', os.getcwd())\n"
               "print('PROBE', os.environ['EDGE_SEG_TEST_PROBE'])\n")
    done = edge_seg("--help", prelude=prelude, env={"EDGE_SEG_TEST_PROBE": "42"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"CWD {tmp_path}" and lines[1] == "PROBE 42"
    assert lines[2].startswith("Usage: edge-seg ")


def test_block_tf_makes_tensorflow_unimportable():
    done = edge_seg("--help", prelude="import tensorflow\n", block_tf=True)
    assert done.returncode == 1 and "TensorFlow is blocked in this test: tensorflow" in done.stderr


def test_a_hung_cli_is_stopped_by_the_timeout():
    with pytest.raises(subprocess.TimeoutExpired):
        edge_seg("--help", prelude="import threading\nthreading.Event().wait()\n", timeout=1)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_index_on_a_closed_port_is_one_line_of_why(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    why = index_unreachable.__wrapped__()
    assert why is not None and "\n" not in why
    assert why.startswith(f"the package index does not answer within {INDEX_TIMEOUT_S} s: "
                          f"http://127.0.0.1:{port}/simple/click/: ")
    assert "refused" in why.lower()


def test_an_index_that_answers_not_found_still_answers(monkeypatch):
    """Only no answer at all skips: an index without the probed project is still there."""
    asked = []

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple/")
        assert index_unreachable.__wrapped__() is None
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/simple/click/"]

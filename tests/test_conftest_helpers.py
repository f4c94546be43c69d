"""The shared test helper that runs the CLI in a subprocess (`edge_seg`)."""
from __future__ import annotations

import subprocess

import pytest

from conftest import edge_seg


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

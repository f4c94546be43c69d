"""What a supervisor relies on: the exit-code table in docs/serving.md is the one in
edge/errors.py, and the one systemd unit (docs/edge-seg.service) is valid for systemd, runs
valid `edge-seg run` options and restarts exactly on the codes the table says to restart on."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_seg import errors
from edge_seg.run.command import run as run_command

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "docs" / "edge-seg.service"
SERVING = REPO / "docs" / "serving.md"
BEGIN, END = "<!-- exit-codes:begin", "<!-- exit-codes:end -->"


def unit_values(key: str) -> list[str]:
    """Every value of ``key`` in the unit, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", UNIT.read_text())
    return [line.split("=", 1)[1].strip() for line in text.splitlines()
            if line.startswith(f"{key}=")]


def test_the_exit_code_page_is_generated_from_the_code():
    page = SERVING.read_text()
    block = page[page.index(BEGIN):page.index(END)]
    table = block[block.index("\n") + 1:]
    assert table == errors.exit_codes_markdown(), (
        "docs/serving.md's exit-code table differs from edge/errors.py: paste the output of "
        "`python -m edge_seg.errors` between its markers")


def test_the_table_names_each_exit_constant_once():
    constants = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")
                 and isinstance(value, int)}
    rows = {e.name: e.code for e in errors.EXIT_CODES if e.name.startswith("EXIT_")}
    assert rows == {name: str(value) for name, value in constants.items()}


def test_other_pages_link_to_the_one_table_instead_of_copying_it():
    for page in ("README.md", "docs/running.md", "docs/outputs.md", "docs/deploying.md"):
        text = (REPO / page).read_text()
        assert "serving.md#exit-codes" in text, page
        assert "reconnect-timeout` |" not in text and "| 3 |" not in text, page


def test_the_unit_restarts_on_exactly_the_codes_the_table_restarts_on():
    assert unit_values("Restart") == ["on-failure"]  # any non-zero code, unless prevented
    prevented = {int(c) for c in unit_values("RestartPreventExitStatus")[0].split()}
    rows = [e for e in errors.EXIT_CODES if e.restart is not None]
    assert prevented == {int(e.code) for e in rows if not e.restart and e.code != "0"}
    assert {int(e.code) for e in rows if e.restart} == {errors.EXIT_INTERNAL,
                                                        errors.EXIT_SOURCE_LOST}


def test_the_unit_runs_valid_run_options_that_can_end_in_a_lost_camera():
    (exec_start,) = unit_values("ExecStart")
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "edge-seg" and argv[1] == "run"
    ctx = run_command.make_context("run", argv[2:])  # click refuses unknown or malformed options
    assert ctx.params["show"] is False
    assert ctx.params["reconnect_timeout"] > 0  # else a lost camera is retried forever: no exit 3
    assert not ctx.params.get("save")           # a service saving frames fills the disk


def test_the_pages_show_the_one_unit():
    unit = UNIT.read_text()
    served = SERVING.read_text()
    assert unit in served  # shown verbatim
    for page in ("docs/serving.md", "docs/deploying.md"):
        text = (REPO / page).read_text()
        assert "](edge-seg.service)" in text, page
        assert text.count("[Service]") <= (1 if page.endswith("serving.md") else 0), page


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (not a systemd system)")
def test_systemd_accepts_the_unit(tmp_path):
    # systemd checks that ExecStart's program exists: point it at this install's edge-seg
    program = Path(sys.executable).with_name("edge-seg")
    unit = tmp_path / "edge-seg.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={program}", UNIT.read_text(), flags=re.M))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "edge-seg.service" not in out, out

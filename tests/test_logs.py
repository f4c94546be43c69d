"""What a device tells its owner: ``--log-format json`` lines a shipper can parse, the
text lines people and scripts match, the progress display that stays out of logs, and the
summary and report lines carrying the figures of ``/stats.json``."""
from __future__ import annotations

import io
import json
import sys
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import edge_seg as run_cli
from edge_seg import log as logs
from edge_seg.run.command import RunOptions, run_pipeline


def records(*texts: str) -> list[dict]:
    """Every line of ``texts`` as a JSON object; fails on any line that is not one."""
    out = []
    for text in texts:
        for line in text.splitlines():
            record = json.loads(line)
            assert isinstance(record, dict), line
            out.append(record)
    return out


@pytest.fixture
def json_logs():
    logs.configure("info", "json")
    yield
    logs.configure()


def test_json_run_is_one_parseable_record_per_line(tmp_path):
    done = run_cli("--log-format", "json", "run", "--source", "demo", "--max-frames", 20,
                   "--report-every", 0.05, "--headless", "--profile", tmp_path / "missing.json")
    assert done.returncode == 0, done.stderr[-2000:]
    out, err = records(done.stdout), records(done.stderr)
    for r in out + err:
        assert {"time", "level", "event", "message"} <= set(r), r
        when = datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
        assert when.utcoffset() == timedelta(0), r["time"]
        assert r["level"] in logs.LEVELS and r["event"] and isinstance(r["message"], str)
    events = [r["event"] for r in out]
    assert events[0] == "run.start" and events[-1] == "run.summary", events
    assert "run.report" in events  # the last one is written when the run ends
    # a warning is a record on stderr, its message without the text format's prefix
    [warning] = [r for r in err if r["level"] != "info"]  # info: the demo clip's first rendering
    assert warning["level"] == "warning" and warning["event"] == "profile.ignored"
    assert warning["message"].startswith("profile ") and "missing.json" in warning["message"]
    summary = out[-1]
    assert summary["frames"] == summary["processed"] == 20
    assert summary["message"].startswith("edge-seg run: 20 frames")


def test_a_warning_in_text_stays_one_human_line(tmp_path):
    missing = tmp_path / "missing.json"
    done = run_cli("run", "--source", "demo", "--max-frames", 2, "--headless", "--profile", missing)
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in done.stderr.splitlines() if not line.startswith("demo: rendering")]
    assert said == [f"warning: profile {missing} does not exist; ignored"]
    assert done.stdout.splitlines()[0].startswith("edge-seg ")
    assert not done.stdout.lstrip().startswith("{")


def test_an_error_is_one_line_in_either_format(tmp_path):
    bad = tmp_path / "none.mp4"
    text = run_cli("run", "--source", bad, "--headless")
    assert text.returncode == 2 and len(text.stderr.splitlines()) == 1, text.stderr
    assert text.stderr.startswith("error: ") and str(bad) in text.stderr
    as_json = run_cli("--log-format", "json", "run", "--source", bad, "--headless")
    assert as_json.returncode == 2
    [record] = records(as_json.stderr)
    assert record["level"] == "error" and record["exit_code"] == 2
    assert record["message"] == text.stderr.strip().removeprefix("error: ")


def test_log_level_warning_keeps_only_warnings(tmp_path):
    done = run_cli("--log-level", "warning", "run", "--source", "demo", "--max-frames", 2,
                   "--headless", "--profile", tmp_path / "missing.json")
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.splitlines() == [f"warning: profile {tmp_path / 'missing.json'} does not "
                                        "exist; ignored"]  # the demo's rendering note is info


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal, quiet, fmt, shown", [
    (False, False, "text", False),   # a pipe, a file, journald
    (True, False, "text", True),
    (True, True, "text", False),     # -q
    (True, False, "json", False),    # a bar's redraws are no records
])
def test_progress_is_shown_only_on_a_terminal(monkeypatch, terminal, quiet, fmt, shown):
    stderr = FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.configure("info", fmt)
    try:
        assert list(logs.progress(range(7), total=7, desc="work", quiet=quiet)) == list(range(7))
        tick = logs.counter("count", quiet=quiet)
        for i in range(1, 4):
            tick(i, 3)
    finally:
        logs.configure()
    assert ("7/7" in stderr.getvalue() and "3/3" in stderr.getvalue()) is shown
    assert (stderr.getvalue() != "") is shown


def test_callback_lines_keep_their_level_event_and_fields(capsys, json_logs):
    log = logs.callback("source")
    log(logs.Line("source.lost", "warning: camera gone; reconnecting", disconnects=3))
    log("note: a note")
    log("camera 0 is back after 1.0 s")
    out, err = capsys.readouterr()
    assert out == ""
    lost, note, back = records(err)
    assert (lost["level"], lost["event"], lost["message"], lost["disconnects"]) == \
        ("warning", "source.lost", "camera gone; reconnecting", 3)
    assert (note["level"], note["event"], note["message"]) == ("info", "source", "a note")
    assert (back["level"], back["message"]) == ("info", "camera 0 is back after 1.0 s")


def test_summary_and_report_lines_carry_the_stats_json_keys(tmp_path, capsys, json_logs):
    """The keys /stats.json serves (over HTTP), in the summary record and every report
    line; the summary also lists the recording's segments, one save.published each."""
    served = {}

    def fetch(run):
        with urllib.request.urlopen(f"http://127.0.0.1:{run.server.port}/stats.json", timeout=30) as r:
            served.update(json.loads(r.read()))

    frames = 40
    run_pipeline(RunOptions(source="demo", max_frames=frames, show=False, serve="127.0.0.1:0",
                            report_every=0.05, save=str(tmp_path / "out.mp4"), save_segment=0.5),
                 on_start=fetch)
    out, err = capsys.readouterr()
    got = records(out, err)
    stats_keys = set(served) - {"time"}  # the record's own ISO time stands for it
    summary = [r for r in got if r["event"] == "run.summary"]
    reports = [r for r in got if r["event"] == "run.report"]
    assert len(summary) == 1 and reports
    for r in summary + reports:
        assert stats_keys <= set(r), stats_keys - set(r)
    segments = summary[0]["saved"]["segments"]
    assert len(segments) >= 2 and sum(s["frames"] for s in segments) == frames
    published = [r for r in got if r["event"] == "save.published"]
    assert [r["path"] for r in published] == [s["path"] for s in segments]
    assert all(Path(s["path"]).is_file() for s in segments)

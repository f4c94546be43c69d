"""benchmarks/bench_reference.py: the published table is complete and sourced, estimates are
published ms x measured ratio (checked on fixed, injected times), blocks run in a new order
each round, and the reference network builds and converts; nothing asserts how long anything
took."""
import json
from pathlib import Path

import pytest

pytest.importorskip("tf_keras")

from benchmarks import bench_reference as br  # noqa: E402


def graph(name, kind, network, precision, ms):
    return {"name": name, "kind": kind, "network": network, "precision": precision, "path": name,
            "sha256": f"{len(name):012d}", "note": "", "ms": {str(t): v for t, v in ms.items()}}


# reference 10 ms fp32 / 5 ms int8 at 1 thread, ours 4x and 3x that; at 2 threads 6 / 3 ms, ours 4x and 5x
GRAPHS = [graph("mobilenet_v2 fp32", "reference", "mobilenet_v2", "fp32", {1: 10.0, 2: 6.0}),
          graph("mobilenet_v2 int8", "reference", "mobilenet_v2", "int8", {1: 5.0, 2: 3.0}),
          graph("ours fp32", "ours", "", "fp32", {1: 40.0, 2: 24.0}),
          graph("ours int8", "ours", "", "int8", {1: 15.0, 2: 15.0})]


def row(**kw):
    base = {"device": "Board", "cpu": "4x A72", "int8_dot": False, "network": "mobilenet_v2",
            "framework": "ncnn", "precision": "fp32", "threads": 4, "ms": 60.0, "source": "a/b README.md",
            "note": "n"}
    return {**base, **kw}


def test_the_published_table_is_complete_and_every_row_names_its_source(capsys):
    br.check_published()
    assert br.PUBLISHED, "no published figures"
    for r in br.PUBLISHED:
        assert set(r) == set(br.PUBLISHED_KEYS)
        assert r["source"].endswith(".md") and "/" in r["source"]  # repository + path
        assert r["network"] in br.REFERENCES
    # every device the task names has a figure
    devices = " ".join(r["device"] for r in br.PUBLISHED)
    assert "Raspberry Pi 4" in devices and "Raspberry Pi 5" in devices and "Orin" in devices
    assert br.main(["--published"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert len(lines) == len(br.PUBLISHED) + 1  # a header, then one line a row


@pytest.mark.parametrize("bad", [{"source": ""}, {"ms": 0}, {"threads": 0}, {"network": "resnet18"},
                                 {"precision": "fp16"}, {"note": None}])
def test_a_row_without_source_or_with_a_bad_value_is_rejected(bad):
    with pytest.raises(ValueError):
        br.check_published((row(**bad),))


def test_ratios_pair_each_model_with_the_reference_in_its_own_precision():
    got = {(r["model"], r["threads"]): r["ratio"] for r in br.ratios(GRAPHS)}
    assert got == pytest.approx({("ours fp32", 1): 4.0, ("ours fp32", 2): 4.0,
                                 ("ours int8", 1): 3.0, ("ours int8", 2): 5.0})


def test_estimates_are_published_ms_times_the_ratio_at_the_nearest_thread_count():
    published = (row(threads=4, ms=60.0), row(threads=1, ms=90.0), row(precision="int8", ms=30.0),
                 row(network="mobilenet_v1"))  # no measured v1: no estimate from it
    est = br.estimates(br.ratios(GRAPHS), published)
    got = [(e["model"], e["threads"], e["ratio_threads"], e["estimate_ms"]) for e in est]
    assert got == [("ours fp32", 4, 2, pytest.approx(240.0)), ("ours fp32", 1, 1, pytest.approx(360.0)),
                   ("ours int8", 4, 2, pytest.approx(150.0))]
    assert est[0]["estimate_fps"] == pytest.approx(1000 / 240)
    assert est[0]["source"] == "a/b README.md"


@pytest.mark.parametrize("wanted, measured, nearest", [(4, [1, 2], 2), (12, [1, 2], 2), (1, [1, 2], 1),
                                                      (3, [2, 4], 4), (2, [1, 2, 4], 2)])
def test_nearest_thread_count(wanted, measured, nearest):
    assert br.nearest_threads(wanted, measured) == nearest


def test_measure_runs_every_pair_once_a_round_in_a_new_order_with_a_pause_after_each_block():
    calls, pauses = [], []

    def run_block(path, threads, runs, warmup):
        calls.append((path, threads))
        return 10.0 * len(calls)

    blocks = br.measure(["a", "b", "c"], [1, 2], rounds=4, block=7, pause=0.5, run_block=run_block,
                        sleep=pauses.append)
    rounds = [calls[i:i + 6] for i in range(0, len(calls), 6)]
    assert len(rounds) == 4 and all(sorted(r) == sorted(blocks) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    assert pauses == [0.5] * 24
    assert all(len(v) == 4 for v in blocks.values())


def test_estimates_from_a_saved_run_without_timing(tmp_path, capsys):
    from benchmarks.machine import machine

    saved = {"machine": machine([1, 2]), "command": "python benchmarks/bench_reference.py", "threads": [1, 2],
             "graphs": GRAPHS, "load_avg_at_start": 0.5,
             "timing": {"rounds": 5, "block": 10, "warmup": 3, "pause_s": 0.3}}
    src, out = tmp_path / "run.json", tmp_path / "again.json"
    src.write_text(json.dumps(saved))
    assert br.main(["--estimates", "--from", str(src), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Estimates (published ms x ratio; not measurements)" in text
    result = json.loads(out.read_text())
    pi4 = [e for e in result["estimates"] if e["model"] == "ours fp32" and e["ms"] == 61.88]
    assert pi4 and pi4[0]["estimate_ms"] == pytest.approx(61.88 * 4.0)


def test_a_saved_run_is_summarised_again_from_its_block_medians_by_the_chosen_statistic(tmp_path):
    from benchmarks.machine import machine

    with_blocks = []
    for g in GRAPHS:  # three blocks a graph: its 1-thread ms once, twice and three times
        m = g["ms"]["1"]
        with_blocks.append({**g, "ms": {}, "blocks": {"1": [3 * m, m, 2 * m]}})
    saved = {"machine": machine([1]), "command": "c", "threads": [1], "graphs": with_blocks,
             "load_avg_at_start": 0.5, "timing": {"rounds": 3, "block": 10, "warmup": 3, "pause_s": 0.3}}
    src = tmp_path / "run.json"
    src.write_text(json.dumps(saved))
    for statistic, factor in (("median", 2), ("min", 1)):
        out = tmp_path / f"{statistic}.json"
        assert br.main(["--from", str(src), "--statistic", statistic, "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        ours = {r["model"]: r for r in result["ratios"]}["ours fp32"]
        assert ours["ours_ms"] == pytest.approx(40.0 * factor) and ours["ratio"] == pytest.approx(4.0)


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--statistic", "mean"], ["--threads", "a"], ["--references", "resnet18"],
                                  ["--rounds", "0"], ["--model", "missing.tflite"], ["--model", "README.md"],
                                  ["--no-defaults"], ["--from", "missing.json"]])
def test_bad_options_are_one_error_line_and_exit_2(argv, capsys, monkeypatch):
    if argv[0] == "--model" and argv[1] == "README.md":
        monkeypatch.chdir(br.REPO)
    assert br.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.slow
def test_the_reference_builds_at_a_small_size_converts_and_times_in_its_own_process(tmp_path):
    from edge_seg.backends.litert import load_graph

    model = br.build_reference("mobilenet_v2", 32)
    assert model.output_shape == (None, 1000)
    for precision, dtype in (("fp32", "float32"), ("int8", "uint8")):
        content = br.convert_graph(model, precision, "uint8", frames=2)
        path = tmp_path / f"ref-{precision}.tflite"
        path.write_bytes(content)
        inp = load_graph(content).get_input_details()[0]
        assert list(inp["shape"]) == [1, 32, 32, 3] and inp["dtype"].__name__ == dtype
        assert br.precision_of(path) == precision  # no metadata: read from the graph
    assert br.spawn_block(str(tmp_path / "ref-int8.tflite"), 1, runs=2, warmup=1) > 0


def test_the_docs_show_the_command_and_the_estimates_section():
    doc = (Path(br.REPO) / "docs" / "benchmarks.md").read_text()
    assert "## Estimates for devices we have not measured" in doc
    assert "python benchmarks/bench_reference.py" in doc

"""benchmarks/profile_stages.py: stages found from the layer names, every prefix converted and
timed, the table's rows adding up to the whole model; no assertion on how long anything took."""
import json
from pathlib import Path

import pytest

pytest.importorskip("tf_keras")

from benchmarks import profile_stages as ps  # noqa: E402

JSON_KEYS = {"machine", "command", "model", "input_size", "macs", "calibration", "stages", "timing",
             "threads"}
ROW_KEYS = {"stage", "first_layer", "last_layer", "macs", "gmac", "int8_ms", "int8_share", "int8_gmacs",
            "fp32_ms", "fp32_share", "fp32_gmacs", "int8_vs_fp32"}


@pytest.fixture(scope="module")
def mobilenet_unet():
    from edge_seg.train.models import build_model
    return build_model("unet-mobilenetv2", (128, 64), alpha=0.35)


def test_mobilenet_unet_stages_follow_the_block_groups_and_decoder_steps(mobilenet_unet):
    from edge_seg.train.models import _MNV2_DEEP, _MNV2_SKIPS, count_macs

    stages = ps.find_stages(mobilenet_unet)
    names = [s.name for s in stages]
    assert names == ["encoder /2", "encoder /4", "encoder /8", "encoder /16", "encoder /32",
                     "dec16", "dec8", "dec4", "dec2", "head", "upsample x2"]
    # the encoder stages end where train.models takes its skips
    assert [s.output for s in stages[:5]] == [*(_MNV2_SKIPS[k] for k in (2, 4, 8, 16)), _MNV2_DEEP]
    assert stages[0].layers[0] == "Conv1"
    assert stages[-1].layers == ["head_up", "logits"] and stages[-1].macs == 0
    every = [name for s in stages for name in s.layers]
    assert len(every) == len(set(every)) == len(mobilenet_unet.layers) - 1  # all but the input, once
    assert sum(s.macs for s in stages) == count_macs(mobilenet_unet)


@pytest.mark.parametrize("arch, last", [("lraspp-mobilenetv2", ["lr + upsample x8"]),
                                        ("deeplabv3plus-mobilenetv2", ["aspp", "dec", "head", "upsample x4"])])
def test_every_cut_holds_its_stage_and_those_before_even_with_branches(arch, last):
    """LR-ASPP's stride-8 head branch leaves a cut before the upsampling incomplete (merged);
    DeepLab's low-level projection sits among the ASPP layers in graph order (grouped)."""
    from edge_seg.train.models import build_model, count_macs

    model = build_model(arch, (128, 64), alpha=0.35)
    stages = ps.find_stages(model)
    assert [s.name for s in stages[5:]] == last
    before: set = set()
    for stage in stages[:-1]:
        before |= set(stage.layers)
        assert ps._ancestors(model, stage.output) == before
    assert sum(s.macs for s in stages) == count_macs(model)


def test_measure_times_blocks_in_a_new_order_each_round_with_a_pause_between():
    calls, pauses = [], []

    def timer(runner, frames, warmup, runs):
        calls.append((runner, runs))
        return {"infer_p50": float(len(calls))}
    runners = {k: k for k in "abcdef"}
    blocks = ps.measure(runners, rounds=4, block=3, pause=0.5, timer=timer, sleep=pauses.append)
    timed = [r for r, runs in calls if runs == 3]
    assert len(calls) == 6 + 24 and len(timed) == 24
    orders = [tuple(timed[i:i + 6]) for i in range(0, 24, 6)]
    assert all(sorted(o) == list("abcdef") for o in orders)
    assert len(set(orders)) > 1  # never the same round-robin order every round
    assert pauses == [0.5] * 24
    assert all(len(v) == 4 for v in blocks.values())


def test_stage_table_differences_prefixes_and_shares_add_up():
    stages = [ps.Stage("a", ["x"], 100), ps.Stage("b", ["y"], 300)]
    ms = {("int8", "uint8", 0): 1.0, ("int8", "uint8", 1): 4.0, ("fp32", "float32", 0): 2.0,
          ("fp32", "float32", 1): 3.0, ("int8", "int8", 1): 3.5}
    table = ps.stage_table(stages, ms, 400, "uint8")
    assert [r["int8_ms"] for r in table["rows"]] == [1.0, 3.0]
    assert [r["fp32_ms"] for r in table["rows"]] == [2.0, 1.0]
    assert table["rows"][1]["int8_vs_fp32"] == 3.0
    assert sum(r["int8_share"] for r in table["rows"]) == pytest.approx(1.0)
    assert table["io"]["int8_ms"] == pytest.approx(0.5)
    assert table["total"]["int8_gmacs"] == pytest.approx(400 / 4e-3 / 1e9)


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--threads", "x"], ["--size", "12"],
                                  ["--model", "/nonexistent.keras"], ["--rounds", "0"]])
def test_bad_options_are_one_error_line_and_exit_2(argv, capsys):
    assert ps.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.slow
def test_every_prefix_converts_and_the_table_adds_up(tmp_path):
    import tf_keras as keras

    from edge_seg.train.models import count_macs
    from tests.model_builder import build_unet

    model = build_unet((64, 32), widths=(8, 16, 24))
    path = tmp_path / "tiny.keras"
    model.save(path)
    model = keras.models.load_model(path, compile=False)
    cache, out, md = tmp_path / "cache", tmp_path / "out.json", tmp_path / "out.md"
    assert ps.main(["--model", str(path), "--threads", "1", "--rounds", "2", "--block", "2", "--pause", "0",
                    "--calibration", "synthetic", "--calibration-frames", "2", "--cache", str(cache),
                    "--json", str(out), "--markdown", str(md)]) == 0
    result = json.loads(out.read_text())
    assert JSON_KEYS <= set(result)
    stages = ps.find_stages(model)
    assert [s["name"] for s in result["stages"]] == [s.name for s in stages]
    assert len(list(cache.glob("*.tflite"))) == 2 * len(stages) + 1  # both variants per cut + int8 I/O
    table = result["threads"]["1"]
    assert [r["stage"] for r in table["rows"]] == [s.name for s in stages]
    assert all(ROW_KEYS <= set(r) for r in table["rows"])
    assert sum(r["macs"] for r in table["rows"]) == result["macs"] == count_macs(model)
    for v in ("int8", "fp32"):
        assert sum(r[f"{v}_share"] for r in table["rows"]) == pytest.approx(1.0)
        assert sum(r[f"{v}_ms"] for r in table["rows"]) == pytest.approx(table["total"][f"{v}_ms"])
    assert {"int8_ms", "reference_ms"} <= set(table["io"])
    assert len(table["prefix_blocks"]) == 2 * len(stages) + 1
    assert all(len(b) == 2 for b in table["prefix_blocks"].values())  # one median per round
    text = md.read_text()
    assert text.count("\n| ") == len(stages) + 3  # header, stages, io, total
    # a second run converts nothing new
    assert ps.main(["--model", str(path), "--threads", "1", "--rounds", "1", "--block", "1", "--pause", "0",
                    "--calibration", "synthetic", "--calibration-frames", "2", "--cache", str(cache)]) == 0
    assert len(list(cache.glob("*.tflite"))) == 2 * len(stages) + 1


def test_the_docs_show_the_command():
    doc = (Path(ps.REPO) / "docs" / "benchmarks.md").read_text()
    assert "python benchmarks/profile_stages.py" in doc

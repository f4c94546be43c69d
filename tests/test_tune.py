"""`edge-seg tune`: the choice, the table, the device profile and `edge-seg run`
picking it up; bad input. Tiny 128x64 models (conftest.tiny_models), a few frames and a
fraction of a second per configuration keep it fast; the runtime commands run with
TensorFlow blocked."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import RUNTIME_MODEL_SIZE, edge_seg
from edge_seg.tune.choose import choose, order_rows

FAST = ["--n-frames", "3", "--seconds", "0.05", "--warmup", "1", "--threads", "1",
        "--delegates", "xnnpack", "--no-progress"]


def copy_model(src: Path, dst: Path, variant: str, **extra) -> Path:
    """``src`` as ``dst`` with fresh metadata, in the sidecar and embedded (the cached test
    models share stems)."""
    from edge_seg.backends.metadata import embed_sidecar, make_meta, write_meta
    shutil.copy(src, dst)
    write_meta(dst, make_meta(RUNTIME_MODEL_SIZE, variant, **extra))
    embed_sidecar(dst)
    return dst


@pytest.fixture
def variants_dir(tiny_models, tmp_path) -> Path:
    """fp32 (the reference), its int8, and a net with other random weights (a deliberately
    bad variant: ~0% agreement)."""
    d = tmp_path / "variants"
    d.mkdir()
    copy_model(tiny_models["fp32"], d / "tiny-fp32.tflite", "fp32")
    copy_model(tiny_models["int8"], d / "tiny-int8.tflite", "int8")
    copy_model(tiny_models["other"], d / "tiny-randomised.tflite", "randomised")
    return d


def rows_from(table) -> list[dict]:
    return [dict(file=f, fps=fps, agreement=a) for f, fps, a in table]


# ------------------------------------------------------------------ the choice (deterministic)

def test_fastest_within_the_accuracy_budget():
    rows = rows_from([("fp32", 10.0, 1.0), ("fp16", 14.0, 0.9998), ("int8", 30.0, 0.997),
                      ("int8-small", 55.0, 0.990), ("random", 60.0, 0.02)])
    chosen = choose(rows, max_drop=0.5)
    assert chosen["file"] == "int8"  # 0.3 points; the faster ones drop 1.0 and 98 points
    by = {r["file"]: r for r in rows}
    assert by["random"]["in_budget"] is False and "drop > 0.5" in by["random"]["why"]
    assert by["int8-small"]["in_budget"] is False
    assert by["int8"]["drop"] == pytest.approx(0.3)
    assert choose(rows, max_drop=1.0)["file"] == "int8-small"
    assert choose(rows)["file"] == "int8"  # the default budget is 0.5 points
    ordered = [r["file"] for r in order_rows(rows)]
    assert ordered == ["int8", "fp16", "fp32", "random", "int8-small"]  # choice, budget, rest by FPS


def test_most_accurate_reaching_the_target_fps():
    rows = rows_from([("fp32", 10.0, 1.0), ("fp16", 14.0, 0.9998), ("int8", 30.0, 0.997),
                      ("int8-small", 55.0, 0.990), ("random", 60.0, 0.02)])
    assert choose(rows, target_fps=12)["file"] == "fp16"
    assert choose(rows, target_fps=25)["file"] == "int8"
    by = {r["file"]: r for r in rows}
    assert not by["fp32"]["in_budget"] and "< 25 FPS" in by["fp32"]["why"]
    # without an accuracy budget, even the random net counts once it is the only one fast enough
    assert choose(rows, target_fps=58)["file"] == "random"
    # ... with one, nothing reaches 58 FPS: the fastest within the budget, flagged
    chosen = choose(rows, max_drop=1.0, target_fps=58)
    assert chosen["file"] == "int8-small" and chosen["target_met"] is False


def test_ties_and_unscorable_rows():
    rows = rows_from([("a", 20.0, 0.999), ("b", 20.0, 1.0), ("nan", 99.0, float("nan"))])
    assert choose(rows, max_drop=0.5)["file"] == "b"  # same speed: the more accurate
    nan = rows[2]
    assert math.isinf(nan["drop"]) and not nan["in_budget"]
    assert choose(rows_from([("x", 5.0, 0.5)]), max_drop=0.5) is None


# ------------------------------------------------------------------ end to end

def test_tune_writes_a_profile_that_run_uses(variants_dir, tmp_path):
    profile = tmp_path / "profile.json"
    out = edge_seg("tune", "--models", variants_dir, *FAST, "--max-drop", "50",
                   "--profile", profile, block_tf=True)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    lines = out.stdout.splitlines()
    table = [line for line in lines if "tiny-" in line and "xnnpack" in line and not line.startswith("chosen")]
    assert len(table) == 3
    assert table[0].startswith("*")                         # best first: the choice
    bad = next(line for line in table if "tiny-randomised" in line)
    assert bad.startswith("x") and "drop > 50" in bad       # the random net is out of budget
    assert "reference  tiny-fp32.tflite" in out.stdout

    p = json.loads(profile.read_text())
    from edge_seg.backends.metadata import file_sha256
    from edge_seg.device_profile import device_info
    chosen = Path(p["model"]["path"])
    assert chosen.parent == variants_dir and chosen.name in ("tiny-fp32.tflite", "tiny-int8.tflite")
    assert p["model"]["sha256"] == file_sha256(chosen)
    assert p["threads"] == 1 and p["delegate"] == "xnnpack"
    assert p["device"]["cores"] == device_info()["cores"] and p["device"]["cpu"]
    assert p["created"] and p["fps"] > 0 and p["drop_points"] <= 50
    in_budget = [r for r in p["table"] if r["in_budget"]]
    assert max(r["fps"] for r in in_budget) == p["fps"]     # the fastest within the budget
    assert {r["file"] for r in p["table"] if not r["in_budget"]} == {"tiny-randomised.tflite"}
    ref = next(r for r in p["table"] if r["file"] == "tiny-fp32.tflite")
    assert ref["agreement"] == 1.0 and ref["input"] == "128x64"
    assert {"p50_ms", "p90_ms", "fps", "agreement", "drop", "threads", "delegate"} <= set(ref)

    run = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "3", "--profile", profile,
                   block_tf=True)
    assert run.returncode == 0, run.stderr
    assert f"profile: {profile} (tuned {p['created']}): {chosen.name} threads 1 delegate xnnpack" \
        in run.stdout, run.stdout
    assert f"model    {chosen.name}" in run.stdout
    assert "threads 1" in run.stdout

    # explicit options win over the profile, and the banner says why it is not used
    explicit = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2",
                        "--profile", profile, "--threads", "2", "-q", block_tf=True)
    assert explicit.returncode == 0, explicit.stderr
    summary_model = [line for line in explicit.stdout.splitlines() if "backend" in line]
    assert "threads 2" in summary_model[-1]

    # the model changed since tuning: warned, ignored, the bundled default runs
    with open(chosen, "ab") as f:
        f.write(b"\0")
    changed = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2", "--profile", profile,
                       block_tf=True)
    assert changed.returncode == 0, changed.stderr
    warnings = [line for line in changed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "changed since it was tuned" in warnings[0], changed.stderr
    assert f"model    {chosen.name}" not in changed.stdout
    assert "unet-mobilenetv2" in changed.stdout


def test_default_profile_location_and_onnx(variants_dir, tiny_onnx, isolated_config_home):
    copy_model(tiny_onnx, variants_dir / "tiny-onnx.onnx", "onnx-fp32", onnx={"layout": "NHWC"})
    out = edge_seg("tune", "--models", variants_dir, *FAST[:-3], "--no-progress", "--max-drop", "50",
                   block_tf=True)
    assert out.returncode == 0, out.stderr
    profile = isolated_config_home / "edge-seg" / "profile.json"
    assert profile.is_file(), out.stdout
    p = json.loads(profile.read_text())
    onnx_rows = [r for r in p["table"] if r["kind"] == "onnx"]
    assert onnx_rows and {r["delegate"] for r in onnx_rows} == {"cpu"}
    # the fp32 .tflite stays the reference; the ONNX export of the same net agrees with it
    assert p["reference"]["path"].endswith("tiny-fp32.tflite")
    assert onnx_rows[0]["agreement"] > 0.99
    run = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2", block_tf=True)
    assert run.returncode == 0, run.stderr
    assert f"profile: {profile} (tuned" in run.stdout
    no = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2", "--no-profile", block_tf=True)
    assert "profile:" not in no.stdout and no.returncode == 0


def _profile_run(profile: Path, capsys):
    from edge_seg.run.command import RunOptions, run_pipeline
    s = run_pipeline(RunOptions(source="demo", show=False, max_frames=2, profile=str(profile)))
    return s, capsys.readouterr()


def test_untrustworthy_profiles_are_ignored_with_one_warning(variants_dir, tmp_path, capsys):
    from edge_seg.backends.metadata import file_sha256
    from edge_seg.io.publish import atomic_write_json
    from edge_seg.device_profile import FORMAT, device_info
    model = variants_dir / "tiny-int8.tflite"
    good = {"format": FORMAT, "created": "2026-01-01T00:00:00Z", "device": device_info(),
            "model": {"path": str(model), "sha256": file_sha256(model)}, "threads": 1,
            "delegate": "xnnpack"}
    cases = {
        "corrupt": ("{not json", "unreadable"),
        "missing": (dict(good, model={"path": str(tmp_path / "gone.tflite"), "sha256": "0"}), "is missing"),
        "other-machine": (dict(good, device=dict(device_info(), cpu="Cortex-A72 (Raspberry Pi 4)")),
                          "another device"),
        "not-a-profile": ({"format": "something/1"}, "not an edge-seg profile"),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / f"{name}.json"
        if isinstance(content, str):
            path.write_text(content)
        else:
            atomic_write_json(path, content)
        s, out = _profile_run(path, capsys)
        warnings = [line for line in out.err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and needle in warnings[0], (name, out.err)
        assert s["frames"] == 2 and Path(s["model"]["path"]).parent != variants_dir, name
    path = tmp_path / "good.json"
    atomic_write_json(path, good)
    s, out = _profile_run(path, capsys)
    assert "warning" not in out.err and s["model"]["path"] == str(model)
    assert s["profile"]["path"] == str(path) and "profile: " in out.out


# ------------------------------------------------------------------ bad input

def one_error(out: subprocess.CompletedProcess, needle: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_bad_input_is_one_line(tiny_models, variants_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(edge_seg("tune", "--models", empty, *FAST, block_tf=True), "no usable model variant")
    one_error(edge_seg("tune", "--models", tmp_path / "nope", *FAST, block_tf=True), "no such folder")
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    shutil.copy(tiny_models["int8"], orphan / "lonely.tflite")
    (orphan / "junk.tflite").write_bytes(b"not a model")
    (orphan / "junk.json").write_text("{}")
    one_error(edge_seg("tune", "--models", orphan, *FAST, block_tf=True), "no usable model variant")
    quantised = tmp_path / "quantised"
    quantised.mkdir()
    copy_model(tiny_models["int8"], quantised / "m-int8.tflite", "int8")
    one_error(edge_seg("tune", "--models", quantised, *FAST, block_tf=True), "no float model")
    one_error(edge_seg("tune", "--models", variants_dir, *FAST, "--frames", "9", block_tf=True), "camera")
    one_error(edge_seg("tune", "--models", variants_dir, *FAST, "--frames", tmp_path / "none.mp4",
                       block_tf=True),
              "no such file")


def test_frames_of_any_size_and_a_manifest(variants_dir, tmp_path):
    """Odd-sized frames are resized by the Segmenter; a calibration manifest's frames are
    read relative to its dataset root."""
    from edge_seg.tune.frames import load_frames
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(301, 97), (64, 480), (1000, 50)]):
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 255, (h, w, 3), np.uint8))
    got, text = load_frames(str(frames), 10)
    assert [f.shape[:2] for f in got] == [(97, 301), (480, 64), (50, 1000)] and "3 frames" in text
    out = edge_seg("tune", "--models", variants_dir, *FAST, "--frames", frames, "--no-profile",
                   block_tf=True)
    assert out.returncode == 0, out.stderr
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"format": "edge-seg-calibration/1", "dataset": {"root": "frames"},
                                    "files": [{"image": f"f{i}.png"} for i in range(3)]}))
    got, text = load_frames(str(manifest), 2)
    assert len(got) == 2 and "manifest" in text


def test_drop_against_ground_truth_labels(variants_dir, tmp_path):
    """--drop-vs labels: a manifest with masks (here the fp32 model's own masks as 'ground
    truth', written in the folder layout with mapping.json), drop = mIoU(7) points lost."""
    from edge_seg.labels import CATEGORIES
    from edge_seg.segmenter import Segmenter
    from edge_seg.scenes import render_scene
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    seg = Segmenter(variants_dir / "tiny-fp32.tflite", threads=1)
    files = []
    for i in range(3):
        image = render_scene(i, (256, 128)).image
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), seg.predict_mask(image)[1])
        files.append({"image": f"images/{i}.png", "mask": f"masks/{i}.png"})
    (root / "mapping.json").write_text(json.dumps({str(c.id): c.name for c in CATEGORIES}))
    manifest = tmp_path / "labelled.json"
    manifest.write_text(json.dumps({"format": "edge-seg-calibration/1", "files": files,
                                    "dataset": {"root": "data", "format": "folder"}}))
    profile = tmp_path / "p.json"
    out = edge_seg("tune", "--models", variants_dir, *FAST, "--frames", manifest, "--drop-vs", "labels",
                   "--max-drop", "50", "--profile", profile, block_tf=True)
    assert out.returncode == 0, out.stderr
    assert "mIoU(7)" in out.stdout and "against the ground-truth labels" in out.stdout
    p = json.loads(profile.read_text())
    ref = next(r for r in p["table"] if r["file"] == "tiny-fp32.tflite")
    assert ref["miou7_labels"] == 1.0 and ref["drop"] == 0.0  # its own masks are the labels
    bad = next(r for r in p["table"] if r["file"] == "tiny-randomised.tflite")
    assert bad["drop"] == pytest.approx(100 * (1 - bad["miou7_labels"])) and not bad["in_budget"]
    assert p["drop_basis"].startswith("ground-truth") and p["reference"]["miou7_labels"] == 1.0
    one_error(edge_seg("tune", "--models", variants_dir, *FAST, "--drop-vs", "labels", block_tf=True),
              "needs --frames MANIFEST.json")


# ------------------------------------------------------------------ recorded accuracy and the guard

def test_the_recorded_drop_is_the_budget_and_agreement_the_fallback():
    """int8 rounding moves boundary pixels: agreement 96% (a 4-point 'drop') although the
    labelled set says it loses 0.007 point. The recorded drop decides; a variant without
    one falls back to agreement, and each row says which basis it used."""
    rows = [dict(file="fp16", fps=10.0, agreement=1.0, recorded_drop=0.0),
            dict(file="int8", fps=19.0, agreement=0.962, recorded_drop=0.007),
            dict(file="qat", fps=18.0, agreement=0.967, recorded_drop=0.6),
            dict(file="unrecorded-int8", fps=25.0, agreement=0.962)]
    chosen = choose(rows, max_drop=0.5)
    assert chosen["file"] == "int8" and chosen["drop_basis"] == "recorded"
    by = {r["file"]: r for r in rows}
    assert by["int8"]["drop"] == pytest.approx(0.007)
    assert by["qat"]["drop_basis"] == "recorded" and by["qat"]["why"] == "drop > 0.5"
    assert by["unrecorded-int8"]["drop_basis"] == "agreement"
    assert by["unrecorded-int8"]["drop"] == pytest.approx(3.8) and not by["unrecorded-int8"]["in_budget"]
    assert choose(rows, max_drop=4.0)["file"] == "unrecorded-int8"


def test_the_guard_rejects_a_variant_that_computes_differently_here():
    from edge_seg.tune.choose import GUARD_MARGIN
    recorded = 0.993
    rows = [dict(file="fp16", fps=10.0, agreement=1.0, pixel_agreement=1.0),
            dict(file="int8", fps=19.0, agreement=0.5, pixel_agreement=0.61, recorded_drop=0.007,
                 recorded_pixels=recorded),
            dict(file="int8-other-frames", fps=18.0, agreement=0.9,
                 pixel_agreement=recorded - (GUARD_MARGIN - 0.5) / 100, recorded_drop=0.007,
                 recorded_pixels=recorded)]
    chosen = choose(rows, max_drop=0.5)
    by = {r["file"]: r for r in rows}
    assert not by["int8"]["in_budget"] and by["int8"]["why"].startswith("computes differently here")
    assert "61.0% vs 99.3% recorded" in by["int8"]["why"]
    # frames unlike the labelled set cost a few points of agreement: within the margin
    assert chosen["file"] == "int8-other-frames"
    # the guard holds whatever the budget, and for --target-fps too
    assert choose([dict(r) for r in rows], max_drop=100)["file"] == "int8-other-frames"
    assert choose([dict(r) for r in rows], target_fps=19)["file"] != "int8"
    # a variant of another input size computes something else by design: not guarded
    other_size = dict(file="int8-384x192", fps=30.0, agreement=0.58, pixel_agreement=0.834,
                      recorded_drop=0.3, recorded_pixels=0.959, guarded=False)
    assert choose([dict(r) for r in rows] + [other_size], max_drop=0.5)["file"] == "int8-384x192"
    # the margin users read in --help is the one applied
    from click.testing import CliRunner

    from edge_seg.tune.command import tune
    helped = " ".join(CliRunner().invoke(tune, ["--help"]).output.split())
    assert f"more than {GUARD_MARGIN:g} points below the recorded one" in helped


class CorruptingInterpreter:
    """A stand-in for a broken delegate: the model runs, its logits come out shuffled
    between categories (as wrong int8 kernels on an emulator did)."""

    def __init__(self, interpreter):
        self._interpreter = interpreter
        self.invocations = 0

    def get_tensor(self, index):
        out = self._interpreter.get_tensor(index)
        if index == self._interpreter.get_output_details()[0]["index"]:
            self.invocations += 1
            return np.roll(out, 3, axis=-1)
        return out

    def __getattr__(self, name):
        return getattr(self._interpreter, name)


def test_tune_rejects_an_int8_variant_a_backend_computes_wrongly(variants_dir, tmp_path, monkeypatch, capsys):
    from edge_seg.backends import litert
    from edge_seg.backends.metadata import embed_sidecar, read_meta, sidecar_path
    from edge_seg.io.publish import atomic_write_json
    from edge_seg.tune.command import TuneOptions, tune_device

    (variants_dir / "tiny-randomised.tflite").unlink()
    options = dict(models=str(variants_dir), n_frames=3, seconds=0.05, warmup=1, threads="1",
                   delegates="xnnpack", progress=False, save_profile=False, max_drop=0.5)
    honest = {r["file"]: r for r in tune_device(TuneOptions(**options))["table"]}
    assert honest["tiny-int8.tflite"]["drop_basis"] == "agreement"
    # what compare would record on a labelled set: this int8's agreement, a small drop
    int8 = variants_dir / "tiny-int8.tflite"
    meta = read_meta(int8)
    meta["accuracy"] = {"drop_miou7": 0.1, "per_category": {},
                        "labelled_set": {"name": "scenes", "split": "val", "frames": 3, "fingerprint": "0"},
                        "agreement": {"miou7": honest["tiny-int8.tflite"]["agreement"],
                                      "pixels": honest["tiny-int8.tflite"]["pixel_agreement"]}}
    atomic_write_json(sidecar_path(int8), meta)
    embed_sidecar(int8)
    recorded = {r["file"]: r for r in tune_device(TuneOptions(**options))["table"]}
    assert recorded["tiny-int8.tflite"]["drop_basis"] == "recorded"
    assert recorded["tiny-int8.tflite"]["drop"] == 0.1 and recorded["tiny-int8.tflite"]["in_budget"]

    real = litert.load_interpreter
    stand_ins = []

    def corrupting(path, *args, **kwargs):
        interpreter, info = real(path, *args, **kwargs)
        if Path(path).name == "tiny-int8.tflite":
            stand_ins.append(CorruptingInterpreter(interpreter))
            return stand_ins[-1], info
        return interpreter, info
    monkeypatch.setattr(litert, "load_interpreter", corrupting)
    capsys.readouterr()
    result = tune_device(TuneOptions(**options))
    out = capsys.readouterr().out
    assert stand_ins and sum(s.invocations for s in stand_ins) > 0
    rows = {r["file"]: r for r in result["table"]}
    bad = rows["tiny-int8.tflite"]
    assert not bad["in_budget"] and "computes differently here" in bad["why"]
    assert bad["drop_basis"] == "recorded" and bad["drop"] == 0.1  # within budget, still rejected
    assert result["model"]["path"].endswith("tiny-fp32.tflite")
    line = next(x for x in out.splitlines() if "tiny-int8.tflite" in x and "xnnpack" in x)
    assert line.startswith("x") and "computes differently here" in line and "recorded" in line


def test_compare_records_accuracy_that_tune_reads(tiny_models, tmp_path):
    """converters.compare.record_accuracy writes the drop, per category, the labelled set
    and the agreement into the variant's sidecar (replacing it whole); a variant converted
    from another float model gets it as its reference_accuracy, its own accuracy kept."""
    pytest.importorskip("tensorflow")
    from edge_seg.converters.compare import record_accuracy
    from edge_seg.backends.metadata import file_sha256, read_meta
    from edge_seg.tune.variants import discover

    float_model = copy_model(tiny_models["fp32"], tmp_path / "tiny-fp32.tflite", "fp32")
    twin = copy_model(tiny_models["int8"], tmp_path / "tiny-int8.tflite", "int8",
                      source_model={"file": "tiny-fp32.tflite", "sha256": file_sha256(float_model)})
    stranger = copy_model(tiny_models["uint8"], tmp_path / "tiny-uint8.tflite", "int8",
                          source_model={"file": "other.keras", "sha256": "f" * 64})
    before = json.loads(stranger.with_suffix(".json").read_text())
    drops = {"flat": 0.2, "construction": -0.1, "object": 1.0, "nature": 0.0, "sky": 0.0,
             "human": float("nan"), "vehicle": 0.3}

    def row(path, kind="tflite", **extra):
        return dict(model=str(path), file=path.name, kind=kind, miou7=0.7, drop_points=0.25,
                    pixel_agreement=0.99, agreement_miou7=0.95, iou_drop_points=drops, **extra)
    result = {"float_model": str(float_model), "scored_at": "model resolution",
              "labelled_set": {"name": "camvid", "split": "val", "frames": 101, "fingerprint": "ab" * 32},
              "rows": [dict(row(float_model), miou7=0.72), row(twin), row(stranger)]}
    notes = []
    written = record_accuracy(result, log=notes.append)
    assert written == [twin.with_suffix(".json"), stranger.with_suffix(".json")]
    acc = read_meta(twin)["accuracy"]
    assert acc["drop_miou7"] == 0.25 and acc["float_miou7"] == 0.72
    assert acc["float_model_sha256"] == file_sha256(float_model) and "reference_accuracy" not in read_meta(twin)
    assert acc["per_category"]["object"] == 1.0 and acc["per_category"]["human"] is None
    assert acc["labelled_set"] == result["labelled_set"]
    assert acc["agreement"] == {"miou7": 0.95, "pixels": 0.99}
    assert read_meta(twin)["variant"] == "int8"          # the rest of the metadata is kept
    after = read_meta(stranger)
    assert after == dict(before, reference_accuracy=after["reference_accuracy"])  # nothing else changed
    assert after["reference_accuracy"]["float_model_sha256"] == file_sha256(float_model)
    assert after["reference_accuracy"]["drop_miou7"] == 0.25
    assert len(notes) == 1 and "another float model" in notes[0] and "reference_accuracy" in notes[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    by = {v.name: v for v in discover(tmp_path)[0]}
    expected = {"drop": 0.25, "pixels": 0.99, "on": "camvid val, 101 frames, vs tiny-fp32.tflite"}
    assert by["tiny-int8.tflite"].recorded == expected
    assert by["tiny-uint8.tflite"].recorded is None  # nothing vs its own float model
    # on the scale of the float model tune's reference was converted from: both recorded
    assert by["tiny-uint8.tflite"].recorded_vs(file_sha256(float_model)) == expected
    assert by["tiny-int8.tflite"].recorded_vs(file_sha256(float_model)) == expected


def test_agreement_over_frames_drop_and_percentiles_have_one_home():
    """Agreement summed over frames equals the agreement of the frames side by side; drop
    and latency percentiles as numpy computes them."""
    from edge_seg.iou import agreement, agreement_from_cm, confusion_matrix, drop_points
    from edge_seg.timing import latency_percentiles
    rng = np.random.default_rng(3)
    refs = [rng.integers(0, 8, (20, 30)).astype(np.uint8) for _ in range(3)]
    others = [np.where(rng.random(r.shape) < 0.9, r, rng.integers(0, 8, r.shape)).astype(np.uint8)
              for r in refs]
    summed = agreement_from_cm(sum(confusion_matrix(r, o) for r, o in zip(refs, others)))
    joined = agreement(np.concatenate(refs, 1), np.concatenate(others, 1))
    assert summed["miou7"] == pytest.approx(joined["miou7"])
    assert summed["pixel_agreement"] == pytest.approx(
        np.mean(np.concatenate(refs, 1) == np.concatenate(others, 1)))
    assert drop_points(0.7703, 0.7696) == pytest.approx(0.07)
    assert math.isnan(drop_points(float("nan"), 0.5))
    times = rng.lognormal(3, 0.5, 101)
    p = latency_percentiles(times)
    assert p["p50"] == np.percentile(times, 50) and p["p90"] == np.percentile(times, 90)
    assert p["mean"] == pytest.approx(times.mean())


# ------------------------------------------------------------------ two models on one scale

REF_SHA, FAST_SHA = "a" * 64, "b" * 64


def _accuracy(drop: float, pixels: float, float_model: str, float_sha: str | None = None) -> dict:
    acc = {"drop_miou7": drop, "agreement": {"miou7": None, "pixels": pixels}, "float_model": float_model,
           "labelled_set": {"name": "camvid", "split": "drive-val", "frames": 101}}
    if float_sha:
        acc["float_model_sha256"] = float_sha
    return acc


def bundled_pair() -> list:
    """The variants of models/ as their metadata records them: the reference's (converted from
    REF_SHA, drops vs it) and the fast tier's (converted from FAST_SHA, a few tenths below its
    own float model, points below the reference's)."""
    from edge_seg.tune.variants import Variant

    def variant(name, kind, size, source, **entries):
        meta = {"variant": kind, "source_model": {"file": "m.keras", "sha256": source}, **entries}
        return Variant(Path(name), meta, "tflite", size, (size[0] // 2, size[1] // 2),
                       kind == "int8", "int8" if kind == "int8" else "float32")
    return [
        variant("ref-fp16.tflite", "fp16", (512, 256), REF_SHA, accuracy=_accuracy(-0.004, 0.9998, "ref.keras")),
        variant("ref-int8.tflite", "int8", (512, 256), REF_SHA, accuracy=_accuracy(0.133, 0.988, "ref.keras")),
        variant("fast-fp16.tflite", "fp16", (384, 192), FAST_SHA,
                accuracy=_accuracy(0.01, 0.9996, "fast.keras", FAST_SHA),
                reference_accuracy=_accuracy(2.9, 0.93, "ref.keras", REF_SHA)),
        variant("fast-int8.tflite", "int8", (384, 192), FAST_SHA,
                accuracy=_accuracy(0.2, 0.987, "fast.keras", FAST_SHA),
                reference_accuracy=_accuracy(3.1, 0.925, "ref.keras", REF_SHA)),
    ]


# frames per second a device might measure (injected: no timing here)
PAIR_FPS = {"ref-fp16.tflite": 20.0, "ref-int8.tflite": 45.0, "fast-fp16.tflite": 90.0, "fast-int8.tflite": 150.0}


def pair_rows(scale: str | None, variants=None) -> list[dict]:
    """The rows tune builds (measure._row) from the variants, their drops on ``scale``."""
    from edge_seg.tune.measure import _row
    rows = []
    for v in variants or bundled_pair():
        fps = PAIR_FPS[v.name]
        timing = {"p50_ms": 1000 / fps, "p90_ms": 1000 / fps, "mean_ms": 1000 / fps, "fps": fps}
        rows.append(_row(v, "xnnpack", 2, timing, {"miou7": 0.9, "pixel_agreement": 0.95}, scale))
        rows[-1]["guarded"] = v.input_size == (512, 256)
    return rows


def test_both_models_are_ranked_on_the_reference_scale():
    from edge_seg.tune.variants import choose_reference
    reference = choose_reference(bundled_pair())
    assert reference.name == "ref-fp16.tflite" and reference.source_sha == REF_SHA  # largest fp16
    rows = pair_rows(reference.source_sha)
    by = {r["file"]: r for r in rows}
    assert by["fast-int8.tflite"]["recorded_drop"] == 3.1 and by["ref-int8.tflite"]["recorded_drop"] == 0.133
    assert "vs ref.keras" in by["fast-int8.tflite"]["recorded_on"]
    # the default budget: a reference variant, the fast tier 3 points out
    assert choose(rows)["file"] == "ref-int8.tflite"
    assert by["fast-int8.tflite"]["why"] == "drop > 0.5" and by["fast-int8.tflite"]["drop_basis"] == "recorded"
    # a rate only the fast tier reaches: the most accurate row reaching it
    assert choose(pair_rows(REF_SHA), target_fps=60)["file"] == "fast-fp16.tflite"
    assert choose(pair_rows(REF_SHA), target_fps=100)["file"] == "fast-int8.tflite"
    # a budget the fast tier is within: the fastest within it
    assert choose(pair_rows(REF_SHA), max_drop=3.5)["file"] == "fast-int8.tflite"
    assert choose(pair_rows(REF_SHA), max_drop=3.0)["file"] == "fast-fp16.tflite"
    # each model's own-float drops would have put the fast int8 within 0.5 of the reference
    assert choose(pair_rows(None))["file"] == "fast-int8.tflite"


def test_a_drop_vs_another_float_model_is_not_the_reference_scale():
    """A fast variant without a reference_accuracy falls back to the agreement with the
    reference here, and tune says why; the reference's own variants keep theirs."""
    from edge_seg.tune.command import _scale_notes
    from edge_seg.tune.variants import choose_reference
    variants = bundled_pair()
    for v in variants:
        v.meta.pop("reference_accuracy", None)
    reference = choose_reference(variants)
    by = {v.name: v for v in variants}
    assert by["fast-int8.tflite"].recorded_vs(REF_SHA) is None
    assert by["fast-int8.tflite"].recorded_vs(FAST_SHA)["drop"] == 0.2
    assert by["ref-int8.tflite"].recorded_vs(REF_SHA)["drop"] == 0.133
    notes = _scale_notes(variants, reference)
    assert [n.split(":")[0] for n in notes] == ["fast-fp16.tflite", "fast-int8.tflite"]
    rows = {r["file"]: r for r in pair_rows(REF_SHA, variants)}
    choose(list(rows.values()))
    assert rows["fast-int8.tflite"]["drop_basis"] == "agreement"
    assert rows["fast-int8.tflite"]["drop"] == pytest.approx(10.0)  # 100 * (1 - 0.9)
    assert rows["ref-int8.tflite"]["drop_basis"] == "recorded"
    # a variant or reference whose source is not recorded: its accuracy entry, as before
    bare = bundled_pair()[3]
    bare.meta.pop("source_model")
    assert bare.recorded_vs(REF_SHA)["drop"] == 0.2

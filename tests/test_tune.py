"""`edge-seg tune`: the choice, the table, the device profile and `edge-seg run`
picking it up; bad input. Tiny 128x64 models (conftest.tiny_models), a few frames and a
fraction of a second per configuration keep it fast; the runtime commands run with
TensorFlow blocked."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, RUNTIME_MODEL_SIZE, python_without_tf
from edge.tune import choose, order_rows

FAST = ["--n-frames", "3", "--seconds", "0.05", "--warmup", "1", "--threads", "1",
        "--delegates", "xnnpack", "--no-progress"]


def edge_seg(*args, block_tf: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom edge.cli import main\n"
            f"sys.argv = ['edge-seg', *{list(map(str, args))!r}]\n"
            "try:\n    main()\nfinally:\n"
            "    assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
    argv = python_without_tf(code) if block_tf else [sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout)


def copy_model(src: Path, dst: Path, variant: str, **extra) -> Path:
    """``src`` as ``dst`` with a fresh sidecar (the cached test models share stems)."""
    from edge.model_meta import make_meta, write_meta
    shutil.copy(src, dst)
    write_meta(dst, make_meta(RUNTIME_MODEL_SIZE, variant, **extra))
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
                   "--profile", profile)
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
    from edge.model_meta import file_sha256
    from edge.profile import device_info
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

    run = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "3", "--profile", profile)
    assert run.returncode == 0, run.stderr
    assert f"profile: {profile} (tuned {p['created']}): {chosen.name} threads 1 delegate xnnpack" \
        in run.stdout, run.stdout
    assert f"model    {chosen.name}" in run.stdout
    assert "threads 1" in run.stdout

    # explicit options win over the profile, and the banner says why it is not used
    explicit = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2",
                        "--profile", profile, "--threads", "2", "-q")
    assert explicit.returncode == 0, explicit.stderr
    summary_model = [line for line in explicit.stdout.splitlines() if "backend" in line]
    assert "threads 2" in summary_model[-1]

    # the model changed since tuning: warned, ignored, the bundled default runs
    with open(chosen, "ab") as f:
        f.write(b"\0")
    changed = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2", "--profile", profile)
    assert changed.returncode == 0, changed.stderr
    warnings = [line for line in changed.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "changed since it was tuned" in warnings[0], changed.stderr
    assert f"model    {chosen.name}" not in changed.stdout
    assert "random-init-int8.tflite" in changed.stdout or "unet-mobilenetv2" in changed.stdout


def test_default_profile_location_and_onnx(variants_dir, tiny_onnx, isolated_config_home):
    copy_model(tiny_onnx, variants_dir / "tiny-onnx.onnx", "onnx-fp32", onnx={"layout": "NHWC"})
    out = edge_seg("tune", "--models", variants_dir, *FAST[:-3], "--no-progress", "--max-drop", "50")
    assert out.returncode == 0, out.stderr
    profile = isolated_config_home / "edge-seg" / "profile.json"
    assert profile.is_file(), out.stdout
    p = json.loads(profile.read_text())
    onnx_rows = [r for r in p["table"] if r["kind"] == "onnx"]
    assert onnx_rows and {r["delegate"] for r in onnx_rows} == {"cpu"}
    # the fp32 .tflite stays the reference; the ONNX export of the same net agrees with it
    assert p["reference"]["path"].endswith("tiny-fp32.tflite")
    assert onnx_rows[0]["agreement"] > 0.99
    run = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2")
    assert run.returncode == 0, run.stderr
    assert f"profile: {profile} (tuned" in run.stdout
    no = edge_seg("run", "--source", "demo", "--headless", "--max-frames", "2", "--no-profile")
    assert "profile:" not in no.stdout and no.returncode == 0


def _profile_run(profile: Path, capsys):
    from edge.run import RunOptions, run_pipeline
    s = run_pipeline(RunOptions(source="demo", show=False, max_frames=2, profile=str(profile)))
    return s, capsys.readouterr()


def test_untrustworthy_profiles_are_ignored_with_one_warning(variants_dir, tmp_path, capsys):
    from edge.model_meta import atomic_write_json, file_sha256
    from edge.profile import FORMAT, device_info
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
    one_error(edge_seg("tune", "--models", empty, *FAST), "no usable model variant")
    one_error(edge_seg("tune", "--models", tmp_path / "nope", *FAST), "no such folder")
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    shutil.copy(tiny_models["int8"], orphan / "lonely.tflite")
    (orphan / "junk.tflite").write_bytes(b"not a model")
    (orphan / "junk.json").write_text("{}")
    one_error(edge_seg("tune", "--models", orphan, *FAST), "no usable model variant")
    quantised = tmp_path / "quantised"
    quantised.mkdir()
    copy_model(tiny_models["int8"], quantised / "m-int8.tflite", "int8")
    one_error(edge_seg("tune", "--models", quantised, *FAST), "no float model")
    one_error(edge_seg("tune", "--models", variants_dir, *FAST, "--frames", "9"), "camera")
    one_error(edge_seg("tune", "--models", variants_dir, *FAST, "--frames", tmp_path / "none.mp4"),
              "no such file")


def test_frames_of_any_size_and_a_manifest(variants_dir, tmp_path):
    """Odd-sized frames are resized by the Segmenter; a calibration manifest's frames are
    read relative to its dataset root."""
    from edge.tune import load_frames
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(301, 97), (64, 480), (1000, 50)]):
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 255, (h, w, 3), np.uint8))
    got, text = load_frames(str(frames), 10)
    assert [f.shape[:2] for f in got] == [(97, 301), (480, 64), (50, 1000)] and "3 frames" in text
    out = edge_seg("tune", "--models", variants_dir, *FAST, "--frames", frames, "--no-profile")
    assert out.returncode == 0, out.stderr
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"format": "edge-seg-calibration/1", "dataset": {"root": "frames"},
                                    "files": [{"image": f"f{i}.png"} for i in range(3)]}))
    got, text = load_frames(str(manifest), 2)
    assert len(got) == 2 and "manifest" in text


def test_drop_against_ground_truth_labels(variants_dir, tmp_path):
    """--drop-vs labels: a manifest with masks (here the fp32 model's own masks as 'ground
    truth', written in the folder layout with mapping.json), drop = mIoU(7) points lost."""
    from edge.labels import CATEGORIES
    from edge.segmenter import Segmenter
    from scenes import render_scene
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
                   "--max-drop", "50", "--profile", profile)
    assert out.returncode == 0, out.stderr
    assert "mIoU(7)" in out.stdout and "against the ground-truth labels" in out.stdout
    p = json.loads(profile.read_text())
    ref = next(r for r in p["table"] if r["file"] == "tiny-fp32.tflite")
    assert ref["miou7_labels"] == 1.0 and ref["drop"] == 0.0  # its own masks are the labels
    bad = next(r for r in p["table"] if r["file"] == "tiny-randomised.tflite")
    assert bad["drop"] == pytest.approx(100 * (1 - bad["miou7_labels"])) and not bad["in_budget"]
    assert p["drop_basis"].startswith("ground-truth") and p["reference"]["miou7_labels"] == 1.0
    one_error(edge_seg("tune", "--models", variants_dir, *FAST, "--drop-vs", "labels"),
              "needs --frames MANIFEST.json")

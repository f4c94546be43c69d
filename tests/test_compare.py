"""The accuracy-regression gate (CI): converted variants against the float model.

Budgets, mIoU(7) drop vs float in points: int8 PTQ <= 0.5, QAT int8 <= 0.2,
fp16 <= 0.05; no category's IoU drops more than 1.5 points in an int8 variant; the int8
file is at most 30% of the fp32 file.

* With ../shared and the committed models: each bundled model, the reference and the fast
  tier, is converted here (fp32, fp16, int8 PTQ with its committed manifest of CamVid's
  training drives, at its own input size) and scored on CamVid drive-val (drive 0006R0, which
  neither trained on and both were selected on) with the committed QAT variant when there is
  one (a QAT fine-tune of the reference takes too long for CI; a separate test checks its
  sidecar names the committed float model's sha256 and skips, saying so, while none is
  committed). The fast tier's float model and int8 are also held within
  FAST_MAX_BELOW_REFERENCE (3) points of the reference's float model there.
* Everywhere: the same assertions on synthetic street scenes with a small model trained
  here for a few hundred steps, all variants (QAT included) converted in the test.
  That model differs from CPU to CPU: TensorFlow turns oneDNN on by default only where the
  CPU has AVX512-VNNI, AVX-VNNI or AMX, and 400 steps from the same seed then end 16% of
  pixels apart; the int8 kernels (XNNPACK vs TFLite's own) also round near-tied logits
  differently (1.5% of pixels). On 16 frames the bootstrap standard deviation of the QAT
  drop was 0.14-0.23 points, so the 0.2 budget was one sd wide and a correct product failed
  on some CPUs. On 256 frames it is 0.045-0.053 (categories <= 0.17), and the test asserts
  every budget is at least NOISE_MULTIPLE (3) times the sd it measures on its own frames.
* Size: the int8/fp32 file ratio is asserted on the bundled models only, in its own test.
  Per-channel quantisation stores a float32 scale and an int64 zero point per output
  channel of every weight and bias tensor (26,824 of them in a 1.1 M-parameter
  unet-mobilenetv2 0.75: 0.32 MB, 33.9% of fp32), so the converter quantises weights per
  tensor by default (26.8%); ``--per-channel`` restores the other scheme.
* ``test_gate_catches_bad_calibration`` proves the gate fails: int8 calibrated on one
  all-black frame. ``EDGE_SEG_GATE_BAD_CALIBRATION=1`` makes the gate tests themselves use
  that calibration, to watch them fail.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import CAMVID, REPO

tf = pytest.importorskip("tensorflow")

BUDGETS = {"int8": 0.5, "qat-int8": 0.2, "fp16": 0.05}
MAX_CATEGORY_DROP = 1.5
MAX_SIZE_RATIO = 0.30
REFERENCE = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
CALIBRATION = REPO / "calibration" / "camvid-drive-train.json"
FAST = REPO / "models" / "unet-mobilenetv2-fast-camvid-idd.keras"
FAST_CALIBRATION = REPO / "calibration" / "camvid-drive-train-416x224.json"
BUNDLED = {"reference": REFERENCE, "fast": FAST}
# the fast tier's float and int8 models, in mIoU(7) points below the reference's float model:
# the target (its card). The bundled model, at 416x224, is 2.67 (float) and 2.72 (int8) below:
# the 0.28 point left covers an int8 conversion's movement between CPUs (a few tenths at
# most), not a worse checkpoint or input size (the same weights at their training size,
# 384x192, are 3.36 and 3.50 below and fail)
FAST_MAX_BELOW_REFERENCE = 3.0
GATE_SPLIT = "drive-val"
BAD_CALIBRATION = os.environ.get("EDGE_SEG_GATE_BAD_CALIBRATION") == "1"

SYNTH_SIZE = (128, 64)
SYNTH_STEPS = 400
SYNTH_VAL_FRAMES = 256
NOISE_MULTIPLE = 3
BOOTSTRAP_DRAWS = 1000


def gate(result, size_ratio=None) -> list[str]:
    from edge_seg.converters.compare import check_budgets
    return check_budgets(result, budgets=BUDGETS, max_category_drop=MAX_CATEGORY_DROP,
                         max_size_ratio=size_ratio)


def black_frame_manifest(folder: Path, size) -> Path:
    """A one-frame calibration set: an all-black image (and an all-void mask)."""
    from edge_seg.calibration.select import select, write_manifest
    from edge_seg import labels

    root = folder / "black"
    for sub in ("images/train", "masks/train"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images/train/black.png"), np.zeros((size[1], size[0], 3), np.uint8))
    cv2.imwrite(str(root / "masks/train/black.png"), np.zeros((size[1], size[0]), np.uint8))
    (root / "mapping.json").write_text(json.dumps({str(c.id): c.name for c in labels.CATEGORIES}))
    return write_manifest(folder / "black.json", select(root, n=1, size=size))


# ------------------------------------------------------------------ synthetic scenes

def train_small_model(root: Path, path: Path, steps: int = SYNTH_STEPS, seed: int = 0) -> Path:
    """A small unet-mobilenetv2 trained briefly on the synthetic scenes."""
    import tf_keras as keras

    from edge_seg.labels import IGNORE
    from edge_seg.train.datasets import load_split
    from edge_seg.train.models import build_model
    from edge_seg.train.pipeline import make_dataset

    keras.utils.set_random_seed(seed)
    model = build_model("unet-mobilenetv2", SYNTH_SIZE, alpha=0.35)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))
    ds = make_dataset(load_split(root, split="train"), SYNTH_SIZE, batch=8, training=True, seed=seed)
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def synthetic_setup(tmp_path_factory):
    from edge_seg.calibration.select import select, write_manifest
    from test_convert import write_scenes

    base = tmp_path_factory.mktemp("gate")
    root = write_scenes(base / "scenes", n_train=48, n_val=SYNTH_VAL_FRAMES, size=(256, 128), seed=7)
    model = train_small_model(root, base / "synth.keras")
    manifest = write_manifest(base / "cal.json", select(root, n=32, size=SYNTH_SIZE))
    return root, model, manifest, base


@pytest.fixture(scope="module")
def synthetic_variants(synthetic_setup):
    from edge_seg.converters.tflite_export import export

    root, model, manifest, base = synthetic_setup
    calibration = black_frame_manifest(base, SYNTH_SIZE) if BAD_CALIBRATION else manifest
    paths = export(model, ["fp32", "fp16", "int8", "qat-int8"], base / "out", str(calibration),
                   qat_epochs=1, qat_steps=30, qat_lr=2e-5, qat_batch=8, log=print)
    return {p.stem.split("synth-")[1]: p for p in paths}


def frame_matrices(model, variants: dict, root: Path) -> dict:
    """{"float" | variant: (frames, n, n) confusion matrices}, one per val frame, through the
    gate's own runners and frames (what run_compare sums)."""
    from edge_seg.converters.compare import open_runner
    from edge_seg.iou import confusion_matrix
    from edge_seg.train.datasets import load_split, read_pair

    runners = {"float": open_runner(model, 2), **{v: open_runner(p, 2) for v, p in variants.items()}}
    samples = load_split(root, "auto", "val")
    out = {k: [] for k in runners}
    for start in range(0, len(samples), 16):
        pairs = [read_pair(s, SYNTH_SIZE, purpose="eval") for s in samples[start:start + 16]]
        rgb = np.stack([p[0] for p in pairs])
        for k, runner in runners.items():
            out[k] += [confusion_matrix(gt, m) for (_, gt), m in zip(pairs, runner.predict(rgb))]
    return {k: np.stack(v) for k, v in out.items()}


def bootstrap_drops(matrices: dict, variant: str, draws: int = BOOTSTRAP_DRAWS, seed: int = 0):
    """(mIoU(7) drops, per-category IoU drops) in points, float minus ``variant``, over
    ``draws`` resamplings of the frames with replacement: (draws,) and (draws, 7)."""
    from edge_seg.iou import category_scores

    frames = len(matrices["float"])
    miou, cats = [], []
    for idx in np.random.default_rng(seed).integers(0, frames, (draws, frames)):
        ref = category_scores(matrices["float"][idx].sum(0))["iou"][1:]
        var = category_scores(matrices[variant][idx].sum(0))["iou"][1:]
        with np.errstate(invalid="ignore"):
            miou.append((np.nanmean(ref) - np.nanmean(var)) * 100)
        cats.append((ref - var) * 100)
    return np.asarray(miou), np.asarray(cats)


@pytest.fixture(scope="module")
def synthetic_noise(synthetic_setup, synthetic_variants) -> dict:
    """{variant: (sd of the mIoU(7) drop, largest sd of a category's IoU drop)}, points."""
    root, model, _, _ = synthetic_setup
    matrices = frame_matrices(model, {v: synthetic_variants[v] for v in BUDGETS}, root)
    noise = {}
    for v in BUDGETS:
        miou, cats = bootstrap_drops(matrices, v)
        noise[v] = (float(miou.std()), float(np.nanmax(np.nanstd(cats, axis=0))))
    return noise


@pytest.mark.slow
def test_synthetic_gate(synthetic_setup, synthetic_variants, synthetic_noise):
    from edge_seg.converters.compare import format_text, run_compare

    root, model, _, _ = synthetic_setup
    order = ("fp32", "fp16", "int8", "qat-int8")
    result = run_compare(model, [synthetic_variants[v] for v in order], root, "val", threads=2,
                         latency_runs=3)
    print(format_text(result))
    for v, (sd, cat_sd) in synthetic_noise.items():
        print(f"{v}: bootstrap sd over {result['frames']} frames: mIoU(7) drop {sd:.3f} points, "
              f"worst category drop {cat_sd:.2f} points")
    assert result["rows"][0]["miou7"] > 0.3, "the test model did not learn enough to be a fair gate"
    assert result["rows"][1]["drop_points"] == pytest.approx(0, abs=0.01)  # fp32 tflite == keras
    # the gate means something only where its budgets stand clear of its own noise
    for v, (sd, cat_sd) in synthetic_noise.items():
        assert NOISE_MULTIPLE * sd <= BUDGETS[v], \
            f"{v}: mIoU(7) drop noise {sd:.3f} points: the budget {BUDGETS[v]} is under {NOISE_MULTIPLE}x it"
        if v in ("int8", "qat-int8"):
            assert NOISE_MULTIPLE * cat_sd <= MAX_CATEGORY_DROP, \
                f"{v}: category IoU drop noise {cat_sd:.2f} points: the budget {MAX_CATEGORY_DROP} is under " \
                f"{NOISE_MULTIPLE}x it"
    problems = gate(result)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_gate_catches_bad_calibration(synthetic_setup, synthetic_variants, tmp_path):
    from edge_seg.converters.compare import run_compare
    from edge_seg.converters.tflite_export import export

    root, model, _, _ = synthetic_setup
    bad = black_frame_manifest(tmp_path, SYNTH_SIZE)
    (int8,) = export(model, ["int8"], tmp_path / "bad", str(bad), log=print)
    result = run_compare(model, [synthetic_variants["fp32"], int8], root, "val", threads=2, latency_runs=1)
    problems = gate(result)
    print("\n".join(problems))
    assert any("int8" in p and "drop" in p for p in problems), problems


@pytest.mark.slow
def test_compare_cli_exit_code_and_outputs(synthetic_setup, synthetic_variants, tmp_path):
    from click.testing import CliRunner

    from edge_seg.converters.cli import compare

    root, model, _, _ = synthetic_setup
    args = [str(model), str(synthetic_variants["fp16"]), str(synthetic_variants["int8"]), "--data", str(root),
            "--json", str(tmp_path / "t.json"), "--markdown", str(tmp_path / "t.md")]
    ok = CliRunner().invoke(compare, args + ["--max-drop", "100"])
    assert ok.exit_code == 0, ok.output
    table = json.loads((tmp_path / "t.json").read_text())
    assert [r["format"] for r in table["rows"]] == ["float (keras)", "fp16", "int8"]
    assert {"size_bytes", "miou7", "drop_points", "pixel_agreement", "worst_category", "latency_ms", "gpu"} \
        <= set(table["rows"][2])
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("| format |") and "int8" in md and "within budget" in md
    strict = CliRunner().invoke(compare, args + ["--max-drop", "-1"])  # every variant "drops" > -1
    assert strict.exit_code == 1


# ------------------------------------------------------------------ the bundled models

def _bundled_variants(model: Path, calibration: Path, size, tmp_path_factory) -> dict:
    """fp32, fp16 and int8 of a bundled float model converted here with its committed
    manifest, and its committed QAT variant when there is one."""
    if not model.is_file():
        pytest.skip(f"bundled model {model.name} not committed yet")
    if not (CAMVID / "val").is_dir():
        pytest.skip(f"CamVid not available at {CAMVID} (../shared is absent)")
    from edge_seg.converters.tflite_export import export

    out = tmp_path_factory.mktemp(model.stem)
    calibration = black_frame_manifest(out, size) if BAD_CALIBRATION else calibration
    paths = {p.stem.rsplit("-", 1)[-1]: p for p in
             export(model, ["fp32", "fp16", "int8"], out, str(calibration), log=print)}
    qat = model.with_name(f"{model.stem}-qat-int8.tflite")
    if qat.is_file():
        paths["qat-int8"] = qat
    return paths


@pytest.fixture(scope="module")
def reference_variants(tmp_path_factory):
    return _bundled_variants(REFERENCE, CALIBRATION, (512, 256), tmp_path_factory)


@pytest.fixture(scope="module")
def fast_variants(tmp_path_factory):
    return _bundled_variants(FAST, FAST_CALIBRATION, (416, 224), tmp_path_factory)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("family", list(BUNDLED))
def test_bundled_gate_on_camvid_drive_val(family, request):
    """Each bundled model's variants within their budgets of its own float model."""
    from edge_seg.converters.compare import format_text, run_compare

    variants = request.getfixturevalue(f"{family}_variants")
    order = [v for v in ("fp32", "fp16", "int8", "qat-int8") if v in variants]
    result = run_compare(BUNDLED[family], [variants[v] for v in order], CAMVID, GATE_SPLIT, threads=2,
                         latency_runs=5)
    print(format_text(result))
    problems = gate(result)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.shared
def test_fast_tier_within_its_margin_of_the_reference(fast_variants):
    """The fast tier's float model and its int8 (the one its users run) against the
    reference's float model: each fed at its own input size, scored at the labels'
    resolution, as tune's recorded drops are."""
    from edge_seg.converters.compare import format_text, run_compare

    result = run_compare(REFERENCE, [FAST, fast_variants["int8"]], CAMVID, GATE_SPLIT, threads=2,
                         latency_runs=1, at_label_resolution=True)
    print(format_text(result))
    below = {r["file"]: r["drop_points"] for r in result["rows"][1:]}
    too_far = {f: d for f, d in below.items() if not d <= FAST_MAX_BELOW_REFERENCE}
    assert not too_far, (f"more than {FAST_MAX_BELOW_REFERENCE:g} points of mIoU(7) below "
                         f"{REFERENCE.name} on {GATE_SPLIT}: " +
                         ", ".join(f"{f} {d:.2f}" for f, d in too_far.items()))


@pytest.mark.slow
@pytest.mark.shared
def test_reference_qat_variant_is_committed_and_current():
    from edge_seg.backends.metadata import file_sha256, read_meta

    if not REFERENCE.is_file():
        pytest.skip(f"reference model {REFERENCE.name} not committed yet")
    qat = REFERENCE.with_name(f"{REFERENCE.stem}-qat-int8.tflite")
    if not qat.is_file():
        pytest.skip(f"{qat.name} not committed yet: edge-seg convert {REFERENCE.relative_to(REPO)} --qat "
                    f"--calibration {CALIBRATION.relative_to(REPO)} (its accuracy is gated above once it is)")
    assert read_meta(qat)["source_model"]["sha256"] == file_sha256(REFERENCE), \
        f"{qat.name} was not converted from the committed {REFERENCE.name}; re-run edge-seg convert --qat"


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("family", list(BUNDLED))
def test_bundled_int8_size_budget(family, request):
    variants = request.getfixturevalue(f"{family}_variants")
    ratio = variants["int8"].stat().st_size / variants["fp32"].stat().st_size
    assert ratio <= MAX_SIZE_RATIO, f"int8 file is {ratio:.1%} of fp32 (budget {MAX_SIZE_RATIO:.0%})"

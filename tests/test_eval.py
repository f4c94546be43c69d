"""`edge-seg eval`: .keras and fp32 .tflite of one model score the same through the same
preprocessing and metrics; the report folder holds its files; bad input is a clear error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET_TF, edge_seg

pytest.importorskip("tf_keras")

REPO = Path(__file__).resolve().parents[1]
SHARED_CAMVID = REPO.parent / "shared" / "datasets" / "camvid"
SIZE = (128, 64)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    if (SHARED_CAMVID / "val").is_dir():
        return SHARED_CAMVID
    synthetic = pytest.importorskip("edge_seg.train.synthetic_dataset", reason="no CamVid and no synthetic writer")
    return Path(synthetic.write_dataset(tmp_path_factory.mktemp("synth-eval"), "camvid", n_train=4,
                                        n_val=6, size=(256, 128), seed=7))


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory):
    """A small unet-mobilenetv2 with non-trivial weights as .keras and fp32 .tflite + sidecar."""
    import tensorflow as tf
    from edge_seg.backends.metadata import make_meta, write_meta
    from edge_seg.train.models import build_model

    root = tmp_path_factory.mktemp("models")
    tf.keras.utils.set_random_seed(0)
    model = build_model("unet-mobilenetv2", SIZE, 0.35)
    # give BatchNorm non-trivial statistics so the argmax is not flat
    x = np.random.default_rng(0).uniform(-1, 1, (4, SIZE[1], SIZE[0], 3)).astype(np.float32)
    for _ in range(3):
        model(x, training=True)
    keras_path = root / "m.keras"
    model.save(keras_path)
    tflite_path = root / "m-fp32.tflite"
    tflite_path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    write_meta(tflite_path, make_meta(SIZE, "fp32", source="test"))
    return keras_path, tflite_path


@pytest.mark.slow
def test_keras_and_fp32_tflite_score_the_same(data_root, model_pair):
    from edge_seg.train.eval_cli import run_eval

    keras_path, tflite_path = model_pair
    a = run_eval(keras_path, data_root, "auto", "val", None, False, None, 12, 4, True)
    b = run_eval(tflite_path, data_root, "auto", "val", None, False, None, 12, 4, True)
    assert a["input_size"] == b["input_size"] == list(SIZE)
    assert a["pixels"] == b["pixels"] > 0
    assert abs(a["miou7"] - b["miou7"]) < 1e-3, (a["miou7"], b["miou7"])
    for name, v in a["iou"].items():
        if not np.isnan(v):
            assert abs(v - b["iou"][name]) < 5e-3, name


@pytest.mark.slow
def test_eval_cli_table_and_report(data_root, model_pair, tmp_path):
    keras_path, _ = model_pair
    report = tmp_path / "report"
    out = edge_seg("eval", keras_path, "--data", data_root, "--limit", "6", "--report", report, env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mIoU(7)" in out.stdout and "mIoU(8)" in out.stdout and "pixel acc" in out.stdout
    assert "scored at model size 128x64" in out.stdout
    for name in ("metrics.json", "confusion_matrix.png", "category_iou.png", "samples.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["frames"] == 6 and len(metrics["confusion_matrix"]) == 8

    label = edge_seg("eval", keras_path, "--data", data_root, "--limit", "3", "--at-label-resolution",
                     "--json", env=QUIET_TF)
    assert label.returncode == 0, label.stderr[-3000:]
    result = json.loads(label.stdout)
    assert result["scored_at"].startswith("label resolution")


def test_eval_bad_input_is_a_clear_error(data_root, tmp_path):
    bogus = tmp_path / "model.onnx.txt"
    bogus.write_text("x")
    out = edge_seg("eval", bogus, "--data", data_root, env=QUIET_TF)
    assert out.returncode == 2 and "unknown model type" in out.stderr
    out = edge_seg("eval", tmp_path / "missing.keras", "--data", data_root, env=QUIET_TF)
    assert out.returncode == 2 and "not found" in out.stderr


def test_instance_maps_give_iiou(cityscapes_sample, model_pair):
    from edge_seg.train.eval_cli import run_eval
    keras_path, _ = model_pair
    result = run_eval(keras_path, cityscapes_sample, "cityscapes", "test", None, True, None, 0, 4, True)
    assert "iiou" in result and set(result["iiou"]) == {"human", "vehicle"}


@pytest.mark.slow
def test_eval_reports_coarse_labels_outside_iou(model_pair, tmp_path):
    """A dataset with set-valued labels: the table and metrics.json give the set pixels and
    the share predicted inside; IoU counts exact labels only; the report still renders."""
    from test_coarse_labels import _coarse_folder
    from edge_seg.train import datasets

    root = _coarse_folder(tmp_path / "coarse")
    val = datasets.load_split(root, split="val")
    out = edge_seg("eval", model_pair[1], "--data", root, "--split", "val", "--report", tmp_path / "rep",
                   env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "construction|nature" in out.stdout and "flat|construction|object" in out.stdout
    assert "no exact label of construction, object, nature, human, vehicle here" in out.stdout
    assert "mIoU over the 2 others" in out.stdout
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    w, h = SIZE
    # each frame: two coarse regions of 1/8 of the frame each; flat and sky exact
    assert metrics["set_labels"]["pixels"] == len(val) * 2 * (w * h // 8)
    assert metrics["set_labels"]["share_of_labelled"] == pytest.approx(2 / 8 / (1 - 2 / 32))
    assert metrics["pixels"] == len(val) * (w * h - 2 * w * h // 8 - 2 * w * h // 32)
    assert (tmp_path / "rep" / "samples.png").is_file()

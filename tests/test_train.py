"""`edge-seg train`: one short epoch end to end, resume after kill -9, and the mirrored
strategy on two logical CPU devices. Tiny models and few steps: CI-friendly. The NaN abort,
early stopping and the resume step without training: test_train_steps.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import QUIET_TF, edge_seg, edge_seg_argv

pytest.importorskip("tf_keras")

REPO = Path(__file__).resolve().parents[1]
SHARED_CAMVID = REPO.parent / "shared" / "datasets" / "camvid"
TINY = ["--arch", "unet-mobilenetv2", "--alpha", "0.35", "--input-size", "128x64", "--batch", "4",
        "--max-val-samples", "6", "--quiet"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """CamVid when ../shared is there, else a synthetic CamVid-layout dataset."""
    if (SHARED_CAMVID / "train").is_dir():
        return SHARED_CAMVID
    synthetic = pytest.importorskip("edge_seg.train.synthetic_dataset", reason="no CamVid and no synthetic writer")
    return Path(synthetic.write_dataset(tmp_path_factory.mktemp("synth-train"), "camvid", n_train=16,
                                        n_val=6, size=(256, 128), seed=5))


def run(args, timeout=600, **kw):
    env = {**os.environ, **QUIET_TF}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.mark.slow
def test_train_one_epoch_writes_a_complete_run_folder(data_root, tmp_path):
    run_dir = tmp_path / "run"
    out = edge_seg("train", "--data", data_root, *TINY, "--epochs", "1", "--steps-per-epoch", "3",
                   "--loss", "ce+dice", "--class-weights", "median-freq", "--run-dir", run_dir, env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("config.json", "best.keras", "last/state.json", "history.csv", "eval.json", "tb"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "unet-mobilenetv2" and config["alpha"] == 0.35
    assert config["input_size"] == [128, 64] and len(config["class_weight_values"]) == 8
    assert config["macs"] > 0 and config["params"] > 0
    summary = json.loads((run_dir / "eval.json").read_text())
    assert 0.0 <= summary["metrics"]["miou7"] <= 1.0
    assert summary["epochs_run"] == 1
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 2
    assert not list(run_dir.glob("*.tmp*")) and not (run_dir / "last.tmp").exists()

    # a second start into the same folder refuses instead of overwriting
    again = edge_seg("train", "--data", data_root, *TINY, "--epochs", "1", "--run-dir", run_dir, env=QUIET_TF)
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.slow
def test_crop_training_scores_and_saves_the_model_at_input_size(data_root, tmp_path):
    run_dir = tmp_path / "run"
    out = edge_seg("train", "--data", data_root, *TINY, "--epochs", "1", "--steps-per-epoch", "2",
                   "--crop", "64x32", "--run-dir", run_dir, env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["crop"] == [64, 32]
    import tf_keras
    model = tf_keras.models.load_model(run_dir / "best.keras", compile=False)
    assert model.input_shape == (None, 64, 128, 3)

    too_big = edge_seg("train", "--data", data_root, *TINY, "--epochs", "1", "--crop", "256x64",
                       "--run-dir", tmp_path / "big", env=QUIET_TF)
    assert too_big.returncode == 2 and "--crop 256x64 is larger than --input-size 128x64" in too_big.stderr


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch(data_root, tmp_path):
    run_dir = tmp_path / "run"
    args = edge_seg_argv("train", "--data", data_root, *TINY, "--epochs", "3", "--steps-per-epoch", "2",
                         "--run-dir", run_dir)
    env = {**os.environ, **QUIET_TF}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run_dir / "last" / "state.json"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text())["epoch"] >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)  # kill -9 mid-way (epoch 2 under way)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 3
    assert (run_dir / "best.keras").is_file()

    out = edge_seg("train", "--data", data_root, "--run-dir", run_dir, "--resume", "--quiet", env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming {run_dir} after epoch {done}" in out.stderr
    final = json.loads(state.read_text())
    assert final["epoch"] == 3
    assert [row["epoch"] for row in final["history"]] == [1, 2, 3]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed"][0]["after_epoch"] == done
    assert (run_dir / "eval.json").is_file()


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_learns_like_single_device(data_root, tmp_path):
    code = f"""
import json, sys
from edge_seg.train.tf_env import use_legacy_keras
use_legacy_keras()
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
if sys.argv[1] == "mirrored":
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edge_seg.train.trainer import TrainConfig, train_model
cfg = TrainConfig(data={str(data_root)!r}, arch="unet-small", alpha=0.5, input_size=(128, 64), batch=4,
                  epochs=1, steps_per_epoch=12, lr=3e-3, warmup_epochs=0.1, max_val_samples=4,
                  augment=False, distribute=sys.argv[1], run_dir=sys.argv[2], patience=None)
train_model(cfg, progress=False)
state = json.load(open(sys.argv[2] + "/last/state.json"))
print("RESULT", json.dumps({{"loss": state["history"][0]["loss"], "replicas":
      json.load(open(sys.argv[2] + "/config.json"))["replicas"]}}))
"""
    results = {}
    for kind in ("none", "mirrored"):
        out = run([sys.executable, "-c", code, kind, str(tmp_path / kind)])
        assert out.returncode == 0, out.stderr[-3000:]
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]
        results[kind] = json.loads(line.split(" ", 1)[1])
        history = (tmp_path / kind / "history.csv").read_text().splitlines()
        assert len(history) == 2
    assert results["none"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    # same data, same seed, same global batch: the mean training loss of the epoch agrees
    # (BatchNorm sees 2 frames per replica instead of 4, so not bit for bit)
    single, mirrored = results["none"]["loss"], results["mirrored"]["loss"]
    assert abs(single - mirrored) / single < 0.15, results


def test_warm_start_copies_matching_layers_and_names_the_rest(tmp_path):
    """--init-from: same-named, same-shaped layers are copied; a changed head stays fresh."""
    import numpy as np
    import tf_keras as keras

    from edge_seg.errors import UserError
    from edge_seg.train.models import build_model
    from edge_seg.train.trainer import warm_start

    keras.utils.set_random_seed(1)
    source = build_model("unet-mobilenetv2", (128, 64), 0.35)
    path = tmp_path / "source.keras"
    source.save(path)
    keras.utils.set_random_seed(2)
    target = build_model("unet-mobilenetv2", (128, 64), 0.35, num_classes=5)  # head: 8 -> 5 logits
    note = warm_start(target, path)
    assert "1 fresh (head)" in note, note
    for layer in target.layers:
        mine, theirs = layer.get_weights(), source.get_layer(layer.name).get_weights()
        if layer.name != "head" and mine:
            assert all(np.array_equal(a, b) for a, b in zip(mine, theirs)), layer.name
    with pytest.raises(UserError, match="no such model file"):
        warm_start(target, tmp_path / "missing.keras")
    (tmp_path / "bad.keras").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a loadable Keras model"):
        warm_start(target, tmp_path / "bad.keras")


# ------------------------------------------------------------------ several datasets in one run

def test_data_option_parses_weights():
    import click
    from edge_seg.train.cli import parse_data

    assert parse_data(["a"]) == (["a"], None)
    assert parse_data(["a", "b:0.5"]) == (["a", "b"], [1.0, 0.5])
    assert parse_data(["a", "b"], "3,1") == (["a", "b"], [3.0, 1.0])
    with pytest.raises(click.BadParameter):
        parse_data(["a", "b"], "1")
    with pytest.raises(click.BadParameter):
        parse_data(["a:2", "b"], "1,1")


def test_mixed_stream_draws_datasets_in_proportion(tmp_path):
    """Two folder datasets of different frame sizes, one all flat, one all sky: the share
    of sky frames in the training stream follows the weights; every frame arrives at the
    model size."""
    import cv2
    import numpy as np

    from edge_seg.train import datasets
    from edge_seg.train.pipeline import make_dataset

    groups = []
    for name, size, value in (("a", (48, 40), 1), ("b", (96, 30), 2)):
        root = tmp_path / name
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i in range(6):
            cv2.imwrite(str(root / "images" / f"f{i}.png"), np.full((size[1], size[0], 3), 40 * i, np.uint8))
            cv2.imwrite(str(root / "masks" / f"f{i}.png"), np.full((size[1], size[0]), value, np.uint8))
        (root / "mapping.json").write_text(json.dumps({"1": "flat", "2": "sky"}))
        groups.append(datasets.scan(root).splits["train"] + datasets.scan(root).splits["val"])
    ds = make_dataset(groups, (64, 32), batch=8, training=True, seed=1, augment=None, mix_weights=[3, 1])
    sky = total = 0
    for x, y in ds.take(40):
        assert tuple(x.shape) == (8, 32, 64, 3)
        frames = y.numpy().reshape(8, -1)
        sky += int((frames[:, 0] == 5).sum())
        total += 8
    assert abs(sky / total - 0.25) < 0.07, sky / total


@pytest.mark.slow
def test_train_mixes_two_synthetic_datasets(tmp_path):
    synthetic = pytest.importorskip("edge_seg.train.synthetic_dataset")
    a = synthetic.write_dataset(tmp_path / "a", "camvid", n_train=8, n_val=4, size=(256, 128), seed=1)
    b = synthetic.write_dataset(tmp_path / "b", "folder", n_train=8, n_val=4, size=(160, 128), seed=2,
                                split_dirs=True)
    run_dir = tmp_path / "run"
    out = edge_seg("train", "--data", a, "--data", f"{b}:0.25", *TINY, "--epochs", "1",
                   "--steps-per-epoch", "2", "--run-dir", run_dir, env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    mix = config["data_mix"]
    assert [m["format"] for m in mix] == ["camvid", "folder"]
    assert [m["frame_size"] for m in mix] == [[256, 128], [160, 128]]
    assert [m["share"] for m in mix] == [pytest.approx(0.8), pytest.approx(0.2)]
    assert config["train_samples"] == 16
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert "val_miou7_b" in header
    summary = json.loads((run_dir / "eval.json").read_text())
    assert set(summary["other_val"]) == {"b"} and summary["other_val"]["b"]["frames"] == 4

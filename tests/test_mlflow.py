"""`edge-seg train --mlflow`: a short run's parameters, per-epoch metrics and model reach a
local MLflow file store, and MLflow's own client reads them back as the run folder has them."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from conftest import edge_seg

mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")

EPOCHS = 2


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_short_training_run_is_read_back_from_the_file_store(synthetic_camvid, tmp_path,
                                                                 monkeypatch):
    run_dir, store = tmp_path / "run", tmp_path / "mlruns"
    done = edge_seg("train", "--data", synthetic_camvid, "--arch", "unet-small", "--alpha", 0.5,
                    "--input-size", "128x64", "--batch", 4, "--max-val-samples", 4, "--quiet",
                    "--epochs", EPOCHS, "--steps-per-epoch", 2, "--run-dir", run_dir,
                    "--mlflow", "--mlflow-uri", store.as_uri(), timeout=900,
                    env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as the trainer does
    mlflow.set_tracking_uri(store.as_uri())
    [run] = mlflow.search_runs(experiment_names=["edge-seg"], output_format="list")
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    config = json.loads((run_dir / "config.json").read_text())
    params = run.data.params
    assert params["arch"] == config["arch"] == "unet-small"
    assert float(params["alpha"]) == config["alpha"] and int(params["epochs"]) == EPOCHS

    history = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(history) == EPOCHS
    client = mlflow.MlflowClient()
    for name in ("loss", "val_miou7"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert [step for step, _ in logged] == [int(r["epoch"]) for r in history], name
        assert [v for _, v in logged] == pytest.approx(
            [float(r[name]) for r in history], rel=1e-5), name  # history.csv keeps 6 digits

    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                     dst_path=str(tmp_path / "back")))
    assert sha256(local / "best.keras") == sha256(run_dir / "best.keras")
    assert json.loads((local / "eval.json").read_text()) == json.loads((run_dir / "eval.json").read_text())

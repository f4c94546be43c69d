"""The steps of `edge-seg train` without training: resuming from a run folder written by
hand, and the epoch loop (NaN abort, early stopping, time budget) driven by a stand-in for
the model, so each runs in milliseconds and leaves the files a real run leaves."""
from __future__ import annotations

import json
import math
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import REPO, python_without_tf

pytest.importorskip("tqdm")

from edge_seg.errors import EXIT_USAGE, UserError  # noqa: E402
from edge_seg.labels import CATEGORY_NAMES  # noqa: E402
from edge_seg.train.epochs import EpochLoop, Progress, TrainingDiverged, rng_state  # noqa: E402
from edge_seg.train.trainer import TrainConfig, class_weights, resolve_run  # noqa: E402


def metrics(miou7: float) -> dict:
    return {"miou7": miou7, "miou8": miou7 - 0.05, "pixel_accuracy": 0.9,
            "iou": {c: miou7 for c in CATEGORY_NAMES[1:]}}


def history_row(epoch: int, miou7: float) -> dict:
    return {"epoch": epoch, "steps": 2, "loss": 1.0, "lr": 1e-3, "val_miou7": miou7,
            "wall_seconds": 10.0 * epoch}


def write_run(run_dir: Path, cfg: TrainConfig, epoch: int, checkpoint: str = "last", **saved) -> Path:
    """A run folder as a run leaves it after ``epoch`` epochs: config.json and a checkpoint."""
    (run_dir / checkpoint).mkdir(parents=True)
    config = {**asdict(cfg), **saved}
    (run_dir / "config.json").write_text(json.dumps(config))
    history = [history_row(e, 0.1 * e) for e in range(1, epoch + 1)]
    state = {"epoch": epoch, "best_miou7": 0.1 * epoch, "bad_epochs": 0, "history": history,
             "rng": rng_state(), "wall_seconds": 10.0 * epoch}
    (run_dir / checkpoint / "state.json").write_text(json.dumps(state))
    return run_dir


# ------------------------------------------------------------------ resume

def test_resume_continues_after_the_last_epoch_with_the_saved_configuration(tmp_path):
    run_dir = tmp_path / "run"
    saved = TrainConfig(data=str(tmp_path), arch="unet-small", alpha=0.5, lr=5e-4, epochs=10,
                        loss="ce+dice", run_dir=str(run_dir))
    write_run(run_dir, saved, epoch=3, command="edge-seg train --arch unet-small")
    given = TrainConfig(data=str(tmp_path), run_dir=str(run_dir), lr=0.1, epochs=20)  # lr not an override
    start = resolve_run(given, resume=True, overrides={"epochs": 20})
    assert start.resumed and start.last == run_dir / "last"
    assert start.progress.epoch == 3 and start.progress.best_miou7 == pytest.approx(0.3)
    assert [row["epoch"] for row in start.progress.history] == [1, 2, 3]
    assert start.progress.wall_seconds == 30.0
    assert (start.cfg.arch, start.cfg.alpha, start.cfg.lr, start.cfg.loss) == ("unet-small", 0.5, 5e-4, "ce+dice")
    assert start.cfg.epochs == 20
    assert start.saved["command"] == "edge-seg train --arch unet-small"


def test_resume_from_another_directory_uses_the_resolved_data_path(tmp_path, monkeypatch):
    data = tmp_path / "camvid"
    data.mkdir()
    run_dir = tmp_path / "run"
    write_run(run_dir, TrainConfig(data="camvid", run_dir=str(run_dir)), epoch=1, data_resolved=str(data))
    monkeypatch.chdir(tmp_path)
    assert resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True).cfg.data == "camvid"
    monkeypatch.chdir(REPO)  # "camvid" is not here: the absolute path recorded at the start is
    assert resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True).cfg.data == str(data)


def test_a_swap_interrupted_between_renames_resumes_from_last_old(tmp_path):
    run_dir = write_run(tmp_path / "run", TrainConfig(), epoch=2, checkpoint="last.old")
    start = resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True)
    assert start.last == run_dir / "last.old" and start.progress.epoch == 2


def test_resume_and_fresh_start_refuse_what_they_cannot_do(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="nothing to resume"):
        resolve_run(TrainConfig(run_dir=str(empty)), resume=True)
    run_dir = write_run(tmp_path / "run", TrainConfig(), epoch=1)
    with pytest.raises(UserError, match=r"already holds a run \(last epoch in last/\).*--resume"):
        resolve_run(TrainConfig(run_dir=str(run_dir)))
    (run_dir / "config.json").write_text("{truncated")
    with pytest.raises(UserError, match="config.json: cannot be read"):
        resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True)
    assert not resolve_run(TrainConfig(run_dir=str(tmp_path / "new"))).resumed


def test_resume_reuses_the_stored_class_weights_unless_their_options_change(tmp_path, monkeypatch):
    import numpy as np

    from edge_seg.train import datasets

    read = []
    mask = np.repeat(np.arange(8, dtype=np.uint8), [0, 60, 20, 10, 5, 3, 1, 1])[None, :]
    monkeypatch.setattr(datasets, "read_mask", lambda sample: read.append(sample) or mask)
    run_dir = tmp_path / "run"
    stored = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 1.5, 2.5]
    write_run(run_dir, TrainConfig(class_weights="median-freq", max_class_weight=5.0), epoch=1,
              class_weight_values=stored)
    start = resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True)
    assert class_weights(start, train_samples=["frame"]) == stored and read == []
    changed = resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True, overrides={"max_class_weight": 3.0})
    recomputed = class_weights(changed, train_samples=["frame"])
    assert read == ["frame"] and len(recomputed) == 8 and max(recomputed) == 3.0


def test_the_resume_step_needs_no_tensorflow(tmp_path):
    run_dir = write_run(tmp_path / "run", TrainConfig(), epoch=4)
    code = ("from edge_seg.train.trainer import TrainConfig, resolve_run\n"
            f"print('EPOCH', resolve_run(TrainConfig(run_dir={str(run_dir)!r}), resume=True).progress.epoch)")
    out = subprocess.run(python_without_tf(code), capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EPOCH 4" in out.stdout


# ------------------------------------------------------------------ the epoch loop

class FakeCheckpoint:
    def __init__(self):
        self.epoch = 0

    def write(self, prefix: str):
        Path(prefix + ".index").write_text(str(self.epoch))


class FakeTrainee:
    """Losses and validation scores from lists; every step advances a fake clock."""

    def __init__(self, losses, scores, seconds_per_step=1.0):
        self.losses, self.scores, self.seconds_per_step = list(losses), list(scores), seconds_per_step
        self.now, self.steps, self.best_saves = 0.0, 0, 0
        self.ckpt = FakeCheckpoint()

    def clock(self) -> float:
        return self.now

    def step(self) -> float:
        self.steps += 1
        self.now += self.seconds_per_step
        return self.losses.pop(0)

    def lr(self) -> float:
        return 1e-3

    def validate(self):
        self.ckpt.epoch += 1
        return metrics(self.scores.pop(0)), {}

    def save_best(self, path: Path):
        self.best_saves += 1
        path.write_text(str(self.ckpt.epoch))


def loop(trainee, run_dir, steps=2, progress=None, **cfg):
    run_dir.mkdir(exist_ok=True)
    config = TrainConfig(**{"epochs": 3, "lr": 2e-3, "patience": None, **cfg})
    return EpochLoop(trainee, config, run_dir, steps, progress or Progress(), show_bar=False,
                     clock=trainee.clock)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_finished_epoch(tmp_path):
    run_dir = tmp_path / "run"
    trainee = FakeTrainee([0.9, 0.8, math.nan], [0.3, 0.4])
    with pytest.raises(TrainingDiverged) as err:
        loop(trainee, run_dir).run()
    assert str(err.value) == (f"loss became nan at epoch 2 step 1; training stopped. The last good "
                              f"checkpoint {run_dir}/last/ (epoch 1) and best.keras are kept; lower "
                              f"--lr (now 0.002) and start a new run")
    assert err.value.exit_code == EXIT_USAGE
    state = json.loads((run_dir / "last" / "state.json").read_text())
    assert state["epoch"] == 1 and state["best_miou7"] == 0.3
    assert (run_dir / "last" / "ckpt.index").read_text() == "1"
    assert (run_dir / "best.keras").read_text() == "1"
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2
    assert not (run_dir / "last.tmp").exists() and not (run_dir / "last.old").exists()


def test_a_nan_loss_before_any_epoch_finished_says_no_checkpoint_exists(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss became inf at epoch 1 step 2; .* No epoch had "
                                               r"finished, so no checkpoint was written"):
        loop(FakeTrainee([0.9, math.inf], []), run_dir).run()
    assert list(run_dir.iterdir()) == []


def test_a_nan_loss_ends_edge_seg_train_with_one_error_line_and_exit_code_2(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import edge_seg.train.trainer as trainer
    from edge_seg.cli import main

    def train_model(cfg, **_):
        loop(FakeTrainee([0.9, 0.8, 0.7, math.nan], [0.3]), Path(cfg.run_dir)).run()

    monkeypatch.setattr(trainer, "train_model", train_model)
    run_dir, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--run-dir", str(run_dir), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: loss became nan at epoch 2 step 2; training stopped.")
    assert "Traceback" not in result.output
    # what --resume would continue from: the epoch before the NaN
    (run_dir / "config.json").write_text(json.dumps(asdict(TrainConfig(run_dir=str(run_dir)))))
    assert resolve_run(TrainConfig(run_dir=str(run_dir)), resume=True).progress.epoch == 1


def test_early_stopping_after_patience_epochs_without_gain(tmp_path):
    run_dir = tmp_path / "run"
    trainee = FakeTrainee([1.0] * 20, [0.5, 0.4, 0.45, 0.3, 0.9])
    stopped = loop(trainee, run_dir, epochs=10, patience=3).run()
    assert stopped == "early stopping: no val mIoU(7) gain in 3 epochs"
    state = json.loads((run_dir / "last" / "state.json").read_text())
    assert state["epoch"] == 4 and state["bad_epochs"] == 3 and state["best_miou7"] == 0.5
    assert trainee.best_saves == 1 and (run_dir / "best.keras").read_text() == "1"


def test_the_time_budget_ends_the_epoch_and_counts_the_time_before_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    resumed = Progress(epoch=1, best_miou7=0.5, history=[history_row(1, 0.5)], wall_seconds=100.0)
    trainee = FakeTrainee([1.0] * 10, [0.6], seconds_per_step=10.0)
    stopped = loop(trainee, run_dir, steps=5, progress=resumed, time_budget=125).run()
    assert stopped == "time budget of 125 s reached"
    assert trainee.steps == 3  # 100 s before the resume, then 10, 20, 30 s
    state = json.loads((run_dir / "last" / "state.json").read_text())
    assert state["epoch"] == 2 and state["wall_seconds"] == 130.0
    assert [row["steps"] for row in state["history"]] == [2, 3]
    header = (run_dir / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,steps,loss,lr,val_miou7") and header.endswith("epoch_seconds,wall_seconds")

"""The epoch loop of ``edge-seg train`` and the run folder's resumable state.

The loop knows nothing of TensorFlow: it drives a ``Trainee`` (one training step, the
learning rate, validation scores, saving the model, a checkpoint), so that resume, the NaN
abort, early stopping and the time budget can be exercised with a stand-in in
milliseconds, and the files they leave behind are the ones a real run leaves.

``last/`` is written as ``last.tmp/`` and swapped in by rename, so that a run killed at any
moment leaves either the previous epoch's checkpoint or this one's, never half of one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.io.publish import atomic_write_bytes, atomic_write_json
from edge_seg.labels import CATEGORY_NAMES

HISTORY_FIELDS = ["epoch", "steps", "loss", "lr", "val_miou7", "val_miou8", "val_pixel_accuracy",
                  *[f"val_iou_{c}" for c in CATEGORY_NAMES[1:]], "epoch_seconds", "wall_seconds"]


class TrainingDiverged(UserError):
    pass


def log(msg: str, event: str = "train", **fields):
    """Training's lines: on stderr, beside the progress bar (stdout keeps the results)."""
    logs.status(event, msg, **fields)


@dataclass
class Progress:
    """Where a run stands after its last finished epoch (``last/state.json``)."""
    epoch: int = 0
    best_miou7: float = -1.0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    wall_seconds: float = 0.0

    @classmethod
    def read(cls, last: Path) -> tuple["Progress", dict]:
        """The progress recorded in the checkpoint folder ``last`` and its RNG states."""
        state = json.loads((last / "state.json").read_text())
        return cls(state["epoch"], state["best_miou7"], state["bad_epochs"], state["history"],
                   state.get("wall_seconds", 0.0)), state["rng"]

    def state(self) -> dict:
        return {"epoch": self.epoch, "best_miou7": self.best_miou7, "bad_epochs": self.bad_epochs,
                "history": self.history, "rng": rng_state(), "wall_seconds": self.wall_seconds}


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}


def set_rng_state(state: dict):
    s = state["numpy"]
    np.random.set_state((s[0], np.array(s[1], np.uint32), *s[2:]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def find_last(run_dir: Path) -> Path | None:
    """The newest complete last/ checkpoint (last.old/ if a swap was interrupted)."""
    for name in ("last", "last.old"):
        d = Path(run_dir) / name
        if (d / "state.json").is_file():
            return d
    return None


def save_last(run_dir: Path, ckpt, state: dict):
    tmp, last, old = run_dir / "last.tmp", run_dir / "last", run_dir / "last.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ckpt.write(str(tmp / "ckpt"))
    atomic_write_json(tmp / "state.json", state)
    shutil.rmtree(old, ignore_errors=True)
    if last.exists():
        os.replace(last, old)
    os.replace(tmp, last)
    shutil.rmtree(old, ignore_errors=True)


def other_val_columns(name: str, result: dict) -> dict:
    """history.csv columns of another dataset's val split: mIoU(7), per-category IoU and,
    with coarse labels, the mean IoU over the categories with exact labels and the share
    of set pixels predicted inside their set."""
    cols = {f"val_miou7_{name}": result["miou7"],
            **{f"val_iou_{c}_{name}": result["iou"][c] for c in CATEGORY_NAMES[1:]}}
    if "set_labels" in result:
        cols[f"val_miou_exact_{name}"] = result["set_labels"]["miou_exact_categories"]
        cols[f"val_set_inside_{name}"] = result["set_labels"]["inside"]
    return cols


def write_history(path: Path, rows: list[dict]):
    buf = io.StringIO()
    extra = [k for k in (rows[0] if rows else {}) if k not in HISTORY_FIELDS]  # mixed datasets' val
    writer = csv.DictWriter(buf, HISTORY_FIELDS[:-2] + extra + HISTORY_FIELDS[-2:], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


class Trainee(Protocol):
    """What the loop needs of the model being trained."""
    ckpt: object  # written by ``ckpt.write(prefix)`` into last/

    def step(self) -> float:
        """Train on the next batch; the batch's loss."""

    def lr(self) -> float:
        """The learning rate of the next step."""

    def validate(self) -> tuple[dict, dict]:
        """SegMetrics results of the first dataset's val split, and of the others' by name."""

    def save_best(self, path: Path) -> None:
        """Save the model (at the input size) to ``path``, atomically."""


class EpochLoop:
    """Epochs from ``progress.epoch`` to ``cfg.epochs``: train, validate, checkpoint; stops
    early on the time budget or on ``cfg.patience`` epochs without a better val mIoU(7),
    and aborts on a loss that is not finite, keeping the last finished epoch's files."""

    def __init__(self, trainee: Trainee, cfg, run_dir: Path, steps: int, progress: Progress, *,
                 loggers: tuple[Callable[[dict, int], None], ...] = (), show_bar: bool = True,
                 clock: Callable[[], float] = time.time):
        self.trainee, self.cfg, self.run_dir, self.steps = trainee, cfg, Path(run_dir), steps
        self.progress, self.loggers, self.show_bar, self.clock = progress, loggers, show_bar, clock
        self.wall_before = progress.wall_seconds
        self.t_start = clock()
        self.stopped: str | None = None
        self.last_val = progress.history[-1]["val_miou7"] if progress.history else float("nan")

    def run(self) -> str | None:
        """Train to the end; why it stopped early (None when every epoch ran)."""
        for epoch in range(self.progress.epoch, self.cfg.epochs):
            t_epoch = self.clock()
            losses = self.train_epoch(epoch)
            self.validate_and_checkpoint(epoch, losses, t_epoch)
            if self.cfg.patience and self.progress.bad_epochs >= self.cfg.patience:
                self.stopped = f"early stopping: no val mIoU(7) gain in {self.cfg.patience} epochs"
            if self.stopped:
                log(self.stopped)
                break
        return self.stopped

    def _wall(self) -> float:
        return self.wall_before + self.clock() - self.t_start

    def train_epoch(self, epoch: int) -> list[float]:
        """The losses of one epoch's steps (fewer when the time budget runs out)."""
        cfg, losses = self.cfg, []
        bar = logs.progress(total=self.steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                            quiet=not self.show_bar, mininterval=2.0)
        for step in range(self.steps):
            loss = self.trainee.step()
            if not math.isfinite(loss):
                bar.close()
                raise self.diverged(loss, epoch, step)
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", val_miou7=f"{self.last_val:.4f}")
            bar.update(1)
            if cfg.time_budget and self._wall() > cfg.time_budget:
                self.stopped = f"time budget of {cfg.time_budget:g} s reached"
                break
        bar.close()
        return losses

    def diverged(self, loss: float, epoch: int, step: int) -> TrainingDiverged:
        history = self.progress.history
        if history:
            kept = (f"The last good checkpoint {self.run_dir}/last/ (epoch {history[-1]['epoch']}) "
                    f"and best.keras are kept")
        else:
            kept = "No epoch had finished, so no checkpoint was written"
        return TrainingDiverged(
            f"loss became {loss} at epoch {epoch + 1} step {step + 1}; training stopped. "
            f"{kept}; lower --lr (now {self.cfg.lr:g}) and start a new run")

    def validate_and_checkpoint(self, epoch: int, losses: list[float], t_epoch: float):
        """Score the epoch, keep best.keras when it is the best so far, then write last/
        and history.csv."""
        lr_now = self.trainee.lr()
        m, others = self.trainee.validate()
        self.last_val = m["miou7"]
        epoch_seconds = self.clock() - t_epoch
        row = {"epoch": epoch + 1, "steps": len(losses), "loss": float(np.mean(losses)), "lr": lr_now,
               "val_miou7": m["miou7"], "val_miou8": m["miou8"],
               "val_pixel_accuracy": m["pixel_accuracy"],
               **{f"val_iou_{c}": m["iou"][c] for c in CATEGORY_NAMES[1:]},
               **{k: v for name, r in others.items() for k, v in other_val_columns(name, r).items()},
               "epoch_seconds": epoch_seconds, "wall_seconds": self._wall()}
        p = self.progress
        p.history.append(row)
        improved = m["miou7"] > p.best_miou7
        if improved:
            p.best_miou7, p.bad_epochs = m["miou7"], 0
            self.trainee.save_best(self.run_dir / "best.keras")
        else:
            p.bad_epochs += 1
        log(f"epoch {epoch + 1}/{self.cfg.epochs}: loss {row['loss']:.4f}  val mIoU(7) {m['miou7']:.4f}"
            f"{' (best)' if improved else ''}  " +
            " ".join(f"{c[:5]} {m['iou'][c]:.3f}" for c in CATEGORY_NAMES[1:]) +
            "".join(f"  [{name} mIoU(7) {r['miou7']:.4f}]" for name, r in others.items()) +
            f"  lr {lr_now:.2e}  {epoch_seconds:.0f} s", event="train.epoch", best=improved, **row)
        for logger in self.loggers:
            logger(row, epoch + 1)
        p.epoch, p.wall_seconds = epoch + 1, row["wall_seconds"]
        save_last(self.run_dir, self.trainee.ckpt, p.state())
        write_history(self.run_dir / "history.csv", p.history)

"""The training loop behind ``edge-seg train``.

A custom tf.distribute-aware loop (default strategy, MirroredStrategy or
MultiWorkerMirroredStrategy), AdamW with linear warm-up + cosine decay, per-epoch
validation with ``edge_seg.iou.SegMetrics`` (category mIoU over the 7 non-void
categories), and a run folder that survives kill -9:

* ``config.json``   everything needed to reproduce (and to resume) the run;
* ``last/``         model + optimizer (tf.train.Checkpoint) + ``state.json`` (epoch, best
                    score, early-stopping counter, history, RNG states), written every
                    epoch to ``last.tmp/`` and swapped in by rename;
* ``best.keras``    the model with the best val mIoU(7), written atomically;
* ``history.csv``, ``tb/`` (TensorBoard), ``eval.json`` at the end.

A killed run resumes with ``--resume`` from its last finished epoch.

Several datasets (``data`` a list) train together: every training frame is drawn from
dataset i with probability ``data_weights[i] / sum`` (default: in proportion to the
datasets' training frames, as if concatenated), each resized to the model input by the
shared preprocessing. Checkpoints are selected on the first dataset's validation split;
the others' are scored every epoch beside it (``val_miou7_<dataset>``, per-category IoU and the
inside-the-set share of coarse labels in history.csv).
``config.json`` records the mix: each dataset's path, format, splits, frame count, frame
size, weight and share.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from edge_seg.errors import UserError
from edge_seg.labels import CATEGORY_NAMES
from edge_seg.io.publish import atomic_write_bytes, atomic_write_json

CONFIG_VERSION = 1
# options a --resume may change (given explicitly on its command line); the rest of the
# configuration always comes from the run's config.json
RESUME_OVERRIDABLE = ("epochs", "time_budget", "patience", "loss", "dice_weight", "class_weights",
                      "max_class_weight")


@dataclass
class TrainConfig:
    data: str | list = ""                 # a dataset root, or a list of roots to mix
    data_weights: list | None = None      # sampling weight per dataset (default: frame counts)
    train_split: str = "train"
    val_split: str = "val"                # e.g. drive-val: drives no training frame comes from
    format: str = "auto"
    arch: str = "unet-mobilenetv2"
    alpha: float | None = None
    input_size: tuple[int, int] = (512, 256)
    crop: tuple[int, int] | None = None
    backbone_weights: str = "none"
    bn_momentum: float = 0.9
    epochs: int = 40
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    loss: str = "ce"
    dice_weight: float = 1.0
    class_weights: str = "none"
    max_class_weight: float | None = None
    seed: int = 0
    run_dir: str = "runs/run"
    steps_per_epoch: int | None = None    # default: len(train) // batch
    time_budget: float | None = None      # seconds of training; stops (and finishes) early
    patience: int | None = 20             # early stopping on val mIoU(7); None = off
    max_val_samples: int | None = None    # score only the first N val frames per epoch
    distribute: str = "none"
    mlflow: bool = False
    mlflow_uri: str | None = None
    augment: bool = True
    init_from: str | None = None          # warm start: weights of same-named, same-shaped layers
    version: int = CONFIG_VERSION

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "input_size" in d:
            d["input_size"] = tuple(d["input_size"])
        if d.get("crop"):
            d["crop"] = tuple(d["crop"])
        return cls(**d)

    @property
    def data_roots(self) -> list[str]:
        return [str(p) for p in self.data] if isinstance(self.data, (list, tuple)) else [str(self.data)]


class TrainingDiverged(UserError):
    pass


# ------------------------------------------------------------------ helpers

def make_strategy(kind: str):
    import tensorflow as tf
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = tf.config.list_logical_devices("CPU")
        # no GPU: mirror over the logical CPU devices (one unless configured otherwise)
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    if kind == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--distribute multi-worker needs TF_CONFIG describing the cluster "
                            "(see tf.distribute.MultiWorkerMirroredStrategy); it is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown --distribute {kind!r}; choose none, mirrored or multi-worker")


def warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int, min_ratio: float):
    import tensorflow as tf
    import tf_keras as keras

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = base_lr * (step + 1.0) / float(max(warmup_steps, 1))
            progress = tf.clip_by_value((step - warmup_steps) / float(max(total_steps - warmup_steps, 1)),
                                        0.0, 1.0)
            cosine = base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + tf.cos(math.pi * progress)))
            return tf.where(step < warmup_steps, warm, cosine)

        def get_config(self):
            return {"base_lr": base_lr, "total_steps": total_steps, "warmup_steps": warmup_steps,
                    "min_ratio": min_ratio}

    return WarmupCosine()


def atomic_save_keras(model, path: Path):
    """model.save to a temporary name in the same folder, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    try:
        model.save(tmp)  # never compiled: no optimizer inside
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}


def _set_rng_state(state: dict):
    s = state["numpy"]
    np.random.set_state((s[0], np.array(s[1], np.uint32), *s[2:]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def find_last(run_dir: Path) -> Path | None:
    """The newest complete last/ checkpoint (last.old/ if a swap was interrupted)."""
    for name in ("last", "last.old"):
        d = run_dir / name
        if (d / "state.json").is_file():
            return d
    return None


HISTORY_FIELDS = ["epoch", "steps", "loss", "lr", "val_miou7", "val_miou8", "val_pixel_accuracy",
                  *[f"val_iou_{c}" for c in CATEGORY_NAMES[1:]], "epoch_seconds", "wall_seconds"]


def _other_val_columns(name: str, result: dict) -> dict:
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


def _require_mlflow():
    try:
        import mlflow
    except ImportError:
        raise UserError("--mlflow needs mlflow, which is not installed: "
                        "pip install 'edge-seg[mlflow]' (or drop --mlflow)") from None
    return mlflow


class _MLflow:
    def __init__(self, cfg: TrainConfig, run_dir: Path):
        self.active = False
        if not cfg.mlflow:
            return
        self.mlflow = mlflow = _require_mlflow()
        uri = cfg.mlflow_uri or (Path(run_dir).resolve().parent / "mlruns").as_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("edge-seg")
        self.run = mlflow.start_run(run_name=Path(run_dir).name)
        mlflow.log_params({k: str(v) for k, v in asdict(cfg).items()})
        self.active = True

    def log_epoch(self, row: dict, epoch: int):
        if self.active:
            self.mlflow.log_metrics({k: float(v) for k, v in row.items()
                                     if isinstance(v, (int, float)) and k != "epoch"
                                     and not (isinstance(v, float) and math.isnan(v))}, step=epoch)

    def finish(self, run_dir: Path):
        if self.active:
            for name in ("best.keras", "eval.json", "history.csv", "config.json"):
                if (run_dir / name).exists():
                    self.mlflow.log_artifact(str(run_dir / name))
            self.mlflow.end_run()


def _tb_scalars(writer, row: dict, step: int):
    """TensorBoard scalars through the core summary op (the tensorboard package is optional)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    with writer.as_default(step=step):
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                tf.summary.write(k, tf.constant(float(v), tf.float32), metadata=meta)
    writer.flush()


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def warm_start(model, source) -> str:
    """Copy the weights of every layer of ``source`` (a .keras model) whose name and weight
    shapes match a layer of ``model``; the rest keep their fresh initialisation."""
    import tf_keras as keras

    path = Path(source)
    if not path.is_file():
        raise UserError(f"--init-from {path}: no such model file")
    try:
        src = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 -- a corrupt or foreign file is a user error
        raise UserError(f"--init-from {path}: not a loadable Keras model ({type(e).__name__}: {e})") from None
    by_name = {layer.name: layer for layer in src.layers}
    copied, fresh = 0, []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = by_name.get(layer.name)
        theirs = other.get_weights() if other is not None else None
        if theirs is not None and [w.shape for w in theirs] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(theirs)
            copied += 1
        else:
            fresh.append(layer.name)
    if not copied:
        raise UserError(f"--init-from {path}: no layer matches this architecture by name and shape")
    return (f"warm start from {path}: {copied} layers copied, {len(fresh)} fresh"
            + (f" ({', '.join(fresh[:6])}{'...' if len(fresh) > 6 else ''})" if fresh else ""))


def data_mix(cfg: TrainConfig) -> list[dict]:
    """One record per dataset of the run: name, root, format, splits, training frames
    ("samples", popped by the caller), frame size, sampling weight and share."""
    import cv2

    from .datasets import load_split, scan

    roots = cfg.data_roots
    if not roots or not all(roots):
        raise UserError("--data: no dataset given")
    weights = cfg.data_weights
    if weights is not None and len(weights) != len(roots):
        raise UserError(f"--data-weights: {len(weights)} weight(s) for {len(roots)} dataset(s); give one per --data")
    if weights is not None and (any(not (w >= 0) for w in weights) or not sum(weights) > 0):
        raise UserError(f"--data-weights {weights}: weights must be >= 0 and not all 0")
    mix, names = [], set()
    for i, root in enumerate(roots):
        layout = scan(root, cfg.format)
        samples = load_split(root, cfg.format, cfg.train_split)
        name = Path(root).resolve().name or f"data{i}"
        name = name if name not in names else f"{name}{i}"
        names.add(name)
        first = cv2.imread(str(samples[0].image), cv2.IMREAD_UNCHANGED)
        mix.append({"name": name, "data": str(root), "format": layout.fmt, "train_split": cfg.train_split,
                    "val_split": cfg.val_split, "train_frames": len(samples),
                    "frame_size": [int(first.shape[1]), int(first.shape[0])] if first is not None else None,
                    "weight": float(weights[i]) if weights is not None else float(len(samples)),
                    "samples": samples})
    total = sum(m["weight"] for m in mix)
    for m in mix:
        m["share"] = m["weight"] / total
    return mix


# ------------------------------------------------------------------ the loop

def train_model(cfg: TrainConfig, resume: bool = False, overrides: dict | None = None,
                progress: bool = True) -> dict:
    """Train per ``cfg``; returns the final summary (also written to eval.json)."""
    run_dir = Path(cfg.run_dir)
    last = find_last(run_dir) if run_dir.exists() else None
    if resume:
        if last is None:
            raise UserError(f"{run_dir}: nothing to resume (no last/ checkpoint); "
                            "start without --resume")
        saved = json.loads((run_dir / "config.json").read_text())
        cfg = TrainConfig.from_dict({**saved, **(overrides or {})})
        resolved = saved.get("data_resolved")
        if resolved and not all(Path(p).exists() for p in cfg.data_roots):
            cfg.data = resolved  # resumed from another working directory
    elif last is not None:
        raise UserError(f"{run_dir} already holds a run (last epoch in {last.name}/); "
                        "continue it with --resume or choose another --run-dir")

    if cfg.mlflow:
        _require_mlflow()
    import tensorflow as tf
    import tf_keras as keras
    from tqdm import tqdm

    from .datasets import load_split
    from .evaluate import CachedValSet, keras_predictor
    from .losses import LOSSES, make_loss, median_frequency_weights
    from .models import build_model, check_arch_alpha, check_input_size, count_macs
    from .pipeline import Augment, make_dataset

    cfg.alpha = check_arch_alpha(cfg.arch, cfg.alpha)
    size = check_input_size(cfg.input_size)
    crop = check_input_size(cfg.crop) if cfg.crop else size
    if crop[0] > size[0] or crop[1] > size[1]:
        raise UserError(f"--crop {crop[0]}x{crop[1]} is larger than --input-size {size[0]}x{size[1]}")
    if cfg.loss not in LOSSES:
        raise UserError(f"unknown --loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
    if cfg.class_weights not in ("none", "median-freq", "sqrt-median-freq"):
        raise UserError(f"unknown --class-weights {cfg.class_weights!r}; "
                        "choose none, median-freq or sqrt-median-freq")
    if cfg.epochs < 1 or cfg.batch < 1 or not cfg.lr > 0:
        raise UserError("--epochs and --batch must be >= 1 and --lr > 0")

    mix = data_mix(cfg)
    train_groups = [m.pop("samples") for m in mix]
    train_samples = [s for g in train_groups for s in g]
    val_groups = [load_split(root, cfg.format, cfg.val_split) for root in cfg.data_roots]
    if cfg.max_val_samples:
        val_groups = [g[:cfg.max_val_samples] for g in val_groups]
    val_samples = val_groups[0]
    run_dir.mkdir(parents=True, exist_ok=True)

    strategy = make_strategy(cfg.distribute)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch % replicas:
        raise UserError(f"--batch {cfg.batch} must be a multiple of the {replicas} replicas")
    steps = cfg.steps_per_epoch or max(1, len(train_samples) // cfg.batch)
    total_steps = steps * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps))

    # class weights: computed once, stored in config.json (so a resume never recomputes)
    weights = None
    if cfg.class_weights != "none":
        same = resume and all(saved.get(k) == getattr(cfg, k) for k in ("class_weights", "max_class_weight"))
        saved_w = saved.get("class_weight_values") if same else None
        if saved_w is None:
            from .datasets import read_mask
            _log(f"computing {cfg.class_weights} class weights over {len(train_samples)} training masks")
            saved_w = median_frequency_weights((read_mask(s) for s in train_samples), cfg.max_class_weight,
                                               power=0.5 if cfg.class_weights.startswith("sqrt") else 1.0
                                               ).tolist()
        weights = saved_w

    start_epoch, best, bad_epochs, history, wall_before = 0, -1.0, 0, [], 0.0
    state = None
    if resume:
        state = json.loads((last / "state.json").read_text())
        start_epoch, best = state["epoch"], state["best_miou7"]
        bad_epochs, history = state["bad_epochs"], state["history"]
        wall_before = state.get("wall_seconds", 0.0)
        _log(f"resuming {run_dir} after epoch {start_epoch} (best val mIoU(7) {best:.4f})")
        if start_epoch >= cfg.epochs:
            _log("the run already finished all its epochs")
    keras.utils.set_random_seed(cfg.seed + 7919 * start_epoch)

    with strategy.scope():
        model = build_model(cfg.arch, size, cfg.alpha, cfg.backbone_weights, bn_momentum=cfg.bn_momentum)
        # crops train a twin built at the crop size (same weights, no size-dependent ones);
        # the model at --input-size gets its weights before every validation and save
        fit_model = model if crop == size else build_model(cfg.arch, crop, cfg.alpha, cfg.backbone_weights,
                                                            bn_momentum=cfg.bn_momentum)
        schedule = warmup_cosine(cfg.lr, total_steps, warmup, cfg.min_lr_ratio)
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bn", "BN", "bias", "beta", "gamma"])
        optimizer.build(fit_model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=fit_model, optimizer=optimizer)
    if cfg.init_from and not resume:
        _log(warm_start(fit_model, cfg.init_from))
    if resume:
        ckpt.read(str(last / "ckpt")).assert_existing_objects_matched().expect_partial()
        _set_rng_state(state["rng"])

    macs, params = count_macs(model), model.count_params()
    config_dict = asdict(cfg)
    resolved = [str(Path(p).resolve()) for p in cfg.data_roots]
    config_dict.update(data_resolved=resolved if isinstance(cfg.data, (list, tuple)) else resolved[0],
                       data_mix=mix, class_weight_values=weights, steps_per_epoch_effective=steps,
                       total_steps=total_steps, warmup_steps=warmup, replicas=replicas,
                       train_samples=len(train_samples), val_samples=len(val_samples),
                       params=params, macs=macs, tensorflow=tf.__version__,
                       command=" ".join(sys.argv))
    if resume:  # keep the original command; record each resume
        config_dict["command"] = saved.get("command")
        config_dict["resumed"] = saved.get("resumed", []) + [
            {"after_epoch": start_epoch, "command": " ".join(sys.argv), "overrides": overrides or {}}]
    atomic_write_json(run_dir / "config.json", config_dict)
    if len(mix) > 1:
        _log("mixing " + ", ".join(f"{m['name']} ({m['train_frames']} {m['train_split']} frames, "
                                   f"{m['frame_size'][0]}x{m['frame_size'][1]}, {100 * m['share']:.0f}%)"
                                   for m in mix))
    _log(f"{cfg.arch} alpha {cfg.alpha:g} at {size[0]}x{size[1]}: {params / 1e6:.2f} M params, "
         f"{macs / 1e9:.3f} GMAC; {len(train_samples)} train / {len(val_samples)} val frames, "
         f"{steps} steps/epoch x {cfg.epochs} epochs, {replicas} replica(s)")
    if weights is not None:
        _log("class weights: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(CATEGORY_NAMES, weights)))

    # data: a fresh deterministic stream per (seed, start epoch)
    ds = make_dataset(train_groups, size=size, batch=cfg.batch, training=True,
                      seed=cfg.seed + 7919 * start_epoch, augment=Augment() if cfg.augment else None,
                      crop=None if crop == size else crop, mix_weights=[m["weight"] for m in mix])
    dist_ds = strategy.experimental_distribute_dataset(ds)
    data_iter = iter(dist_ds)
    val_set = CachedValSet(val_samples, size)
    other_val = {m["name"]: CachedValSet(g, size) for m, g in zip(mix[1:], val_groups[1:])}
    predict = keras_predictor(model, batch=cfg.batch)
    loss_fn = make_loss(cfg.loss, weights, cfg.dice_weight)

    @tf.function
    def train_step(batch):
        def step_fn(x, y):
            with tf.GradientTape() as tape:
                logits = fit_model(x, training=True)
                loss = loss_fn(y, logits)
                scaled = loss / replicas
            grads = tape.gradient(scaled, fit_model.trainable_variables)
            optimizer.apply_gradients(zip(grads, fit_model.trainable_variables))
            return loss
        per_replica = strategy.run(step_fn, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    tracker = _MLflow(cfg, run_dir)
    t_start = time.time()
    stopped = None
    last_val = history[-1]["val_miou7"] if history else float("nan")

    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        losses = []
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   dynamic_ncols=True, file=sys.stderr, mininterval=2.0)
        for step in range(steps):
            loss = float(train_step(next(data_iter)))
            if not math.isfinite(loss):
                bar.close()
                if history:
                    kept = (f"The last good checkpoint {run_dir}/last/ (epoch {history[-1]['epoch']}) "
                            f"and best.keras are kept")
                else:
                    kept = "No epoch had finished, so no checkpoint was written"
                raise TrainingDiverged(
                    f"loss became {loss} at epoch {epoch + 1} step {step + 1}; training stopped. "
                    f"{kept}; lower --lr (now {cfg.lr:g}) and start a new run")
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", val_miou7=f"{last_val:.4f}")
            bar.update(1)
            if cfg.time_budget and wall_before + time.time() - t_start > cfg.time_budget:
                stopped = f"time budget of {cfg.time_budget:g} s reached"
                break
        bar.close()
        lr_now = float(schedule(optimizer.iterations))
        if fit_model is not model:
            model.set_weights(fit_model.get_weights())

        m = val_set.score(predict, cfg.batch).result()
        others = {name: v.score(predict, cfg.batch).result() for name, v in other_val.items()}
        last_val = m["miou7"]
        epoch_seconds = time.time() - t_epoch
        row = {"epoch": epoch + 1, "steps": len(losses), "loss": float(np.mean(losses)), "lr": lr_now,
               "val_miou7": m["miou7"], "val_miou8": m["miou8"],
               "val_pixel_accuracy": m["pixel_accuracy"],
               **{f"val_iou_{c}": m["iou"][c] for c in CATEGORY_NAMES[1:]},
               **{k: v for name, r in others.items() for k, v in _other_val_columns(name, r).items()},
               "epoch_seconds": epoch_seconds, "wall_seconds": wall_before + time.time() - t_start}
        history.append(row)
        improved = m["miou7"] > best
        if improved:
            best, bad_epochs = m["miou7"], 0
            atomic_save_keras(model, run_dir / "best.keras")
        else:
            bad_epochs += 1
        _log(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}  val mIoU(7) {m['miou7']:.4f}"
             f"{' (best)' if improved else ''}  " +
             " ".join(f"{c[:5]} {m['iou'][c]:.3f}" for c in CATEGORY_NAMES[1:]) +
             "".join(f"  [{name} mIoU(7) {r['miou7']:.4f}]" for name, r in others.items()) +
             f"  lr {lr_now:.2e}  {epoch_seconds:.0f} s")
        _tb_scalars(writer, row, epoch + 1)
        tracker.log_epoch(row, epoch + 1)

        _save_last(run_dir, ckpt, {"epoch": epoch + 1, "best_miou7": best, "bad_epochs": bad_epochs,
                                   "history": history, "rng": _rng_state(),
                                   "wall_seconds": row["wall_seconds"]})
        write_history(run_dir / "history.csv", history)

        if cfg.patience and bad_epochs >= cfg.patience:
            stopped = f"early stopping: no val mIoU(7) gain in {cfg.patience} epochs"
        if stopped:
            _log(stopped)
            break

    summary = finish_run(run_dir, cfg, size, val_samples, history, stopped,
                         others={m["name"]: g for m, g in zip(mix[1:], val_groups[1:])})
    tracker.finish(run_dir)
    return summary


def _save_last(run_dir: Path, ckpt, state: dict):
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


def finish_run(run_dir: Path, cfg: TrainConfig, size, val_samples, history, stopped,
               others: dict | None = None) -> dict:
    """Score best.keras on the whole val split (with instances, model size) -> eval.json;
    with mixed datasets, each other dataset's val split too (under ``other_val``)."""
    from .evaluate import keras_predictor, score
    import tf_keras as keras

    best_path = run_dir / "best.keras"
    if not best_path.exists():
        raise UserError(f"{run_dir}: no best.keras was written")
    model = keras.models.load_model(best_path, compile=False)
    predict = keras_predictor(model, cfg.batch)
    metrics, _ = score(predict, val_samples, size)
    result = metrics.result()
    other_val = {}
    for name, samples in (others or {}).items():
        r = score(predict, samples, size)[0].result()
        other_val[name] = {"split": cfg.val_split, "frames": len(samples),
                           "metrics": {k: v for k, v in r.items() if k != "confusion_matrix"}}
    best_row = max(history, key=lambda r: r["val_miou7"]) if history else {}
    summary = {"model": str(best_path), "split": cfg.val_split, "data": cfg.data_roots[0], "resolution": f"{size[0]}x{size[1]} (model size)",
               "best_epoch": best_row.get("epoch"), "epochs_run": len(history),
               "stopped": stopped, "wall_seconds": history[-1]["wall_seconds"] if history else 0.0,
               "metrics": {k: v for k, v in result.items() if k != "confusion_matrix"},
               "confusion_matrix": result["confusion_matrix"]}
    if other_val:
        summary["other_val"] = other_val
    atomic_write_json(run_dir / "eval.json", summary)
    _log(f"best epoch {summary['best_epoch']}: val mIoU(7) {result['miou7']:.4f}  " +
         " ".join(f"{c} {result['iou'][c]:.3f}" for c in CATEGORY_NAMES[1:]))
    return summary

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

``train_model`` is the sequence of the run's steps, each a function of its own so that
each can be checked alone: ``resolve_run`` (a new run, or what a resume continues from),
``check_options``, ``load_data``, ``plan_steps``, ``class_weights``, ``build_net`` (model
and optimizer), ``write_run_config``, then the epoch loop of ``epochs.py``, which trains,
validates and checkpoints through a ``Trainee`` (``KerasTrainee`` here).

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

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edge_seg.errors import UserError
from edge_seg.io.publish import atomic_write_json
from edge_seg.labels import CATEGORY_NAMES

from .epochs import EpochLoop, Progress, find_last, log, set_rng_state

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
    decoder_widths: list | None = None    # unet-mobilenetv2 decoder channels at strides 16/8/4/2
    teacher: str | None = None            # distillation: a frozen .keras teacher (train/distill.py)
    teacher_flip: bool = False            # the teacher's probabilities averaged with its mirror image's
    distill_weight: float = 0.5           # A in (1 - A) * hard loss + A * T^2 * KL
    temperature: float = 2.0              # T of the soft targets
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
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless this is set; a folder of runs beside the
            # run folders is what --mlflow promises, with no database to set up
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
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


# ------------------------------------------------------------------ the steps of a run

@dataclass
class RunStart:
    """What a run starts from: its configuration and, when it resumes, the saved
    config.json, the newest complete checkpoint and the progress recorded there."""
    run_dir: Path                  # as given: a resumed run may have moved since it began
    cfg: TrainConfig
    saved: dict | None = None      # the run's config.json (resumes only)
    last: Path | None = None       # the checkpoint folder it continues from (resumes only)
    progress: Progress = field(default_factory=Progress)
    rng: dict | None = None

    @property
    def resumed(self) -> bool:
        return self.last is not None


def resolve_run(cfg: TrainConfig, resume: bool = False, overrides: dict | None = None) -> RunStart:
    """The run to train: a new one (its folder must not hold a run yet), or with ``resume``
    the one in ``cfg.run_dir``, configured by its config.json except ``overrides``
    (``RESUME_OVERRIDABLE`` options given explicitly), continuing after its last epoch."""
    run_dir = Path(cfg.run_dir)
    last = find_last(run_dir) if run_dir.exists() else None
    if not resume:
        if last is not None:
            raise UserError(f"{run_dir} already holds a run (last epoch in {last.name}/); "
                            "continue it with --resume or choose another --run-dir")
        return RunStart(run_dir, cfg)
    if last is None:
        raise UserError(f"{run_dir}: nothing to resume (no last/ checkpoint); start without --resume")
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir}/config.json: cannot be read to resume the run "
                        f"({type(e).__name__}: {e})") from None
    cfg = TrainConfig.from_dict({**saved, **(overrides or {})})
    resolved = saved.get("data_resolved")
    if resolved and not all(Path(p).exists() for p in cfg.data_roots):
        cfg.data = resolved  # resumed from another working directory
    progress, rng = Progress.read(last)
    log(f"resuming {run_dir} after epoch {progress.epoch} (best val mIoU(7) {progress.best_miou7:.4f})")
    if progress.epoch >= cfg.epochs:
        log("the run already finished all its epochs")
    return RunStart(run_dir, cfg, saved, last, progress, rng)


def check_options(cfg: TrainConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """Fail on options that cannot work before any data is read; the model's input size
    and the training crop (the input size without --crop). Fills in the default alpha."""
    from .distill import check_distill
    from .losses import LOSSES
    from .models import check_arch_alpha, check_input_size

    if cfg.mlflow:
        _require_mlflow()
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
    check_distill(cfg)
    return size, crop


@dataclass
class RunData:
    """The run's frames: the mix record per dataset, training and validation frames per
    dataset (the first dataset's val split selects checkpoints)."""
    mix: list[dict]
    train_groups: list[list]
    val_groups: list[list]

    @property
    def train_samples(self) -> list:
        return [s for g in self.train_groups for s in g]

    @property
    def val_samples(self) -> list:
        return self.val_groups[0]

    @property
    def other_val(self) -> dict:
        return {m["name"]: g for m, g in zip(self.mix[1:], self.val_groups[1:])}


def load_data(cfg: TrainConfig) -> RunData:
    from .datasets import load_split

    mix = data_mix(cfg)
    train_groups = [m.pop("samples") for m in mix]
    val_groups = [load_split(root, cfg.format, cfg.val_split) for root in cfg.data_roots]
    if cfg.max_val_samples:
        val_groups = [g[:cfg.max_val_samples] for g in val_groups]
    return RunData(mix, train_groups, val_groups)


@dataclass
class StepPlan:
    replicas: int
    steps: int          # per epoch
    total_steps: int
    warmup: int         # steps of learning-rate warm-up


def plan_steps(cfg: TrainConfig, replicas: int, train_frames: int) -> StepPlan:
    if cfg.batch % replicas:
        raise UserError(f"--batch {cfg.batch} must be a multiple of the {replicas} replicas")
    steps = cfg.steps_per_epoch or max(1, train_frames // cfg.batch)
    return StepPlan(replicas, steps, steps * cfg.epochs, int(round(cfg.warmup_epochs * steps)))


def class_weights(start: RunStart, train_samples: list) -> list | None:
    """The loss's class weights: computed once and stored in config.json, so that a resume
    with the same class-weight options never recomputes them."""
    cfg, saved = start.cfg, start.saved or {}
    if cfg.class_weights == "none":
        return None
    same = start.resumed and all(saved.get(k) == getattr(cfg, k) for k in ("class_weights", "max_class_weight"))
    if same and saved.get("class_weight_values") is not None:
        return saved["class_weight_values"]
    from .datasets import read_mask
    from .losses import median_frequency_weights

    log(f"computing {cfg.class_weights} class weights over {len(train_samples)} training masks")
    return median_frequency_weights((read_mask(s) for s in train_samples), cfg.max_class_weight,
                                    power=0.5 if cfg.class_weights.startswith("sqrt") else 1.0).tolist()


@dataclass
class Net:
    model: object       # at the input size: validated and saved
    fit_model: object   # the one trained: the model itself, or its twin at the crop size
    optimizer: object
    schedule: object
    ckpt: object        # model + optimizer, written into last/


def make_optimizer(cfg: TrainConfig, plan: StepPlan, variables):
    """(AdamW, its warm-up + cosine schedule), built for ``variables``; no weight decay on
    BatchNorm or biases."""
    import tf_keras as keras

    schedule = warmup_cosine(cfg.lr, plan.total_steps, plan.warmup, cfg.min_lr_ratio)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bn", "BN", "bias", "beta", "gamma"])
    optimizer.build(variables)
    return optimizer, schedule


def build_net(start: RunStart, size, crop, strategy, plan: StepPlan) -> Net:
    """Model and optimizer, seeded per (seed, start epoch); warm-started by --init-from, or
    restored from the checkpoint a resume continues from."""
    import tensorflow as tf
    import tf_keras as keras

    from .models import build_model

    cfg = start.cfg
    keras.utils.set_random_seed(cfg.seed + 7919 * start.progress.epoch)
    with strategy.scope():
        model = build_model(cfg.arch, size, cfg.alpha, cfg.backbone_weights, bn_momentum=cfg.bn_momentum,
                            decoder_widths=cfg.decoder_widths)
        # crops train a twin built at the crop size (same weights, no size-dependent ones);
        # the model at --input-size gets its weights before every validation and save
        fit_model = model if crop == size else build_model(cfg.arch, crop, cfg.alpha, cfg.backbone_weights,
                                                            bn_momentum=cfg.bn_momentum,
                                                            decoder_widths=cfg.decoder_widths)
        optimizer, schedule = make_optimizer(cfg, plan, fit_model.trainable_variables)
    ckpt = tf.train.Checkpoint(model=fit_model, optimizer=optimizer)
    if start.resumed:
        ckpt.read(str(start.last / "ckpt")).assert_existing_objects_matched().expect_partial()
        set_rng_state(start.rng)
    elif cfg.init_from:
        log(warm_start(fit_model, cfg.init_from))
    return Net(model, fit_model, optimizer, schedule, ckpt)


def write_run_config(start: RunStart, data: RunData, plan: StepPlan, net: Net, weights,
                     overrides: dict | None) -> dict:
    """config.json: every option plus what the run derived from them (the data mix, class
    weights, steps, model size, versions) and the command; a resume keeps the first
    command and appends its own to ``resumed``."""
    import tensorflow as tf

    from .distill import teacher_record
    from .models import count_macs

    cfg = start.cfg
    config = asdict(cfg)
    resolved = [str(Path(p).resolve()) for p in cfg.data_roots]
    config.update(data_resolved=resolved if isinstance(cfg.data, (list, tuple)) else resolved[0],
                  data_mix=data.mix, class_weight_values=weights, steps_per_epoch_effective=plan.steps,
                  total_steps=plan.total_steps, warmup_steps=plan.warmup, replicas=plan.replicas,
                  train_samples=len(data.train_samples), val_samples=len(data.val_samples),
                  params=net.model.count_params(), macs=count_macs(net.model), tensorflow=tf.__version__,
                  command=" ".join(sys.argv))
    config.update(teacher_record(cfg, start.saved))
    if start.resumed:
        config["command"] = start.saved.get("command")
        config["resumed"] = start.saved.get("resumed", []) + [
            {"after_epoch": start.progress.epoch, "command": " ".join(sys.argv), "overrides": overrides or {}}]
    atomic_write_json(start.run_dir / "config.json", config)
    return config


def describe_run(cfg: TrainConfig, data: RunData, plan: StepPlan, config: dict, size):
    mix = data.mix
    if len(mix) > 1:
        log("mixing " + ", ".join(f"{m['name']} ({m['train_frames']} {m['train_split']} frames, "
                                  f"{m['frame_size'][0]}x{m['frame_size'][1]}, {100 * m['share']:.0f}%)"
                                  for m in mix))
    log(f"{cfg.arch} alpha {cfg.alpha:g} at {size[0]}x{size[1]}: {config['params'] / 1e6:.2f} M params, "
        f"{config['macs'] / 1e9:.3f} GMAC; {len(data.train_samples)} train / {len(data.val_samples)} val "
        f"frames, {plan.steps} steps/epoch x {cfg.epochs} epochs, {plan.replicas} replica(s)")
    if config["class_weight_values"] is not None:
        log("class weights: " + ", ".join(f"{n} {w:.2f}"
                                          for n, w in zip(CATEGORY_NAMES, config["class_weight_values"])))


class KerasTrainee:
    """The epoch loop's ``Trainee`` for a tf_keras model under a tf.distribute strategy."""

    def __init__(self, cfg: TrainConfig, net: Net, strategy, data: RunData, size, crop, weights,
                 start_epoch: int):
        from .evaluate import CachedValSet, keras_predictor
        from .losses import make_loss
        from .pipeline import Augment, make_dataset

        self.net, self.ckpt, self.batch = net, net.ckpt, cfg.batch
        # a fresh deterministic stream per (seed, start epoch)
        ds = make_dataset(data.train_groups, size=size, batch=cfg.batch, training=True,
                          seed=cfg.seed + 7919 * start_epoch, augment=Augment() if cfg.augment else None,
                          crop=None if crop == size else crop, mix_weights=[m["weight"] for m in data.mix])
        self._batches = iter(strategy.experimental_distribute_dataset(ds))
        self._val = CachedValSet(data.val_samples, size)
        self._other_val = {name: CachedValSet(g, size) for name, g in data.other_val.items()}
        self._predict = keras_predictor(net.model, batch=cfg.batch)
        loss, teacher = make_loss(cfg.loss, weights, cfg.dice_weight), None
        if cfg.teacher:
            from .distill import Teacher, make_distill_loss
            with strategy.scope():
                teacher = Teacher(cfg.teacher, size, crop, cfg.temperature, cfg.teacher_flip)
            loss = make_distill_loss(loss, cfg.distill_weight, cfg.temperature)
        self._train_step = _train_step(strategy, net, loss, teacher)

    def step(self) -> float:
        return float(self._train_step(next(self._batches)))

    def lr(self) -> float:
        return float(self.net.schedule(self.net.optimizer.iterations))

    def validate(self) -> tuple[dict, dict]:
        if self.net.fit_model is not self.net.model:
            self.net.model.set_weights(self.net.fit_model.get_weights())
        m = self._val.score(self._predict, self.batch).result()
        return m, {name: v.score(self._predict, self.batch).result() for name, v in self._other_val.items()}

    def save_best(self, path: Path):
        atomic_save_keras(self.net.model, path)


def _train_step(strategy, net: Net, loss_fn, teacher=None):
    """One optimizer step over a distributed batch; the loss averaged over the replicas.
    With a ``teacher``, ``loss_fn`` also takes its soft targets for the batch."""
    import tensorflow as tf

    model, optimizer, replicas = net.fit_model, net.optimizer, strategy.num_replicas_in_sync

    @tf.function
    def train_step(batch):
        def step_fn(x, y):
            soft = () if teacher is None else (teacher(x, x.shape[1:3]),)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True), *soft)
                scaled = loss / replicas
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        per_replica = strategy.run(step_fn, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    return train_step


def train_model(cfg: TrainConfig, resume: bool = False, overrides: dict | None = None,
                progress: bool = True) -> dict:
    """Train per ``cfg``; returns the final summary (also written to eval.json)."""
    import tensorflow as tf

    start = resolve_run(cfg, resume, overrides)
    cfg, run_dir = start.cfg, start.run_dir
    size, crop = check_options(cfg)
    data = load_data(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    strategy = make_strategy(cfg.distribute)
    plan = plan_steps(cfg, strategy.num_replicas_in_sync, len(data.train_samples))
    weights = class_weights(start, data.train_samples)
    net = build_net(start, size, crop, strategy, plan)
    describe_run(cfg, data, plan, write_run_config(start, data, plan, net, weights, overrides), size)
    trainee = KerasTrainee(cfg, net, strategy, data, size, crop, weights, start.progress.epoch)

    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    tracker = _MLflow(cfg, run_dir)
    loggers = (lambda row, epoch: _tb_scalars(writer, row, epoch), tracker.log_epoch)
    stopped = EpochLoop(trainee, cfg, run_dir, plan.steps, start.progress, loggers=loggers,
                        show_bar=progress).run()
    summary = finish_run(run_dir, cfg, size, data.val_samples, start.progress.history, stopped,
                         others=data.other_val)
    tracker.finish(run_dir)
    return summary


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
    log(f"best epoch {summary['best_epoch']}: val mIoU(7) {result['miou7']:.4f}  " +
         " ".join(f"{c} {result['iou'][c]:.3f}" for c in CATEGORY_NAMES[1:]))
    return summary

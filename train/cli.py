"""`edge-seg train`, `edge-seg eval`, `edge-seg sweep` (and `edge-seg data`, from data_cli).

TensorFlow is imported inside the command functions only, so `edge-seg --help` stays fast
and works without the training extra.
"""
from __future__ import annotations

from pathlib import Path

import click

from edge_seg.backends.metadata import trust_sidecar_option

from .losses import LOSSES

ARCH_CHOICES = ["unet-mobilenetv2", "lraspp-mobilenetv2", "deeplabv3plus-mobilenetv2", "unet-small"]
FORMAT_CHOICE = click.Choice(["auto", "cityscapes", "camvid", "folder"])


def _size(ctx, param, value):
    if value is None:
        return None
    from edge_seg.preprocess import parse_size
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _widths(ctx, param, value):
    if value is None:
        return None
    from edge_seg.errors import UserError

    from .models import decoder_table
    try:
        return list(decoder_table(value.split(",")).values())
    except UserError as e:
        raise click.BadParameter(str(e)) from None


def train_options(f):
    """The options of `train`, shared with `sweep` grids (names = TrainConfig fields)."""
    opts = [
        click.option("--data", "data_root", multiple=True, required=True, metavar="ROOT[:WEIGHT]",
                     help="dataset root (Cityscapes, CamVid SegNet layout, or folder); repeat to mix "
                          "datasets, ROOT:WEIGHT sets one's sampling weight, 1 for those without (checkpoints are selected "
                          "on the first one's val split)"),
        click.option("--data-weights", default=None, metavar="W1,W2,...",
                     help="sampling weight per --data, in order [default: each dataset's training "
                          "frame count, i.e. plain concatenation]"),
        click.option("--train-split", default="train", show_default=True,
                     help="split to train on (drive-train: the frames outside the drive-disjoint val)"),
        click.option("--val-split", default="val", show_default=True,
                     help="split to score every epoch and select checkpoints on (drive-val: drives "
                          "that no training frame comes from; see docs/datasets.md)"),
        click.option("--format", "fmt", type=FORMAT_CHOICE, default="auto", show_default=True),
        click.option("--arch", type=click.Choice(ARCH_CHOICES), default="unet-mobilenetv2", show_default=True),
        click.option("--alpha", type=float, default=None,
                     help="width multiplier (MobileNetV2: 0.35 0.5 0.75 1.0 1.3 1.4; each one's cost "
                          "in docs/training.md) [default: 1.0 for unet-mobilenetv2]"),
        click.option("--input-size", default="512x256", show_default=True, callback=_size,
                     help="model input WIDTHxHEIGHT, multiples of 32"),
        click.option("--crop", default=None, metavar="WxH", callback=_size,
                     help="train on random WxH windows of the --input-size frames (objects keep the "
                          "model's scale; smaller crops = cheaper steps); the model is built and "
                          "scored at --input-size [default: whole frames]"),
        click.option("--backbone-weights", default="none", show_default=True,
                     help="none (train from scratch) | imagenet (MobileNetV2 ImageNet weights from the Keras "
                          "cache, never downloaded) | PATH to MobileNetV2 no-top .h5 weights"),
        click.option("--bn-momentum", type=float, default=0.9, show_default=True),
        click.option("--epochs", type=int, default=40, show_default=True),
        click.option("--batch", type=int, default=8, show_default=True),
        click.option("--lr", type=float, default=2e-3, show_default=True, help="peak learning rate (AdamW)"),
        click.option("--weight-decay", type=float, default=1e-4, show_default=True),
        click.option("--warmup-epochs", type=float, default=1.0, show_default=True),
        click.option("--loss", type=click.Choice(LOSSES), default="ce", show_default=True,
                     help="ce+lovasz: cross-entropy + Lovász-softmax (an IoU surrogate) for fine-tuning"),
        click.option("--dice-weight", type=float, default=1.0, show_default=True,
                     help="weight of the Dice (ce+dice) or Lovász (ce+lovasz) term"),
        click.option("--class-weights", type=click.Choice(["none", "median-freq", "sqrt-median-freq"]),
                     default="none",
                     show_default=True),
        click.option("--max-class-weight", type=float, default=None, help="clip class weights"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--steps-per-epoch", type=int, default=None,
                     help="default: train frames // batch"),
        click.option("--time-budget", type=float, default=None,
                     help="stop training after this many seconds (then score and finish)"),
        click.option("--patience", type=int, default=20, show_default=True,
                     help="early stopping: epochs without val mIoU(7) gain (0 = off)"),
        click.option("--max-val-samples", type=int, default=None,
                     help="score only the first N val frames each epoch (eval.json uses all)"),
        click.option("--no-augment", is_flag=True, help="no flips/scale-crop/colour jitter"),
        click.option("--init-from", type=click.Path(dir_okay=False), default=None,
                     help="warm start: copy weights of same-named, same-shaped layers from this .keras"),
        click.option("--decoder-widths", default=None, metavar="C16,C8,C4[,C2]", callback=_widths,
                     help="unet-mobilenetv2 decoder channels at strides 16/8/4/2 [default: 128,64,48,32]; "
                          "three widths end the decoder at stride 4 (logits upsampled x4: the faster graph); "
                          "0 at stride 2 refines those logits there with one 1x1 conv over the stride-2 skip"),
        click.option("--teacher", type=click.Path(dir_okay=False), default=None,
                     help="distil from this frozen .keras model: its soft targets on the same augmented "
                          "batch join the hard loss (docs/training.md#distillation)"),
        click.option("--teacher-flip", is_flag=True,
                     help="average the teacher's probabilities with those of the mirrored frame"),
        click.option("--distill-weight", type=float, default=0.5, show_default=True,
                     help="A in (1-A) * hard loss + A * T^2 * KL(teacher || student)"),
        click.option("--temperature", type=float, default=2.0, show_default=True,
                     help="T: softmax temperature of teacher and student in the distillation term"),
        click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]), default="none",
                     show_default=True),
        click.option("--mlflow", is_flag=True, help="log to a local MLflow file store (needs mlflow)"),
        click.option("--mlflow-uri", default=None, help="MLflow tracking URI [default: RUN_DIR/../mlruns]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def parse_data(values, weights_text=None) -> tuple:
    """(roots, weights or None) from --data ROOT[:WEIGHT] (repeatable) and --data-weights."""
    roots, weights = [], []
    for value in values:
        root, _, tail = str(value).rpartition(":")
        try:
            weight = float(tail) if root else None
        except ValueError:
            weight = None
        if weight is None or Path(value).exists():
            root, weight = str(value), None
        roots.append(root)
        weights.append(weight)
    if weights_text is not None:
        if any(w is not None for w in weights):
            raise click.BadParameter("give weights either as ROOT:WEIGHT or with --data-weights, not both",
                                     param_hint="--data-weights")
        try:
            weights = [float(w) for w in str(weights_text).split(",")]
        except ValueError:
            raise click.BadParameter(f"{weights_text!r}: expected numbers separated by commas",
                                     param_hint="--data-weights") from None
        if len(weights) != len(roots):
            raise click.BadParameter(f"{len(weights)} weight(s) for {len(roots)} --data",
                                     param_hint="--data-weights")
    elif any(w is not None for w in weights):
        weights = [1.0 if w is None else w for w in weights]  # ROOT alone beside ROOT:WEIGHT weighs 1
    else:
        weights = None
    return roots, weights


def config_from_options(**o):
    from .trainer import TrainConfig
    roots, weights = parse_data(o["data_root"], o.get("data_weights"))
    return TrainConfig(
        data=roots[0] if len(roots) == 1 else roots, data_weights=weights,
        train_split=o.get("train_split", "train"), val_split=o.get("val_split", "val"), format=o["fmt"], arch=o["arch"], alpha=o["alpha"],
        input_size=tuple(o["input_size"]), crop=tuple(o["crop"]) if o["crop"] else None,
        backbone_weights=o["backbone_weights"],
        bn_momentum=o["bn_momentum"], epochs=o["epochs"], batch=o["batch"], lr=o["lr"],
        weight_decay=o["weight_decay"], warmup_epochs=o["warmup_epochs"], loss=o["loss"],
        dice_weight=o["dice_weight"], class_weights=o["class_weights"],
        max_class_weight=o["max_class_weight"], seed=o["seed"], run_dir=str(o["run_dir"]),
        steps_per_epoch=o["steps_per_epoch"], time_budget=o["time_budget"],
        patience=o["patience"] or None, max_val_samples=o["max_val_samples"],
        augment=not o["no_augment"], distribute=o["distribute"], mlflow=o["mlflow"],
        mlflow_uri=o["mlflow_uri"], init_from=o["init_from"], decoder_widths=o.get("decoder_widths"),
        teacher=o.get("teacher"), teacher_flip=o.get("teacher_flip", False),
        distill_weight=o.get("distill_weight", 0.5), temperature=o.get("temperature", 2.0))


@click.command()
@train_options
@click.option("--run-dir", type=click.Path(path_type=Path), default="runs/run", show_default=True)
@click.option("--resume", is_flag=True,
              help="continue the run in --run-dir from its last finished epoch (its config.json "
                   "wins, except --epochs --time-budget --patience --loss --dice-weight "
                   "--class-weights --max-class-weight given explicitly)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.pass_context
def train(ctx, resume, quiet, **options):
    """Train a segmentation model; the run folder holds config.json, best.keras, last/,
    history.csv, tb/ and eval.json."""
    from click.core import ParameterSource

    from edge_seg.io.publish import check_output

    cfg = config_from_options(**options)
    # before any epoch: a run folder that cannot be written fails now, not after hours
    check_output(options["run_dir"], "--run-dir", inputs=cfg.data_roots,
                 folder=True, need=64 << 20)
    from .trainer import train_model
    overrides = {}
    if resume:
        from .trainer import RESUME_OVERRIDABLE
        for name in RESUME_OVERRIDABLE:
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                overrides[name] = getattr(cfg, name)
    train_model(cfg, resume=resume, overrides=overrides, progress=not quiet)


@click.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data_root", type=click.Path(path_type=Path), required=True)
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="auto", show_default=True)
@click.option("--split", default="val", show_default=True,
              help="train, val, test, or drive-train / drive-val: validation drives that share no "
                   "recording with training (docs/datasets.md)")
@click.option("--input-size", default=None, callback=_size,
              help="model input WIDTHxHEIGHT [default: the model's own]")
@click.option("--at-label-resolution", is_flag=True,
              help="upsample predictions (nearest) to the label size before scoring")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="write metrics.json, confusion matrix, IoU bars and a sample grid here")
@click.option("--limit", type=int, default=0, help="score only the first N frames (0 = all)")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print metrics as JSON instead of the table")
@click.option("--overwrite", is_flag=True, help="replace the contents of an existing --report folder")
@trust_sidecar_option
def evaluate(model, data_root, fmt, split, input_size, at_label_resolution, report_dir, limit, batch,
             as_json, overwrite, trust_sidecar):
    """Score a .keras, .tflite or .onnx model on a dataset split (same preprocessing and metrics)."""
    from .eval_cli import run_eval
    run_eval(model, data_root, fmt, split, input_size, at_label_resolution, report_dir, limit, batch,
             as_json, overwrite, trust_sidecar=trust_sidecar)


@click.command()
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="YAML: 'base' (options every run shares), 'grid' (option lists, every combination "
                   "is run) and/or 'runs' (a list of option sets); names as 'edge-seg train' options")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="runs/sweep", show_default=True)
@click.option("--mlflow", is_flag=True, help="log every run to MLflow")
@click.option("--dry-run", is_flag=True, help="list the runs, train nothing")
@click.option("--no-latency", is_flag=True, help="skip the TFLite fp32 latency measurement")
def sweep(grid_path, out_dir, mlflow, dry_run, no_latency):
    """Train over a grid of `train` options with a per-run budget; print a leaderboard."""
    from .sweep import run_sweep
    run_sweep(grid_path, out_dir, mlflow=mlflow, dry_run=dry_run, latency=not no_latency)


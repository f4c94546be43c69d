"""`edge-seg adapt`: fine-tune a model on labelled frames of the user's own street without
forgetting the streets it was trained on.

A model trained on two cities meets a third on the user's camera. A plain fine-tune on a few
of its frames learns the new street and forgets the others, so the new frames are mixed with
the parent's own training data (``drive-train`` splits), each training frame drawn from the
new frames with probability ``--new-weight``, for a few hundred steps at a low learning rate
from the parent's weights, BatchNorm statistics kept as the parent learnt them (a batch of
street frames of one camera would otherwise pull them to that camera alone). The training is
the one of ``edge-seg train`` (trainer.py's steps, pipeline.py's mixing), on the parent model
itself, so any fully convolutional .keras adapts, whatever its architecture.

The last ``--holdout`` of the labelled frames in time order (collection stems sort in capture
order) never trains: they are the run's own test of the new street, frames later than any
that trained, as the street will be met from now on. The run folder is written under a
temporary name and published complete:

    RUN_DIR/README.md                the model card: what it adapted to, the recipe, scores
    RUN_DIR/adapt.json               the same as data (every score, hashes, options)
    RUN_DIR/<parent>-adapted.keras   the adapted float model
    RUN_DIR/<parent>-adapted-int8.tflite (+ .json)  its int8 variant, as `edge-seg convert
                                     --int8` makes it, calibrated on the committed manifest plus
                                     the new training frames; metadata names the parent
    RUN_DIR/<parent>-adapted-fp16.tflite (+ .json)  the float16 variant (the GPU delegate's,
                                     and the reference `edge-seg tune --models RUN_DIR` needs)
    RUN_DIR/holdout/                 the held-out frames as a folder dataset (links)
    RUN_DIR/train/                   the training run: config.json, history.csv
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.io.publish import atomic_write_bytes, atomic_write_json
from edge_seg.labels import CATEGORY_NAMES

DEFAULT_BASE = ("../shared/datasets/camvid", "../shared/datasets/idd-lite")


def bundled_keras() -> Path:
    """The bundled float model (in a checkout; the runtime wheel ships its .tflite only)."""
    import edge_seg.models
    return Path(edge_seg.models.__file__).parent / "unet-mobilenetv2-camvid-idd.keras"


def committed_manifest() -> Path:
    import edge_seg.calibration
    return Path(edge_seg.calibration.__file__).parent / "camvid-drive-train.json"


@dataclass
class AdaptOptions:
    labelled: Path
    out: Path
    model: Path
    base_data: tuple = DEFAULT_BASE
    new_weight: float = 0.3
    holdout: float = 0.2
    steps: int = 200
    lr: float = 1e-4
    warmup_steps: int = 20
    batch: int = 8
    crop: tuple | None = None
    freeze_bn: bool = True
    freeze_blocks: int = 0
    base_split: str = "drive-train"
    eval_split: str = "val"
    calibration: Path | None = None
    max_drop: float | None = 1.0
    seed: int = 0
    progress: bool = True
    command: str = field(default_factory=lambda: " ".join(sys.argv))


# ------------------------------------------------------------------ the new frames

def labelled_frames(root: Path) -> list:
    """The labelled frames of a folder written by `edge-seg data import` (a collection's
    layout, every frame's record marked labelled), in capture order. A collection's own
    masks are the model's pre-labels, its guesses, never trained on."""
    from edge_seg.mapping import find_mapping, read_mapping

    from .datasets import Sample
    from .labeling import read_collection

    frames = read_collection(root)
    kept = [f for f in frames if f.meta.get("labelled") is True]
    if not kept:
        raise UserError(f"{root}: no labelled frames (its {len(frames)} masks are pre-labels, the "
                        "model's guesses); label them and bring them back with 'edge-seg data import'")
    mapping = find_mapping(Path(root))
    if mapping is None:
        raise UserError(f"{root}: no mapping.json (mask value -> category) beside images/ and masks/")
    pairs = read_mapping(mapping)
    return [Sample(f.image, f.mask, f.stem, "folder", mapping=pairs) for f in kept]


def split_holdout(samples: list, fraction: float) -> tuple[list, list]:
    """(training frames, held-out frames): the last ``fraction`` in time order held out."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--holdout {fraction:g}: a fraction from 0 (hold nothing out) to below 1")
    held = math.ceil(round(fraction * len(samples), 6)) if fraction > 0 else 0  # 0.3 * 10 is 3, not 4
    if held and len(samples) - held < 1:
        raise UserError(f"--holdout {fraction:g}: {len(samples)} labelled frame(s) are too few to "
                        f"hold {held} out and train on the rest; label more or pass --holdout 0")
    return samples[:len(samples) - held], samples[len(samples) - held:]


def link_folder(samples: list, root: Path, labelled: Path, split: str = "test") -> Path:
    """``samples`` as a folder dataset of links under ``split`` (with the labelled folder's
    mapping), so that the dataset readers and `edge-seg compare` take them as they are."""
    from edge_seg.mapping import find_mapping

    for sample in samples:
        for kind, path in (("images", sample.image), ("masks", sample.mask)):
            folder = root / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(path).resolve(), folder / Path(path).name)
    mapping = find_mapping(labelled)
    shutil.copyfile(mapping, root / mapping.name)
    return root


# ------------------------------------------------------------------ training

def block_of(layer_name: str) -> int | None:
    """The MobileNetV2 block a layer belongs to (0: the stem and the first expanded conv)."""
    if layer_name.startswith(("Conv1", "bn_Conv1", "expanded_conv")):
        return 0
    if layer_name.startswith("block_"):
        number = layer_name.split("_")[1]
        return int(number) if number.isdigit() else None
    return None


def freeze(model, bn: bool, blocks: int) -> list[str]:
    """Freeze BatchNorm layers (in tf_keras a frozen BatchNorm also runs in inference mode:
    the parent's statistics) and the encoder's first ``blocks`` blocks; the names frozen."""
    import tf_keras as keras

    frozen = []
    for layer in model.layers:
        block = block_of(layer.name)
        if (bn and isinstance(layer, keras.layers.BatchNormalization)) or \
                (block is not None and block < blocks):
            if layer.weights:
                frozen.append(layer.name)
            layer.trainable = False
    return frozen


def train_config(opts: AdaptOptions, run_dir: Path, size, crop):
    from .trainer import TrainConfig

    share = (1.0 - opts.new_weight) / len(opts.base_data)
    return TrainConfig(
        data=[str(opts.labelled), *map(str, opts.base_data)], data_weights=[opts.new_weight] + [share] * len(opts.base_data),
        train_split=opts.base_split, val_split="holdout", format="auto", arch="parent", alpha=None,
        input_size=tuple(size), crop=None if tuple(crop) == tuple(size) else tuple(crop), epochs=1, batch=opts.batch,
        lr=opts.lr, warmup_epochs=opts.warmup_steps / opts.steps, loss="ce+dice",
        class_weights="sqrt-median-freq", max_class_weight=5.0, seed=opts.seed, run_dir=str(run_dir),
        steps_per_epoch=opts.steps, patience=None, augment=True, init_from=str(opts.model))


def run_data(cfg, opts: AdaptOptions, new_train: list, val: list):
    """The trainer's RunData: the new frames as the first dataset, then the parent's data."""
    from dataclasses import replace

    from .trainer import RunData, data_mix

    base = data_mix(replace(cfg, data=list(cfg.data_roots[1:]), data_weights=cfg.data_weights[1:]))
    new = {"name": "new frames", "data": str(opts.labelled), "format": "folder",
           "train_split": f"first {len(new_train)} in time order", "val_split": cfg.val_split,
           "train_frames": len(new_train), "frame_size": None, "weight": opts.new_weight}
    mix = [new, *base]
    for m in mix:
        m["share"] = m["weight"]
    groups = [new_train] + [m.pop("samples") for m in base]
    return RunData(mix, groups, [val])


def train_adapted(opts: AdaptOptions, new_train: list, val: list, run_dir: Path, final: Path) -> dict:
    """Fine-tune the parent per ``opts`` into ``final`` (.keras); the training's record."""
    import tensorflow as tf
    import tf_keras as keras

    from edge_seg.converters.keras_model import load_keras_model, model_input_size
    from edge_seg.converters.sizes import rebuild_at_size

    from .epochs import EpochLoop
    from .models import check_input_size
    from .trainer import (KerasTrainee, Net, RunStart, atomic_save_keras, class_weights, make_optimizer,
                          make_strategy, plan_steps, write_run_config)

    keras.utils.set_random_seed(opts.seed)
    model = load_keras_model(opts.model)
    size = model_input_size(model)
    crop = check_input_size(opts.crop) if opts.crop else (min(size), min(size))
    if crop[0] > size[0] or crop[1] > size[1]:
        raise UserError(f"--crop {crop[0]}x{crop[1]} is larger than the model's input {size[0]}x{size[1]}")
    cfg = train_config(opts, run_dir, size, crop)
    data = run_data(cfg, opts, new_train, val)
    run_dir.mkdir(parents=True)
    strategy = make_strategy("none")
    plan = plan_steps(cfg, 1, len(data.train_samples))
    start = RunStart(run_dir, cfg)
    weights = class_weights(start, data.train_samples)
    fit_model = model if crop == size else rebuild_at_size(model, crop)
    frozen = freeze(fit_model, opts.freeze_bn, opts.freeze_blocks)
    optimizer, schedule = make_optimizer(cfg, plan, fit_model.trainable_variables)
    net = Net(model, fit_model, optimizer, schedule, tf.train.Checkpoint(model=fit_model, optimizer=optimizer))
    write_run_config(start, data, plan, net, weights, None)
    logs.status("adapt", f"adapting {opts.model.name}: {len(new_train)} new frames at "
                f"{100 * opts.new_weight:.0f}% of the batches, {opts.steps} steps of {opts.batch}, "
                f"lr {opts.lr:g}, {len(frozen)} layers frozen")
    trainee = KerasTrainee(cfg, net, strategy, data, size, crop, weights, 0)
    t0 = time.time()
    EpochLoop(trainee, cfg, run_dir, plan.steps, start.progress, show_bar=opts.progress).run()
    seconds = time.time() - t0
    atomic_save_keras(net.model, final)  # synced with the crop twin by the epoch's validation
    for name in ("last", "best.keras", "tb"):  # nothing resumes an adapt run
        path = run_dir / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return {"train_seconds": round(seconds, 1), "frozen_layers": len(frozen), "input_size": list(size),
            "crop": list(crop), "class_weights": weights}


# ------------------------------------------------------------------ int8 and provenance

def calibration_sets(opts: AdaptOptions, new_train: list, size):
    """(the manifest's frames, the same plus the new training frames): the adapted model's
    int8 ranges must cover the new street as well as the old ones; a parent converted here
    gets the manifest's alone, as it would have been converted before."""
    from edge_seg.converters.tflite_export import Calibration, resolve_calibration

    base = resolve_calibration(opts.calibration or committed_manifest(), size)
    described = dict(base.manifest, strategy=f"{base.manifest.get('strategy')} + {len(new_train)} new frames")
    return base, Calibration(base.samples + new_train, base.root, base.source, described, base.sha256)


def convert(model_path: Path, cal, log, variants=("int8",)) -> dict[str, Path]:
    """``model_path``'s variants beside it, made as `edge-seg convert --int8 --fp16` makes them."""
    from edge_seg import model_formats
    from edge_seg.backends.metadata import file_sha256
    from edge_seg.converters.keras_model import load_keras_model, model_input_size
    from edge_seg.converters.tflite_export import ExportJob, export_tflite

    model = load_keras_model(model_path)
    size = model_input_size(model)
    job = ExportJob(model_path, file_sha256(model_path), size, cal, model_formats.io_choices()[0], log=log)
    paths = {}
    for name in variants:
        fmt = model_formats.get(name)
        log(f"converting {model_path.name} -> {name}")
        paths[name] = model_path.with_name(fmt.file_name(model_path.stem))
        export_tflite(job, fmt, model, size, paths[name])
    return paths


def name_parent(model_path: Path, parent: dict) -> dict:
    """Add ``parent`` to a converted model's metadata, sidecar and embedded copy alike."""
    from edge_seg.backends.metadata import embed_sidecar, read_meta, sidecar_path

    meta = dict(read_meta(model_path), parent=parent)
    atomic_write_json(sidecar_path(model_path), meta)
    return embed_sidecar(model_path)


def parent_int8(opts: AdaptOptions, cal, work: Path, log) -> Path:
    """The parent's int8 variant beside it (what the user runs now), else converted here."""
    from edge_seg import model_formats

    sibling = opts.model.with_name(model_formats.get("int8").file_name(opts.model.stem))
    if sibling.is_file():
        return sibling
    (work / "parent").mkdir()
    copy = work / "parent" / opts.model.name
    shutil.copyfile(opts.model, copy)
    return convert(copy, cal, log)["int8"]


# ------------------------------------------------------------------ scores

@dataclass
class EvalSet:
    name: str
    root: Path
    split: str


def eval_sets(opts: AdaptOptions, holdout_root: Path | None) -> list[EvalSet]:
    sets = [EvalSet("held-out new frames", holdout_root, "test")] if holdout_root else []
    return sets + [EvalSet(f"{Path(r).resolve().name} {opts.eval_split}", Path(r), opts.eval_split)
                   for r in opts.base_data]


def compare_pair(float_path: Path, int8_path: Path, es: EvalSet) -> dict:
    """`edge-seg compare` of a float model and its int8 variant on one set."""
    from edge_seg.converters.compare import run_compare

    progress = logs.counter(f"scoring {float_path.name} on {es.name}", unit="frame")
    return run_compare(float_path, [int8_path], es.root, es.split, log=progress)


def scores_of(result: dict) -> dict:
    """{"float"|"int8": {"miou7", "iou": {category: IoU}}} of a compare result."""
    return {kind: {"miou7": row["miou7"], "iou": row["iou"]}
            for kind, row in zip(("float", "int8"), result["rows"])}


def parent_scores(float_path: Path, int8_path: Path, es: EvalSet, cached: bool) -> dict:
    """The parent pair's scores on ``es``; with ``cached``, kept in the user's cache (for the
    base data, which every adapt run of the same parent scores alike; the dataset's
    fingerprint, its files' names and sizes, is part of the key)."""
    from edge_seg.backends.metadata import model_sha256
    from edge_seg.io.publish import cache_dir
    from edge_seg.manifest import fingerprint

    from .datasets import load_split

    samples = load_split(es.root, "auto", es.split)
    key = "-".join([model_sha256(float_path)[:16], model_sha256(int8_path)[:16],
                    fingerprint(samples, es.root)[:16], es.split])
    path = cache_dir("adapt-scores", f"{key}.json")
    if cached and path.is_file():
        return json.loads(path.read_text())
    scores = scores_of(compare_pair(float_path, int8_path, es))
    if cached:
        atomic_write_json(path, scores)
    return scores


def score_sets(sets: list[EvalSet], models: dict, work: Path) -> tuple[list[dict], dict]:
    """Parent and adapted model, float and int8, on every set; and the adapted pair's full
    compare result on the first set (the accuracy gate's)."""
    rows, gate = [], None
    for es in sets:
        inside = es.root.is_relative_to(work)
        parent = parent_scores(models["parent"], models["parent_int8"], es, cached=not inside)
        adapted = compare_pair(models["adapted"], models["adapted_int8"], es)
        gate = gate or adapted
        where = es.root.relative_to(work) if inside else es.root
        rows.append({"set": es.name, "data": str(where), "split": es.split, "frames": adapted["frames"],
                     "parent": parent, "adapted": scores_of(adapted)})
    return rows, gate


def frames_sha256(samples: list) -> str:
    """sha256 over the bytes of every image and mask, in time order: the labels themselves,
    so a corrected mask changes it."""
    import hashlib

    from edge_seg.backends.metadata import file_sha256

    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.name} {file_sha256(s.image)} {file_sha256(s.mask)}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------ the model card

def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _change(before, after) -> str:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (before, after)):
        return "–"
    return f"{100 * (after - before):+.1f}"


def score_table(row: dict) -> list[str]:
    cats = CATEGORY_NAMES[1:]
    lines = ["| model | " + " | ".join(cats) + " | mIoU(7) |", "|---" * (len(cats) + 2) + "|"]
    for kind in ("float", "int8"):
        p, a = row["parent"][kind], row["adapted"][kind]
        lines.append(f"| parent, {kind} | " + " | ".join(_pct(p["iou"][c]) for c in cats) + f" | {_pct(p['miou7'])} |")
        lines.append(f"| adapted, {kind} | " + " | ".join(_pct(a["iou"][c]) for c in cats) + f" | **{_pct(a['miou7'])}** |")
        lines.append(f"| change, {kind} | " + " | ".join(_change(p["iou"][c], a["iou"][c]) for c in cats)
                     + f" | {_change(p['miou7'], a['miou7'])} |")
    return lines


def card_markdown(report: dict) -> str:
    r, new, rec = report, report["new_frames"], report["recipe"]
    lines = [f"# Model card: `{r['files']['adapted']['file']}`", "",
             f"`{r['parent']['model']}` (sha256 `{r['parent']['sha256'][:12]}`) adapted to {new['labelled']} "
             f"labelled frames of `{new['folder']}` on {r['date']}.", "", "## Files", "",
             "| file | sha256 (model) | bytes |", "|---|---|---|"]
    lines += [f"| `{f['file']}` | `{f['sha256'][:12]}` | {f['bytes']:,} |" for f in r["files"].values()]
    lines += ["", "## What it was adapted to", "",
              f"- folder `{new['folder']}`: {new['labelled']} labelled frames, frames sha256 "
              f"`{new['sha256'][:16]}` (images and masks, in time order)",
              f"- trained on the first {len(new['train'])}: `{new['train'][0]}` .. `{new['train'][-1]}`",
              (f"- held out, never trained on: the last {len(new['holdout'])} (`--holdout "
               f"{rec['holdout']:g}`): `{new['holdout'][0]}` .. `{new['holdout'][-1]}`, linked in `holdout/`"
               if new["holdout"] else "- held out: none (`--holdout 0`)"), "", "## Recipe", "",
              f"```sh\n{r['command']}\n```", "",
              f"Warm start from the parent; {rec['steps']} steps of batch {rec['batch']} "
              f"({'crops ' + 'x'.join(map(str, rec['crop'])) if rec['crop'] != rec['input_size'] else 'whole frames'} "
              f"at {'x'.join(map(str, rec['input_size']))}), AdamW at peak lr {rec['lr']:g} after "
              f"{rec['warmup_steps']} warm-up steps, cosine decay; loss cross-entropy + Dice with "
              f"sqrt-median-frequency class weights; BatchNorm "
              f"{'frozen (the parent statistics)' if rec['freeze_bn'] else 'trained'}; encoder blocks "
              f"frozen: {rec['freeze_blocks']}; {rec['frozen_layers']} layers with weights frozen; "
              f"{rec['train_seconds']:.0f} s of training. Each batch frame is drawn from:", "",
              "| data | split | frames | share |", "|---|---|---|---|"]
    lines += [f"| `{m['data']}` | {m['train_split']} | {m['train_frames']} | {100 * m['share']:.0f}% |"
              for m in rec["mix"]]
    lines += ["", f"int8: `edge-seg convert --int8` settings, calibrated on `{rec['calibration']}` plus the "
              f"{len(new['train'])} new training frames.", "", "## Scores", "",
              "IoU per category (%), parent and adapted model side by side, scored by `edge-seg compare` "
              "at the model's input size.", ""]
    for row in r["scores"]:
        lines += [f"### {row['set']} ({row['frames']} frames, `{row['data']}` split {row['split']})", ""]
        lines += score_table(row) + [""]
    g = r["gate"]
    lines += ["## Accuracy gate", "", f"int8 against the adapted float model on {g['set']}: mIoU(7) drop "
              f"{g['drop_points']:.2f} points, budget {g['max_drop'] if g['max_drop'] is not None else 'none'}: "
              f"**{'passed' if not g['violations'] else 'FAILED: ' + '; '.join(g['violations'])}**."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the command

def check_options(opts: AdaptOptions) -> None:
    """Everything that can be wrong with the options, before any frame is read."""
    from .datasets import detect_format

    if not opts.model.is_file():
        raise UserError(f"--model {opts.model}: no such file")
    if opts.model.suffix not in (".keras", ".h5"):
        raise UserError(f"--model {opts.model}: adapt trains the float model; pass its .keras, not "
                        f"the {opts.model.suffix} made from it")
    if not 0.0 < opts.new_weight <= 1.0:
        raise UserError(f"--new-weight {opts.new_weight:g}: the share of training frames drawn from "
                        "the new ones, above 0 and at most 1")
    if opts.steps < 1 or opts.batch < 1 or not opts.lr > 0 or not 0 <= opts.warmup_steps < opts.steps:
        raise UserError("--steps and --batch must be >= 1, --lr > 0 and --warmup-steps below --steps")
    if not opts.base_data and opts.new_weight < 1.0:
        raise UserError("no --base-data: pass the parent's training data (or --new-weight 1 to "
                        "fine-tune on the new frames alone, which forgets)")
    for root in opts.base_data:
        if not Path(root).is_dir():
            raise UserError(f"--base-data {root}: dataset folder not found (the parent's training "
                            "data, e.g. ../shared/datasets/camvid; see docs/getting-data.md)")
        detect_format(Path(root))


def run_adapt(opts: AdaptOptions) -> dict:
    """Adapt, convert, score, gate and write the card; the run's record (adapt.json)."""
    from edge_seg.io.publish import check_output, discard, partial_path, publish_folder

    check_options(opts)
    frames = labelled_frames(opts.labelled)
    new_train, held = split_holdout(frames, opts.holdout)
    out = check_output(opts.out, "--out", inputs=[opts.labelled, opts.model, *opts.base_data],
                       overwrite=False, folder=True, need=64 << 20)
    work = partial_path(out.absolute())
    work.mkdir(parents=True)
    try:
        report = adapt_into(opts, work, frames, new_train, held)
        publish_folder(work, out, "--out")
    except BaseException:
        discard(work)
        raise
    return report


def adapt_into(opts: AdaptOptions, work: Path, frames: list, new_train: list, held: list) -> dict:
    from datetime import datetime, timezone

    from edge_seg.backends.metadata import model_sha256
    from edge_seg.converters.compare import check_budgets, record_accuracy

    log = logs.callback("adapt")
    holdout_root = link_folder(held, work / "holdout", opts.labelled) if held else None
    adapted = work / f"{opts.model.stem}-adapted.keras"
    training = train_adapted(opts, new_train, held or new_train, work / "train", adapted)
    size = training["input_size"]
    base_cal, cal = calibration_sets(opts, new_train, size)
    # fp16 too: the float reference `edge-seg tune --models RUN_DIR` measures agreement against
    variants = convert(adapted, cal, log, ("int8", "fp16"))
    models = {"parent": opts.model, "adapted": adapted, "adapted_int8": variants["int8"],
              "adapted_fp16": variants["fp16"]}
    parent = {"model": opts.model.name, "sha256": model_sha256(opts.model)}
    for path in variants.values():
        name_parent(path, parent)
    models["parent_int8"] = parent_int8(opts, base_cal, work, log)
    scores, gate_result = score_sets(eval_sets(opts, holdout_root), models, work)
    violations = check_budgets(gate_result, opts.max_drop)
    record_accuracy(gate_result)
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": opts.command, "parent": parent,
        "files": {k: {"file": models[k].name, "sha256": model_sha256(models[k]), "bytes": models[k].stat().st_size}
                  for k in ("adapted", "adapted_int8", "adapted_fp16")},
        "new_frames": {"folder": str(opts.labelled), "labelled": len(frames), "sha256": frames_sha256(frames),
                       "train": [s.name for s in new_train], "holdout": [s.name for s in held]},
        "recipe": {**{k: v for k, v in asdict(opts).items() if k not in ("labelled", "out", "model", "command",
                                                                          "progress")},
                   **training, "calibration": str(cal.source),
                   "mix": json.loads((work / "train" / "config.json").read_text())["data_mix"]},
        "scores": scores,
        "gate": {"set": scores[0]["set"], "max_drop": opts.max_drop, "violations": violations,
                 "drop_points": gate_result["rows"][1]["drop_points"]},
    }
    atomic_write_json(work / "adapt.json", report)
    atomic_write_bytes(work / "README.md", card_markdown(report).encode())
    return report


def _size(ctx, param, value):
    from .cli import _size as parse
    return parse(ctx, param, value)


EXAMPLE = """\b
Example (a collection labelled in CVAT and imported, then adapted):
  edge-seg run --camera 0 --collect street/ --headless
  edge-seg data export street/ --to cvat ... ; edge-seg data import ... -o street-labelled/
  edge-seg adapt street-labelled/ --out runs/adapt-street
  edge-seg run --camera 0 --model runs/adapt-street/unet-mobilenetv2-camvid-idd-adapted-int8.tflite
"""


@click.command("adapt", epilog=EXAMPLE,
               short_help="Fine-tune the model to your own street.")
@click.argument("labelled_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="run folder to create: the adapted model, its int8 variant, the model card")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="the parent float model (.keras) [default: the bundled one]")
@click.option("--base-data", multiple=True, default=DEFAULT_BASE, show_default=True,
              help="the parent's training data, mixed in so it is not forgotten (repeat)")
@click.option("--base-split", default="drive-train", show_default=True, help="split of --base-data to train on")
@click.option("--eval-split", default="val", show_default=True,
              help="split of --base-data the card scores parent and adapted model on")
@click.option("--new-weight", type=float, default=0.3, show_default=True,
              help="share of training frames drawn from the new frames (the rest: --base-data, equally)")
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="last fraction of the labelled frames (in time order) kept out of training, scored in the card")
@click.option("--steps", type=int, default=200, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="peak learning rate (AdamW)")
@click.option("--warmup-steps", type=int, default=20, show_default=True)
@click.option("--crop", default=None, metavar="WxH", callback=_size,
              help="train on WxH windows of the frames; the model's input size trains on whole "
                   "frames [default: HxH squares of the input's height, 256x256 at 512x256: half "
                   "the cost of a whole frame]")
@click.option("--freeze-bn/--train-bn", default=True, show_default=True,
              help="keep the parent's BatchNorm statistics and scales")
@click.option("--freeze-blocks", type=int, default=0, show_default=True,
              help="freeze the MobileNetV2 encoder's first N blocks")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="int8 calibration manifest (or a dataset root, as for 'edge-seg convert'), completed "
                   "with the new frames [default: the committed one]")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="accuracy gate: exit 1 when int8 loses more mIoU(7) points than this against the float model")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="no progress bars")
def adapt(labelled_dir, out, model, base_data, base_split, eval_split, new_weight, holdout, steps, batch, lr,
          warmup_steps, crop, freeze_bn, freeze_blocks, calibration, max_drop, seed, quiet):
    """Fine-tune the model on LABELLED_DIR, frames of your own street (a collection from
    'edge-seg run --collect', labelled and brought back by 'edge-seg data import'), mixed
    with the parent's training data so that other streets are not forgotten; then convert
    it to int8, score parent and adapted model side by side and write a model card."""
    opts = AdaptOptions(Path(labelled_dir), Path(out), Path(model) if model else bundled_keras(), tuple(base_data),
                        new_weight, holdout, steps, lr, warmup_steps, batch, crop, freeze_bn, freeze_blocks,
                        base_split, eval_split, calibration, max_drop, seed, progress=not quiet)
    report = run_adapt(opts)
    for row in report["scores"]:
        click.echo(f"{row['set']}: mIoU(7) float {_pct(row['parent']['float']['miou7'])} -> "
                   f"{_pct(row['adapted']['float']['miou7'])}, int8 {_pct(row['parent']['int8']['miou7'])} -> "
                   f"{_pct(row['adapted']['int8']['miou7'])}")
    click.echo(f"model card: {Path(out) / 'README.md'}")
    if report["gate"]["violations"]:
        for v in report["gate"]["violations"]:
            click.echo(f"budget exceeded: {v}", err=True)
        sys.exit(1)

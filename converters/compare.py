"""Accuracy regression: every exported variant against the float model, on the same frames.

Frames come from ``edge_seg.train.datasets.read_pair`` at the model size (the shared
preprocessing); scores from ``edge_seg.iou`` (SegMetrics for mIoU(7) against the ground
truth, ``agreement`` for pixel agreement with the float model's own predictions). Every
model, the float one included, runs through ``edge_seg.runner.open_model``: .keras on
TensorFlow, .tflite (XNNPACK, as a device runs it) and .onnx through the runtime's Segmenter.

Latency is measured separately (``edge_seg.runner.time_model``): the model call only, batch 1,
at the chosen thread count.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge_seg.errors import UserError
from edge_seg.labels import CATEGORY_NAMES
from edge_seg.manifest import fingerprint
from edge_seg.iou import SegMetrics, agreement_from_cm, confusion_matrix, drop_points
from edge_seg.preprocess import resize_image, resize_mask

INT8_VARIANTS = ("int8", "qat-int8")


# ------------------------------------------------------------------ runners

def open_runner(path, threads: int):
    """A model of the comparison: any format edge_seg.runner opens, on the delegate a device
    picks by default (XNNPACK for .tflite), at ``threads`` threads."""
    from edge_seg.runner import open_model
    return open_model(path, threads=threads, delegate="auto")


def model_call_latency(runner, rgb, runs: int = 20, warmup: int = 3) -> dict:
    """p50/p90 ms of the model call alone (batch 1, ``rgb`` prepared each time, untimed)."""
    from edge_seg.runner import time_model
    t = time_model(runner, [rgb], warmup=warmup, runs=runs)
    return {"p50": t["infer_p50"], "p90": t["infer_p90"], "runs": t["runs"]}


# ------------------------------------------------------------------ comparison

def _label_frames(chunk):
    """(full-size RGB images, masks at label resolution) of a chunk of samples."""
    from edge_seg.train.datasets import read_image, read_mask

    images, gts = [], []
    for s in chunk:
        image, mask = read_image(s.image), read_mask(s, purpose="eval")
        if image.shape[:2] != mask.shape:
            raise UserError(f"{s.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{s.image.name} is {image.shape[1]}x{image.shape[0]}")
        images.append(image)
        gts.append(mask)
    return images, gts


def _open_runners(float_path, variant_paths, threads: int, at_label_resolution):
    """(float runner, variant runners, at_label_resolution decided)."""
    if not variant_paths:
        raise UserError("compare: name at least one variant model after the float model")
    reference = open_runner(float_path, threads)
    variants = [open_runner(p, threads) for p in variant_paths]
    differ = [v for v in variants if tuple(v.input_size) != tuple(reference.input_size)]
    if at_label_resolution is None:
        at_label_resolution = bool(differ)
    if differ and not at_label_resolution:
        v = differ[0]
        raise UserError(f"{v.path}: input {v.input_size[0]}x{v.input_size[1]} differs from the float "
                        f"model's {reference.input_size[0]}x{reference.input_size[1]}; models of different sizes are "
                        "compared at the label resolution (--at-label-resolution)")
    return reference, variants, at_label_resolution


def _chunk_frames(chunk, size, at_label_resolution: bool):
    """(frames as shown, ground truths, frames_at(model size) -> RGB batch) of a chunk."""
    from edge_seg.train.datasets import read_pair

    if at_label_resolution:
        images, gts = _label_frames(chunk)
        cache = {}

        def frames_at(sz):
            if sz not in cache:
                cache[sz] = np.stack([resize_image(im, sz) for im in images])
            return cache[sz]
        return images, gts, frames_at
    pairs = [read_pair(s, size, purpose="eval") for s in chunk]
    rgb = np.stack([p[0] for p in pairs])
    return list(rgb), [p[1] for p in pairs], lambda sz: rgb


def _score_chunk(runners, frames_at, gts, at_label_resolution: bool, metrics, agree_cm) -> None:
    """Add one chunk to every runner's scores and every variant's agreement with the float
    model (runners[0])."""
    ref_pred = None
    for k, runner in enumerate(runners):
        pred = list(runner.predict(frames_at(tuple(runner.input_size))))
        if at_label_resolution:
            pred = [resize_mask(m, (gt.shape[1], gt.shape[0])) for m, gt in zip(pred, gts)]
        for gt, m in zip(gts, pred):
            metrics[k].update(gt, m)
        if k == 0:
            ref_pred = pred
        else:
            for r, m in zip(ref_pred, pred):
                agree_cm[k] = agree_cm[k] + confusion_matrix(r, m)


def _meta_field(meta: dict, entry: str, field: str):
    """``meta[entry][field]``, None where the entry is absent or not a table (an .onnx
    model's ``quantization`` is one word)."""
    value = meta.get(entry)
    return value.get(field) if isinstance(value, dict) else None


def _row(runner, res, ref_result, agree_cm, first_rgb, latency_runs: int) -> dict:
    row = {
        "model": str(runner.path), "file": runner.path.name, "kind": runner.kind,
        "format": runner.variant, "size_bytes": runner.path.stat().st_size,
        "input_size": list(runner.input_size),
        "miou7": res["miou7"], "iou": res["iou"],
        "latency_ms": model_call_latency(runner, first_rgb, latency_runs),
        "gpu": _meta_field(runner.meta, "gpu", "verdict"),
        "io": _meta_field(runner.meta, "quantization", "io") if runner.meta else "float32",
    }
    if "set_labels" in res:  # coarse labels: the categories a mean can be taken over (edge_seg.iou)
        row.update({k: res["set_labels"][k] for k in ("exact_categories", "miou_exact_categories")})
    if agree_cm is None:  # the float model itself
        row.update(drop_points=0.0, pixel_agreement=1.0, worst_category=None,
                   worst_category_drop=0.0, iou_drop_points={c: 0.0 for c in CATEGORY_NAMES[1:]})
        return row
    agree = agreement_from_cm(agree_cm)
    drops = {c: drop_points(ref_result["iou"][c], res["iou"][c]) for c in CATEGORY_NAMES[1:]}
    finite = {c: d for c, d in drops.items() if not math.isnan(d)}
    worst = max(finite, key=finite.get) if finite else None
    row.update(drop_points=drop_points(ref_result["miou7"], res["miou7"]),
               pixel_agreement=agree["pixel_agreement"], agreement_miou7=agree["miou7"],
               worst_category=worst, worst_category_drop=finite.get(worst, float("nan")),
               iou_drop_points=drops)
    return row


def labelled_set(data_root, split: str, samples) -> dict:
    """What a score was measured on: the dataset's folder name, split, frame count and the
    fingerprint of those frames (edge_seg.manifest.fingerprint, as calibration manifests use)."""
    root = Path(data_root)
    return {"name": root.resolve().name, "split": split, "frames": len(samples),
            "fingerprint": fingerprint(samples, root)}


def run_compare(float_path, variant_paths, data_root, split: str = "val", threads: int = 2,
                fmt: str = "auto", max_frames: int | None = None, latency_runs: int = 20,
                batch: int = 8, log=None, at_label_resolution: bool | None = None) -> dict:
    """Score the float model and every variant on the same frames.

    ``at_label_resolution``: each model gets the frame at its own input size and its mask is
    upsampled (NEAREST) to the label's size before scoring, so variants of different input
    sizes (``edge-seg convert --sizes``) compare fairly; agreement with the float model is
    measured there too. None (default): on when the input sizes differ, else everything is
    scored at the float model's input size as before.
    """
    from edge_seg.train.datasets import load_split

    reference, variants, at_label_resolution = _open_runners(float_path, variant_paths, threads,
                                                             at_label_resolution)
    samples = load_split(data_root, fmt, split)
    if max_frames:
        samples = samples[:max_frames]
    size = tuple(reference.input_size)
    runners = [reference] + variants
    metrics = [SegMetrics() for _ in runners]
    agree_cm = [None] + [0 for _ in variants]  # confusion matrices vs the float model's masks
    first = None
    for start in range(0, len(samples), batch):
        images, gts, frames_at = _chunk_frames(samples[start:start + batch], size, at_label_resolution)
        first = images[0] if first is None else first
        _score_chunk(runners, frames_at, gts, at_label_resolution, metrics, agree_cm)
        if log:
            log(min(start + batch, len(samples)), len(samples))

    ref_result = metrics[0].result()
    rows = [_row(runner, metrics[k].result(), ref_result, agree_cm[k],
                 resize_image(first, tuple(runner.input_size)) if at_label_resolution else first, latency_runs)
            for k, runner in enumerate(runners)]
    return {"float_model": str(float_path), "data": str(data_root), "split": split,
            "frames": len(samples), "input_size": list(size), "threads": threads,
            "scored_at": "label resolution" if at_label_resolution else "model resolution",
            "labelled_set": labelled_set(data_root, split, samples), "rows": rows}


# ------------------------------------------------------------------ recording

def _float_source_sha(float_path) -> str:
    """The sha256 of the float model the variants should have been converted from: the
    file itself (.keras), or the source recorded in a float .tflite's metadata."""
    from edge_seg.backends.metadata import file_sha256, read_meta
    if Path(float_path).suffix == ".tflite":
        source = (read_meta(float_path).get("source_model") or {}).get("sha256")
        if source:
            return source
    return file_sha256(float_path)


def accuracy_record(result: dict, row: dict) -> dict:
    """The ``accuracy`` entry of a variant's metadata from one row of ``run_compare``."""
    from datetime import datetime, timezone
    ref = result["rows"][0]

    def num(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)
    return {
        "drop_miou7": num(row["drop_points"]),
        "miou7": num(row["miou7"]),
        "float_miou7": num(ref["miou7"]),
        "per_category": {c: num(d) for c, d in row["iou_drop_points"].items()},
        "labelled_set": dict(result["labelled_set"]),
        "agreement": {"miou7": num(row.get("agreement_miou7")), "pixels": num(row["pixel_agreement"])},
        "float_model": Path(result["float_model"]).name,
        "float_model_sha256": _float_source_sha(result["float_model"]),
        "scored_at": result["scored_at"],
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def record_accuracy(result: dict, log=None) -> list[Path]:
    """Write each .tflite variant's measured accuracy into its metadata (the sidecar .json,
    replaced atomically, and the copy embedded in the model), so ``edge-seg tune`` can budget
    by it on any device: as ``accuracy`` when the variant was converted from the float model
    scored against, else as ``reference_accuracy`` (its drop vs that other float model)."""
    from edge_seg.backends.metadata import REFERENCE_ACCURACY, embed_sidecar, read_meta, sidecar_path
    from edge_seg.io.publish import atomic_write_json
    source = _float_source_sha(result["float_model"])
    written = []
    for row in result["rows"][1:]:
        if row["kind"] != "tflite":
            continue
        meta = read_meta(row["model"])
        twin = (meta.get("source_model") or {}).get("sha256")
        entry = "accuracy" if not twin or twin == source else REFERENCE_ACCURACY
        if entry != "accuracy" and log:
            log(f"{row['file']} was converted from another float model (sha256 {twin[:12]}) than "
                f"{Path(result['float_model']).name}: recorded as its {entry}, the drop vs that model")
        meta[entry] = accuracy_record(result, row)
        atomic_write_json(sidecar_path(row["model"]), meta)
        embed_sidecar(row["model"])  # the copy inside the model file must agree with it
        written.append(sidecar_path(row["model"]))
    return written


def check_budgets(result: dict, max_drop: float | None = None, max_category_drop: float | None = None,
                  budgets: dict | None = None, max_size_ratio: float | None = None) -> list[str]:
    """Violations, one line each: ``max_drop`` (points, every variant), ``budgets``
    ({variant: points}), ``max_category_drop`` (points, int8 variants), ``max_size_ratio``
    (int8 file over fp32 file; the fp32 .tflite row, else the float model file)."""
    problems = []
    rows = result["rows"][1:]
    fp32 = next((r for r in rows if r["format"] == "fp32"), result["rows"][0])
    for r in rows:
        name = f"{r['file']} ({r['format']})"
        limits = []
        if max_drop is not None:
            limits.append(max_drop)
        if budgets and r["format"] in budgets:
            limits.append(budgets[r["format"]])
        for limit in limits:
            if not r["drop_points"] <= limit:
                problems.append(f"{name}: mIoU(7) drop {r['drop_points']:.3f} points > budget {limit:g}")
                break
        if max_category_drop is not None and r["format"] in INT8_VARIANTS:
            for c, d in r["iou_drop_points"].items():
                if d > max_category_drop:
                    problems.append(f"{name}: {c} IoU drop {d:.2f} points > budget {max_category_drop:g}")
        if max_size_ratio is not None and r["format"] in INT8_VARIANTS:
            ratio = r["size_bytes"] / fp32["size_bytes"]
            if ratio > max_size_ratio:
                problems.append(f"{name}: {ratio:.0%} of the fp32 file > budget {max_size_ratio:.0%}")
    return problems


# ------------------------------------------------------------------ tables

COLUMNS = ("format", "file", "size MB", "mIoU(7)", "drop pt", "agreement", "worst category drop",
           "p50 ms", "p90 ms", "GPU delegate")


def _sized(result: dict) -> bool:
    """Whether the rows differ in input size (then the table gets an input column)."""
    return len({tuple(r.get("input_size") or result["input_size"]) for r in result["rows"]}) > 1


def columns(result: dict) -> tuple:
    return COLUMNS[:2] + ("input",) + COLUMNS[2:] if _sized(result) else COLUMNS


def table_rows(result: dict) -> list[list[str]]:
    out = []
    sized = _sized(result)
    for r in result["rows"]:
        worst = "-" if not r["worst_category"] else f"{r['worst_category']} {r['worst_category_drop']:+.2f}"
        cells = [r["format"], r["file"], f"{r['size_bytes'] / 1e6:.2f}", f"{r['miou7'] * 100:.2f}",
                 f"{r['drop_points']:+.3f}", f"{r['pixel_agreement'] * 100:.2f}%", worst,
                 f"{r['latency_ms']['p50']:.1f}", f"{r['latency_ms']['p90']:.1f}", r["gpu"] or "-"]
        if sized:
            size = r.get("input_size") or result["input_size"]
            cells.insert(2, f"{size[0]}x{size[1]}")
        out.append(cells)
    return out


def _caption(result) -> str:
    if result.get("scored_at") == "label resolution":
        where = ("scored at the label resolution (each model at its own input size, its mask "
                 "upsampled nearest to the label's size)")
    else:
        where = f"at {result['input_size'][0]}x{result['input_size'][1]}"
    return (f"{result['frames']} {result['split']} frames of {result['data']} {where}; drop = float "
            f"mIoU(7) minus variant, in points; agreement = pixels where the variant's mask equals "
            f"the float model's; latency = model call, batch 1, {result['threads']} threads")


def format_text(result: dict) -> str:
    cols = columns(result)
    rows = [list(cols)] + table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ["", _caption(result)])


def format_markdown(result: dict, problems=None) -> str:
    cols = columns(result)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    lines += ["", _caption(result) + "."]
    cats = CATEGORY_NAMES[1:]
    lines += ["", "| format | " + " | ".join(cats) + " |", "|" + "---|" * (len(cats) + 1)]
    for r in result["rows"]:
        cells = []
        for c in cats:
            iou, drop = r["iou"][c], r["iou_drop_points"].get(c, 0.0)
            cells.append("-" if math.isnan(iou) else f"{iou * 100:.1f}" + ("" if r is result["rows"][0]
                                                                            else f" ({0.0 - drop + 0.0:+.2f})"))
        name = r["format"]
        if len(cols) > len(COLUMNS):
            size = r.get("input_size") or result["input_size"]
            name = f"{name} {size[0]}x{size[1]}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per-category IoU (%), change vs float in points in brackets."]
    if problems is not None:
        lines += ["", "Budget check: " + ("all variants within budget." if not problems else
                                          "FAILED — " + "; ".join(problems))]
    return "\n".join(lines) + "\n"

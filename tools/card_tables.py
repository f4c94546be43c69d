"""The fast tier's model card tables and the bundled-models table of models/README.md,
written from the outputs of tools/fast_tier.py (the compare JSONs, the tune profile, the
sidecars): between ``<!-- fast-tier:NAME -->`` and ``<!-- /fast-tier:NAME -->``, so the
prose around them stays as written."""
from __future__ import annotations

import math
import re
from pathlib import Path

from fast_tier import CARD, CATEGORIES, INDEX, MODELS, REFERENCE, SETS, STEM, fail

from edge_seg.converters.sizes import size_text

SET_TITLES = {"camvid-drive-val": "CamVid `drive-val` (0006R0, unseen)",
              "camvid-val": "CamVid `val` (0016E5, trained on its drive)",
              "idd-lite-drive-val": "IDD-Lite `drive-val` (held-out drives)"}


def _iou(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f".{round(v * 1000):03d}"


def _miou(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _name(row: dict) -> str:
    return "float" if row["kind"] != "tflite" else row["format"]


def stages_table(repo: Path) -> str:
    """Each training stage bundled in models/training: epochs, the selected epoch, its score."""
    import csv

    lines = ["| stage | config | epochs | best epoch | `drive-val` mIoU(7) | IDD-Lite `drive-val` | hours |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    stages = [("1", "-stage1"), ("2", "")]
    if not (repo / MODELS / "training" / f"{STEM}-stage1.history.csv").is_file():
        stages = [("1", "")]  # a first-stage checkpoint bundled on its own
    for number, suffix in stages:
        base = repo / MODELS / "training" / f"{STEM}{suffix}"
        with open(f"{base}.history.csv") as f:
            history = list(csv.DictReader(f))
        best = max(history, key=lambda r: float(r["val_miou7"]))
        lines.append(f"| {number} | `training/{base.name}.config.json` | {len(history)} | {best['epoch']} | "
                     f"{float(best['val_miou7']):.4f} | {float(best['val_miou7_idd-lite']):.4f} | "
                     f"{float(history[-1]['wall_seconds']) / 3600:.1f} |")
    return "\n".join(lines)


def bundled_size(repo: Path, stem: str) -> tuple[int, int]:
    """The input size the bundled float model takes (its int8 sidecar records it), which
    may not be the size it was trained at."""
    from edge_seg.backends.metadata import read_meta

    return tuple(read_meta(repo / MODELS / f"{stem}-int8.tflite")["native_input_size"])


def files_table(repo: Path, config: dict) -> str:
    from edge_seg.backends.metadata import file_sha256, model_sha256

    size, trained = bundled_size(repo, STEM), tuple(config["input_size"])
    keras = f"the float model ({size_text(size)}" + (
        f"; trained at {size_text(trained)}, rebuilt at {size_text(size)} with the same weights)" if size != trained else ")")
    what = {".keras": keras,
            "-int8.tflite": "post-training int8, weights per tensor, int8 input and output, logits at stride 2",
            "-fp16.tflite": "float16 weights, for the GPU delegate; logits at stride 2"}
    lines = ["| file | sha256 (prefix) | bytes | what |", "| --- | --- | --- | --- |"]
    for suffix, text in what.items():
        path = repo / MODELS / f"{STEM}{suffix}"
        sha = file_sha256(path) if suffix == ".keras" else model_sha256(path)
        lines.append(f"| `{path.name}` | `{sha[:12]}` | {path.stat().st_size:,} | {text} |")
    return "\n".join(lines)


def scores_table(own: dict) -> str:
    """Per category, float and variants, on each set (at the fast tier's input size)."""
    lines = ["| split | frames | model | mIoU(7) | drop pt | " + " | ".join(CATEGORIES) + " |",
             "| --- " * (5 + len(CATEGORIES)) + "|"]
    for _, _, name in reversed(SETS):
        result = own[name]
        for k, row in enumerate(result["rows"]):
            # with coarse labels (IDD-Lite) only the categories labelled exactly are scored
            exact = row.get("exact_categories") or CATEGORIES
            head = f"{SET_TITLES[name]} | {result['frames']}" if k == 0 else " | "
            cells = [_iou(row["iou"][c]) if c in exact else "–" for c in CATEGORIES]
            score = _miou(row["miou7"]) if "exact_categories" not in row else \
                f"{_miou(row['miou_exact_categories'])} ({len(exact)} exact)"
            drop = "" if k == 0 else f"{row['drop_points']:+.3f}"
            lines.append(f"| {head} | {_name(row)} | {score} | {drop} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_table(vs_ref: dict) -> str:
    """The fast models against the reference's float model, each at its own input size,
    scored at the label resolution."""
    lines = ["| model | input | mIoU(7) | below the reference pt | " + " | ".join(CATEGORIES) + " |",
             "| --- " * (4 + len(CATEGORIES)) + "|"]
    for k, row in enumerate(vs_ref["rows"]):
        name = "reference float" if k == 0 else f"fast {_name(row)}"
        size = size_text(row["input_size"])
        drop = "" if k == 0 else f"{row['drop_points']:.2f}"
        lines.append(f"| {name} (`{row['file']}`) | {size} | {_miou(row['miou7'])} | {drop} | "
                     + " | ".join(_iou(row["iou"][c]) for c in CATEGORIES) + " |")
    return "\n".join(lines)


def _speed_rows(speed: dict) -> dict:
    return {(r["file"], r["threads"]): r for r in speed["table"] if r["delegate"] == "xnnpack"}


def speed_table(speed: dict) -> str:
    rows = _speed_rows(speed)
    threads = sorted({t for _, t in rows})
    files = [f"{REFERENCE}-int8.tflite", f"{REFERENCE}-fp16.tflite", f"{STEM}-int8.tflite", f"{STEM}-fp16.tflite"]
    head = "| model | input | " + " | ".join(f"{t} thread{'s' * (t > 1)}: p50 ms, FPS" for t in threads)
    lines = [head + " |", "| --- " * (2 + len(threads)) + "|"]
    for f in files:
        if (f, threads[0]) not in rows:
            continue
        cells = [f"{rows[(f, t)]['p50_ms']:.1f}, {rows[(f, t)]['fps']:.1f}" for t in threads]
        lines.append(f"| `{f}` | {rows[(f, threads[0])]['input']} | " + " | ".join(cells) + " |")
    ratio = [rows[(f"{STEM}-int8.tflite", t)]["fps"] / rows[(f"{REFERENCE}-int8.tflite", t)]["fps"]
             for t in threads]
    lines.append(f"| fast int8 / reference int8 FPS | | " + " | ".join(f"**{r:.2f}x**" for r in ratio) + " |")
    return "\n".join(lines) + (f"\n\n{speed['device']['cpu']}, {speed['device']['cores']} cores, "
                               f"XNNPACK, {speed['frames']['description']}, "
                               f"{speed['seconds_per_configuration']:g} s per configuration, "
                               f"{speed['created']}" + (", load average {} before and {} after".format(
                                   *speed["load_average"]) if "load_average" in speed else "") + ".")


def bundled_macs(repo: Path, stem: str) -> int:
    """Multiply-accumulates of the bundled float model at the size it is bundled at (the
    training configuration's count is at the training size)."""
    from edge_seg.converters.keras_model import load_keras_model
    from edge_seg.train.models import count_macs

    return count_macs(load_keras_model(repo / MODELS / f"{stem}.keras"))


def bundled_table(repo: Path, vs_ref: dict, speed: dict) -> str:
    """models/README.md's table: both bundled models on one scale."""
    from edge_seg.backends.metadata import REFERENCE_ACCURACY, read_meta

    rows = _speed_rows(speed)
    floats = {r["file"]: r["miou7"] for r in vs_ref["rows"]}
    lines = ["| model | card | input | GMAC | float mIoU(7) | int8 drop pt | int8 FPS, 2 threads |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for stem, card, entry in ((REFERENCE, "README.md", "accuracy"), (STEM, CARD.name, REFERENCE_ACCURACY)):
        acc = read_meta(repo / MODELS / f"{stem}-int8.tflite")[entry]
        fps = rows.get((f"{stem}-int8.tflite", 2), {}).get("fps", math.nan)
        lines.append(f"| `{stem}.keras` | [{card}]({card}) | {size_text(bundled_size(repo, stem))} "
                     f"| {bundled_macs(repo, stem) / 1e9:.3f} | {_miou(floats[f'{stem}.keras'])} | "
                     f"{acc['drop_miou7']:.2f} | {fps:.1f} |")
    return "\n".join(lines)


def replace_block(path: Path, name: str, body: str) -> None:
    from edge_seg.io.publish import atomic_write_bytes

    text = path.read_text()
    pattern = re.compile(rf"(<!-- fast-tier:{name} -->\n).*?(<!-- /fast-tier:{name} -->)", re.S)
    if not pattern.search(text):
        fail(f"{path}: no <!-- fast-tier:{name} --> block")
    atomic_write_bytes(path, pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text).encode())


def fill_tables(repo: Path, config: dict, own: dict, vs_ref: dict, speed: dict) -> None:
    card = repo / CARD
    replace_block(card, "files", files_table(repo, config))
    replace_block(card, "stages", stages_table(repo))
    replace_block(card, "scores", scores_table(own))
    replace_block(card, "reference", reference_table(vs_ref))
    replace_block(card, "speed", speed_table(speed))
    replace_block(repo / INDEX, "bundled", bundled_table(repo, vs_ref, speed))

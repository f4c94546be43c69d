"""`edge-seg sweep --grid GRID.yaml`: `train` over a grid of options, then a leaderboard.

GRID.yaml::

    base:                    # options every run shares (names as `edge-seg train` options,
      data: ../shared/datasets/camvid   # dashes or underscores)
      epochs: 4
      time_budget: 900       # the per-run budget, seconds of training
    grid:                    # cartesian product of these lists (optional)
      loss: [ce, ce+dice]
      class_weights: [none, median-freq]
    runs:                    # and/or an explicit list of option sets (optional)
      - {arch: unet-mobilenetv2, alpha: 0.75}
      - {arch: lraspp-mobilenetv2, alpha: 1.0}

Every combination of ``runs`` x ``grid`` is trained into OUT/<name>/ (a normal run folder,
so an interrupted sweep resumes its unfinished runs and skips the finished ones). The
leaderboard (params, MACs at 512x256, val mIoU(7) and per-category IoU, each other dataset's
val score when several were mixed, TFLite fp32 latency batch 1 at 512x256 where the sweep
runs, wall time) goes to stdout, OUT/leaderboard.md and OUT/leaderboard.json.
"""
from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.labels import CATEGORY_NAMES
from edge_seg.io.publish import atomic_write_bytes, atomic_write_json


def _norm_key(k: str) -> str:
    k = str(k).replace("-", "_")
    return {"data_root": "data", "fmt": "format"}.get(k, k)


def load_grid(path: Path) -> tuple[dict, list[dict]]:
    import yaml
    from .trainer import TrainConfig

    try:
        spec = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: unreadable grid file ({e})") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: expected a mapping with base/grid/runs")
    unknown = set(spec) - {"base", "grid", "runs"}
    if unknown:
        raise UserError(f"{path}: unknown top-level keys {sorted(unknown)} (use base, grid, runs)")
    base = {_norm_key(k): v for k, v in (spec.get("base") or {}).items()}
    grid = {_norm_key(k): (v if isinstance(v, list) else [v]) for k, v in (spec.get("grid") or {}).items()}
    runs = [{_norm_key(k): v for k, v in r.items()} for r in (spec.get("runs") or [{}])]
    valid = {f for f in TrainConfig.__dataclass_fields__} - {"run_dir", "version"}
    for where, keys in (("base", base), ("grid", grid), *(("runs", r) for r in runs)):
        bad = set(keys) - valid
        if bad:
            raise UserError(f"{path}: unknown option(s) {sorted(bad)} in {where}; "
                            f"valid: {', '.join(sorted(valid))}")
    combos = []
    keys = list(grid)
    for run in runs:
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            combos.append({**base, **run, **dict(zip(keys, values))})
    if not all("data" in c for c in combos):
        raise UserError(f"{path}: every run needs data (set it in base)")
    return base, combos


def run_name(options: dict, base: dict) -> str:
    varying = {k: v for k, v in options.items() if k not in base or base[k] != v}
    parts = [f"{k}={v}" for k, v in sorted(varying.items()) if k != "data"] or ["base"]
    return re.sub(r"[^A-Za-z0-9=.+_-]+", "_", ",".join(parts))[:120]


def tflite_fp32_latency(model, runs: int = 20, threads: int = 2) -> float:
    """Median ms of one fp32 TFLite inference at the model's size, batch 1: the model converted
    in memory and run as a device would, through edge_seg.runner."""
    import tempfile

    import numpy as np
    import tensorflow as tf

    from edge_seg.backends.metadata import make_meta, publish_model
    from edge_seg.converters.keras_model import model_input_size
    from edge_seg.runner import open_model, time_model

    size = model_input_size(model)
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with tempfile.TemporaryDirectory(prefix="edge-seg-sweep-") as tmp:
        path = Path(tmp) / "latency-fp32.tflite"
        publish_model(path, content, make_meta(size, "fp32"))
        runner = open_model(path, threads=threads)
        frame = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        return time_model(runner, [frame], warmup=3, runs=runs)["infer_p50"]


def measure(cfg, latency: bool) -> dict:
    """Params and MACs at 512x256 (and fp32 TFLite latency) of the run's architecture."""
    import tf_keras as keras

    from .models import build_model, count_macs
    keras.backend.clear_session()
    m = build_model(cfg.arch, (512, 256), cfg.alpha, decoder_widths=cfg.decoder_widths)
    out = {"params": m.count_params(), "macs_512x256": count_macs(m)}
    if latency:
        out["tflite_fp32_ms"] = tflite_fp32_latency(m)
    keras.backend.clear_session()
    return out


def run_sweep(grid_path: Path, out_dir: Path, mlflow: bool = False, dry_run: bool = False,
              latency: bool = True) -> list[dict]:
    from .trainer import TrainConfig, find_last, train_model

    base, combos = load_grid(grid_path)
    out_dir = Path(out_dir)
    names = [run_name(c, base) for c in combos]
    if len(set(names)) != len(names):
        names = [f"{i:02d}-{n}" for i, n in enumerate(names)]
    logs.status("sweep", f"{len(combos)} run(s) -> {out_dir}/", runs=names)
    for name in names:
        logs.status("sweep", f"  {name}")
    if dry_run:
        return []
    rows = []
    for name, options in zip(names, combos):
        run_dir = out_dir / name
        cfg = TrainConfig.from_dict({**options, "run_dir": str(run_dir), "mlflow": mlflow or
                                     options.get("mlflow", False)})
        row = {"run": name, **{k: v for k, v in options.items() if k != "data"}}
        t0 = time.time()
        try:
            if (run_dir / "eval.json").is_file():
                logs.status("sweep", f"[{name}] finished before, reusing its eval.json", run=name)
            else:
                resume = run_dir.exists() and find_last(run_dir) is not None
                logs.status("sweep", f"[{name}] {'resuming' if resume else 'training'}", run=name)
                import tf_keras as keras
                keras.backend.clear_session()
                train_model(cfg, resume=resume, progress=False)
            summary = json.loads((run_dir / "eval.json").read_text())
            saved = json.loads((run_dir / "config.json").read_text())
            cfg.alpha = saved.get("alpha", cfg.alpha)
            m = summary["metrics"]
            row.update(arch=saved.get("arch"), alpha=saved.get("alpha"), miou7=m["miou7"],
                       iou={c: m["iou"][c] for c in CATEGORY_NAMES[1:]},
                       epochs_run=summary["epochs_run"], best_epoch=summary["best_epoch"],
                       wall_seconds=summary["wall_seconds"])
            row["other_val"] = {dataset: other_val_scores(o) for dataset, o in
                                (summary.get("other_val") or {}).items()}
            row.update(measure(cfg, latency))
        except UserError as e:
            row["error"] = str(e)
            logs.status("sweep.failed", f"[{name}] failed: {e}", run=name)
        row["sweep_seconds"] = time.time() - t0
        rows.append(row)
        atomic_write_json(out_dir / "leaderboard.json", rows)
    table = leaderboard_markdown(rows)
    atomic_write_bytes(out_dir / "leaderboard.md", (table + "\n").encode())
    print(table)
    return rows


def other_val_scores(other: dict) -> dict:
    """The leaderboard's view of another dataset's val split in eval.json: its mIoU(7) and,
    with coarse labels, the mean IoU over the categories that have exact labels (the others
    score false positives only) and the share of set pixels predicted inside their set."""
    m = other["metrics"]
    sets = m.get("set_labels")
    return {"split": other.get("split"), "miou7": m["miou7"],
            "miou": sets["miou_exact_categories"] if sets else m["miou7"],
            "exact_categories": sets["exact_categories"] if sets else None,
            "set_inside": sets["inside"] if sets else None}


def leaderboard_markdown(rows: list[dict]) -> str:
    """Rows best first by the selection split's mIoU(7); one mIoU column per other dataset
    scored during training (its exact categories' mean when it has coarse labels, with the
    share of coarse pixels predicted inside their set beside it)."""
    cats = CATEGORY_NAMES[1:]
    others = list(dict.fromkeys(n for r in rows for n in r.get("other_val", {})))
    coarse = {n for r in rows for n, o in r.get("other_val", {}).items() if o["set_inside"] is not None}
    other_head = []
    for n in others:
        other_head.append(f"{n} mIoU (exact)" if n in coarse else f"{n} mIoU(7)")
        if n in coarse:
            other_head.append(f"{n} in set")
    head = ["run", "arch", "alpha", "params (M)", "GMAC 512x256", "val mIoU(7)", *cats,
            *other_head, "TFLite fp32 ms", "epochs", "wall (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ok = sorted((r for r in rows if "miou7" in r), key=lambda r: -r["miou7"])
    for r in ok:
        lat = f"{r['tflite_fp32_ms']:.0f}" if "tflite_fp32_ms" in r else "-"
        other_cells = []
        for n in others:
            o = r.get("other_val", {}).get(n)
            other_cells.append(f"{o['miou']:.3f}" if o else "-")
            if n in coarse:
                other_cells.append(f"{o['set_inside']:.1%}" if o and o["set_inside"] is not None else "-")
        lines.append("| " + " | ".join([
            r["run"], str(r["arch"]), f"{r['alpha']:g}", f"{r['params'] / 1e6:.2f}",
            f"{r['macs_512x256'] / 1e9:.3f}", f"{r['miou7']:.4f}",
            *[f"{r['iou'][c]:.3f}" for c in cats], *other_cells, lat, str(r["epochs_run"]),
            f"{r['wall_seconds'] / 60:.1f}"]) + " |")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run']} | failed: {r['error']} |")
    return "\n".join(lines)

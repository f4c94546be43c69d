"""`edge-seg eval MODEL --data ROOT`: the table and the report folder."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from edge_seg import log as logs
from edge_seg.errors import UserError
from edge_seg.labels import CATEGORY_NAMES, colors_rgb
from edge_seg.io.publish import atomic_write_json, check_output, discard, output_error, partial_path, publish_folder

from .evaluate import score


def open_for_eval(model_path: Path, input_size, batch: int, trust_sidecar: bool = False):
    """The runner of a .keras, .tflite or .onnx model (edge_seg.runner), on the CPU: a .tflite
    on TFLite's built-in kernels (delegate "cpu", XNNPACK off), an .onnx on ONNX Runtime's
    CPU provider."""
    from edge_seg.runner import open_model

    runner = open_model(model_path, threads=None, delegate="cpu", batch=batch, input_size=input_size,
                        trust_sidecar=trust_sidecar, log=logs.callback("eval"))
    if input_size is not None and tuple(input_size) != tuple(runner.input_size):
        w, h = runner.input_size
        raise UserError(f"{model_path}: the model's input is fixed at {w}x{h}; "
                        f"drop --input-size {input_size[0]}x{input_size[1]}")
    return runner


def _fmt(v) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def format_table(result: dict, title: str) -> str:
    lines = [title, f"{'category':<14}{'IoU':>8}{'Dice':>8}"]
    for name in CATEGORY_NAMES[1:]:
        lines.append(f"{name:<14}{_fmt(result['iou'][name]):>8}{_fmt(result['dice'][name]):>8}")
    lines.append("-" * 30)
    lines.append(f"{'mIoU(7)':<14}{_fmt(result['miou7']):>8}   (void ignored, official category score)")
    lines.append(f"{'mIoU(8)':<14}{_fmt(result['miou8']):>8}   (void as a class)")
    lines.append(f"{'mean Dice(7)':<14}{_fmt(result['mdice7']):>8}")
    lines.append(f"{'pixel acc':<14}{_fmt(result['pixel_accuracy']):>8}")
    if "iiou" in result:
        for name, v in result["iiou"].items():
            lines.append(f"{'iIoU ' + name:<14}{_fmt(v):>8}")
        lines.append(f"{'mean iIoU':<14}{_fmt(result['miiou']):>8}")
    else:
        lines.append("iIoU          n/a (no instance maps in this dataset)")
    lines += format_set_labels(result)
    return "\n".join(lines)


def format_set_labels(result: dict) -> list[str]:
    """Lines on the set-valued (coarse) ground truth: not in IoU; the share predicted
    inside each set."""
    sets = result.get("set_labels")
    if not sets:
        return []
    width = max([14] + [len(name) + 2 for name in sets["by_set"]])
    lines = [f"set-valued labels: {100 * sets['share_of_labelled']:.1f}% of labelled pixels, not in IoU; "
             f"predicted inside the set:",
             f"{'set':<{width}}{'pixels':>12}{'inside':>8}"]
    lines += [f"{name:<{width}}{v['pixels']:>12}{_fmt(v['inside']):>8}" for name, v in sets["by_set"].items()]
    lines.append(f"{'all sets':<{width}}{sets['pixels']:>12}{_fmt(sets['inside']):>8}")
    rows = np.asarray(result["confusion_matrix"]).sum(1)
    missing = [name for name, n in zip(CATEGORY_NAMES[1:], rows[1:]) if n == 0]
    if missing:
        lines.append(f"no exact label of {', '.join(missing)} here: their IoU counts only false positives; "
                     f"mIoU over the {len(sets['exact_categories'])} others: "
                     f"{_fmt(sets['miou_exact_categories']).strip()}")
    return lines


def run_eval(model_path, data_root, fmt, split, input_size, at_label_resolution, report_dir, limit,
             batch, as_json, overwrite: bool = False, trust_sidecar: bool = False):
    from .datasets import load_split

    if report_dir:  # before the evaluation: its results must never be lost to an unwritable report
        check_output(report_dir, "--report", inputs=[model_path, data_root], overwrite=overwrite,
                     folder=True, need=4 << 20)
    samples = load_split(data_root, fmt, split)
    if limit:
        samples = samples[:limit]
    runner = open_for_eval(Path(model_path), input_size, batch, trust_sidecar)
    predict, size, desc = runner.predict, tuple(runner.input_size), runner.describe()
    resolution = ("label resolution (predictions upsampled nearest)" if at_label_resolution
                  else f"model size {size[0]}x{size[1]}")
    t0 = time.time()
    with logs.progress(total=len(samples), desc="eval", quiet=as_json) as bar:
        metrics, kept = score(predict, samples, size, at_label_resolution, True, batch,
                              keep_samples=8 if report_dir else 0, progress=bar)
    seconds = time.time() - t0
    result = metrics.result()
    summary = {"model": str(model_path), "description": desc, "data": str(data_root), "split": split,
               "frames": len(samples), "scored_at": resolution, "input_size": list(size),
               "seconds": seconds, **result}
    title = (f"{desc} on {data_root} [{split}], {len(samples)} frames, scored at {resolution}")
    if as_json:
        print(json.dumps({k: v for k, v in summary.items() if k != "confusion_matrix"}, indent=2))
    else:
        print(format_table(result, title))
    if report_dir:
        publish_report(Path(report_dir), summary, kept, title)
        logs.status("eval.report", f"report written to {report_dir}/", path=str(report_dir))
    return summary


# ------------------------------------------------------------------ report

def publish_report(out: Path, summary: dict, kept, title: str):
    """The report folder is written under a partial name and put in place when complete:
    an interrupted or failed report leaves ``out`` as it was."""
    tmp = partial_path(out)
    try:
        write_report(tmp, summary, kept, title)
        publish_folder(tmp, out, "--report")
    except OSError as e:
        raise output_error(f"--report {out}", e) from None
    finally:
        discard(tmp)


def write_report(out: Path, summary: dict, kept, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", summary)

    # confusion matrix, rows normalised (ground truth), void row shown for completeness
    cm = np.asarray(summary["confusion_matrix"], np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(CATEGORY_NAMES)), CATEGORY_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(len(CATEGORY_NAMES)), CATEGORY_NAMES)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            if cm[i].sum():
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (row-normalised)\n" + summary["scored_at"], fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    # per-category IoU bars
    names = list(CATEGORY_NAMES[1:])
    ious = [summary["iou"][n] for n in names]
    colors = colors_rgb()[1:] / 255.0
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(names, [0 if math.isnan(v) else v for v in ious], color=colors, edgecolor="black")
    for bar, v in zip(bars, ious):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, _fmt(v).strip(),
                ha="center", fontsize=8)
    ax.axhline(summary["miou7"], color="gray", ls="--", lw=1)
    ax.text(len(names) - 0.5, summary["miou7"] + 0.01, f"mIoU(7) {summary['miou7']:.3f}", ha="right",
            fontsize=8, color="gray")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title(f"per-category IoU, {summary['split']} ({summary['scored_at']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "category_iou.png", dpi=110)
    plt.close(fig)

    if kept:
        write_sample_grid(out / "samples.png", kept)


def write_sample_grid(path: Path, kept, tile_width: int = 384):
    """Rows of image | ground truth | prediction | errors (red wrong, black unscored).
    Set-valued ground truth is grey; there a prediction inside the set counts as right."""
    import cv2

    from edge_seg.mapping import allowed_table, set_code_mask
    allowed = allowed_table()

    palette = colors_rgb()
    rows = []
    for frame, pred in kept:
        gt = frame.mask
        h, w = gt.shape
        image = cv2.resize(frame.rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        is_set = set_code_mask(gt)
        gt_rgb = np.where((gt == 255)[..., None], np.uint8(255), palette[np.minimum(gt, 7)])
        gt_rgb[is_set] = (160, 160, 160)  # coarse label: one of several categories
        pred_rgb = palette[pred]
        err = np.full((h, w, 3), 200, np.uint8)
        exact = (gt != 255) & (gt != 0) & ~is_set
        right = np.where(is_set, allowed[gt, pred], pred == gt)
        err[(exact | is_set) & right] = (40, 160, 40)
        err[(exact | is_set) & ~right] = (220, 30, 30)
        err[~(exact | is_set)] = (0, 0, 0)
        row = np.concatenate([image, gt_rgb, pred_rgb, err], axis=1)
        scale = tile_width / w
        rows.append(cv2.resize(row, (int(row.shape[1] * scale), int(h * scale)),
                               interpolation=cv2.INTER_NEAREST))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, axis=0)
    header = np.full((24, width, 3), 255, np.uint8)
    for i, text in enumerate(("image", "ground truth", "prediction", "errors (red wrong, black unscored)")):
        cv2.putText(header, text, (i * tile_width + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    grid = np.concatenate([header, grid], axis=0)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    from edge_seg.io.publish import atomic_write_bytes
    atomic_write_bytes(path, buf.tobytes())

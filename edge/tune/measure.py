"""Measuring a configuration (model variant x delegate x threads) for ``edge-seg tune``:
latency through the path ``edge-seg run`` takes (edge_seg.runner), and agreement with the
float reference. Frames are RGB, converted once when read."""
from __future__ import annotations

import math
import os

from edge_seg import log as logs
from edge_seg.errors import UserError

DEFAULT_WARMUP = 3
MIN_RUNS = 5
ONNX_DELEGATES = ("cpu", "cuda", "tensorrt")


def parse_threads(text: str | None, cores: int | None = None) -> list[int]:
    cores = cores or os.cpu_count() or 1
    if not text:
        return list(range(1, cores + 1))
    out = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise UserError(f"--threads {text!r}: expected a list such as 1,2,4 or 1-4") from None
    if not out or min(out) < 1:
        raise UserError(f"--threads {text!r}: thread counts must be 1 or more")
    return sorted(set(out))


def delegates_for(kind: str, wanted: list[str] | None = None) -> list[str]:
    """The delegates worth trying for a .tflite or .onnx model on this device."""
    if kind == "onnx":
        from edge_seg.backends import onnxrt
        try:
            providers = onnxrt.import_onnxruntime().get_available_providers()
        except UserError:
            providers = []
        here = ["cpu"] + [d for d in ("cuda", "tensorrt") if onnxrt.PROVIDERS[d] in providers]
        if wanted is None:
            return here
        mapped = ["cuda" if d == "gpu" else ("cpu" if d == "auto" else d) for d in wanted]
        return [d for d in dict.fromkeys(mapped) if d in ONNX_DELEGATES]
    from edge_seg.backends import litert
    if wanted is None:
        here = ["xnnpack", "cpu"]
        try:
            litert.find_gpu_delegate()
            here.append("gpu")
        except OSError:
            pass
        return here
    out = []
    for d in wanted:
        d = "xnnpack" if d == "auto" else d
        if d in ("xnnpack", "cpu", "gpu", "edgetpu") or litert.is_delegate_path(d):
            out.append(d)
    return list(dict.fromkeys(out))


def time_config(runner, frames, seconds: float, warmup: int = DEFAULT_WARMUP,
                min_runs: int = MIN_RUNS) -> dict:
    """Latency (ms) of preprocess + inference + argmax, cycling through ``frames`` (RGB)."""
    from edge_seg.runner import time_model
    t = time_model(runner, frames, warmup, seconds=seconds, min_runs=min_runs)
    return {"p50_ms": t["p50"], "p90_ms": t["p90"], "mean_ms": t["mean"],
            "infer_p50_ms": t["infer_p50"], "fps": t["fps"], "runs": t["runs"]}


def model_masks(runner, frames) -> list:
    """The category masks of ``frames`` (RGB), at the runner's input size."""
    return list(runner.predict(frames))


def agreement_with(reference_masks, masks) -> dict:
    """mIoU(7) (reference as ground truth) and pixel agreement over all frames; masks of
    another size are resized NEAREST to the reference mask's size first."""
    from edge_seg.iou import agreement_from_cm, confusion_matrix
    from edge_seg.preprocess import resize_mask
    cm = 0
    for ref, mask in zip(reference_masks, masks):
        if mask.shape != ref.shape:
            mask = resize_mask(mask, (ref.shape[1], ref.shape[0]))
        cm = cm + confusion_matrix(ref, mask)
    a = agreement_from_cm(cm)
    return {"miou7": a["miou7"], "pixel_agreement": a["pixel_agreement"]}


def miou_vs_labels(gts, masks) -> float:
    """mIoU(7) against ground truth at the label resolution (masks upsampled NEAREST)."""
    from edge_seg.iou import SegMetrics
    from edge_seg.preprocess import resize_mask
    m = SegMetrics()
    for gt, mask in zip(gts, masks):
        m.update(gt, resize_mask(mask, (gt.shape[1], gt.shape[0])))
    return m.result()["miou7"]


def _open(v, d, t, notes, trust_sidecar: bool = False):
    """The configuration's runner (edge_seg.runner), or None (with a note) when it cannot run here."""
    from edge_seg.runner import open_model
    try:
        runner = open_model(v.path, threads=t, delegate=d, log=lambda m: None, trust_sidecar=trust_sidecar)
    except UserError as e:
        notes.append(f"{v.name} with {d}: {e}")
        return None
    if runner.backend.fallback:
        notes.append(f"{v.name}: delegate {d} does not load here ({runner.backend.fallback}); skipped")
        return None
    if any("cannot disable" in n for n in getattr(runner.backend, "notes", [])):
        notes.append(f"{v.name}: this interpreter cannot turn XNNPACK off; 'cpu' skipped")
        return None
    return runner


def _row(v, d, t, timing: dict, a: dict, scale: str | None = None) -> dict:
    recorded = v.recorded_vs(scale) or {}
    return {
        "model": str(v.path.resolve()), "file": v.name, "variant": v.variant, "kind": v.kind,
        "input": v.size_text, "input_size": list(v.input_size), "input_type": v.input_type,
        "delegate": d, "threads": t, **timing,
        "agreement": a["miou7"], "pixel_agreement": a["pixel_agreement"],
        "recorded_drop": recorded.get("drop"), "recorded_pixels": recorded.get("pixels"),
        "recorded_on": recorded.get("on"),
    }


def measure(plan, frames, ref_masks, gts=None, ref_miou=None, seconds: float = 3.0,
            warmup: int = DEFAULT_WARMUP, progress: bool = True, notes: list | None = None,
            trust_sidecar: bool = False, scale: str | None = None) -> list[dict]:
    """One row per configuration of ``plan`` [(variant, delegate, threads)] that runs here.

    Agreement (and with ``gts`` the mIoU(7) against them) is measured once per variant and
    delegate: the thread count does not change the arithmetic. ``scale``: the sha256 of the
    float model the recorded drops must be measured against (Variant.recorded_vs)."""
    notes = notes if notes is not None else []
    agreements: dict = {}
    failed: set = set()
    rows = []

    with logs.progress(plan, desc="tuning", quiet=not progress, unit="config") as items:
        for v, d, t in items:
            items.set_postfix_str(f"{v.name} {d} x{t}", refresh=False)
            key = (v.path, d)
            if key in failed:
                continue
            runner = _open(v, d, t, notes, trust_sidecar)
            if runner is None:
                failed.add(key)
                continue
            if key not in agreements:
                masks = model_masks(runner, frames)
                agreements[key] = agreement_with(ref_masks, masks)
                if gts is not None:
                    agreements[key]["miou_labels"] = miou_vs_labels(gts, masks)
            timing = time_config(runner, frames, seconds, warmup)
            del runner
            a = agreements[key]
            rows.append(_row(v, d, t, timing, a, scale))
            if gts is not None:
                drop = 100.0 * (ref_miou - a["miou_labels"])
                rows[-1].update(miou7_labels=a["miou_labels"], drop_basis="labels",
                                drop=math.inf if math.isnan(drop) else drop)
    return rows

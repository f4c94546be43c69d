"""Representative-set selection for int8 calibration, recorded as a manifest.

A manifest lists the chosen frames (paths relative to the dataset root), the category
pixel share of the selection next to that of the whole split, the seed and strategy,
the model input size the shares were measured at, and a fingerprint of the split
(edge_seg.manifest.fingerprint). It never holds images.

``stratified`` (default): every non-void category gets a guaranteed number of frames,
rarest category first, choosing among the frames that contain it the ones where it
covers the most pixels (ties broken by the seeded shuffle); the rest of the budget is
filled uniformly at random, so the set stays representative of the split while rare
categories (human, object) are always in it. ``random``: a seeded uniform sample, for
measuring the difference.

Nothing here needs TensorFlow.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_seg import labels
from edge_seg.errors import UserError
from edge_seg.manifest import FORMAT, fingerprint, manifest_root, read_manifest, relative
from edge_seg.backends.metadata import file_sha256
from edge_seg.io.publish import atomic_write_json
from edge_seg.preprocess import DEFAULT_SIZE, resize_mask

STRATEGIES = ("stratified", "random")
MIN_SHARE = 0.002  # a category "occurs" in a frame when it covers at least 0.2% of it


def category_histograms(samples, size, progress=None) -> np.ndarray:
    """(n_frames, 8) pixel counts per category at model size (IGNORE not counted)."""
    from edge_seg.train.datasets import read_mask

    hist = np.zeros((len(samples), labels.NUM_CATEGORIES), np.int64)
    for i, s in enumerate(samples):
        mask = resize_mask(read_mask(s), size)
        hist[i] = np.bincount(mask.ravel(), minlength=256)[:labels.NUM_CATEGORIES]
        if progress:
            progress(i + 1, len(samples))
    return hist


def choose(hist: np.ndarray, n: int, strategy: str, seed: int) -> list[int]:
    """Indices of the selected frames (sorted)."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    total = len(hist)
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    if n >= total:
        return list(range(total))
    if strategy == "random":
        return sorted(int(i) for i in order[:n])

    shares = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    present = shares >= MIN_SHARE
    cats = list(range(1, labels.NUM_CATEGORIES))  # void is never a target
    # rarest first, by the number of frames the category occurs in
    cats.sort(key=lambda c: (present[:, c].sum(), hist[:, c].sum()))
    quota = max(1, n // (2 * len(cats)))  # half the budget guarantees coverage
    chosen: list[int] = []
    taken = np.zeros(total, bool)
    rank = np.empty(total, np.int64)
    rank[order] = np.arange(total)
    for c in cats:
        have = int(present[chosen, c].sum()) if chosen else 0
        need = quota - have
        if need <= 0:
            continue
        candidates = [i for i in np.flatnonzero(present[:, c] & ~taken)]
        # most pixels of c first; the seeded rank breaks ties and decorrelates near-equals
        candidates.sort(key=lambda i: (-round(float(shares[i, c]), 3), rank[i]))
        for i in candidates[:need]:
            chosen.append(int(i))
            taken[i] = True
    for i in order:  # fill the rest uniformly at random
        if len(chosen) >= n:
            break
        if not taken[i]:
            chosen.append(int(i))
            taken[i] = True
    return sorted(chosen[:n])


def _shares(hist: np.ndarray) -> dict[str, float]:
    counts = hist.sum(0)
    total = counts.sum()
    return {name: (float(counts[i] / total) if total else 0.0) for i, name in enumerate(labels.CATEGORY_NAMES)}


def select(root, n: int = 200, strategy: str = "stratified", seed: int = 0,
           size: tuple[int, int] = DEFAULT_SIZE, fmt: str = "auto", split: str = "train",
           progress=None) -> dict:
    """Build the manifest (a dict) for ``n`` frames of ``split`` under ``root``."""
    from edge_seg.train.datasets import load_split, scan

    root = Path(root)
    if n <= 0:
        raise UserError(f"--n {n}: a calibration set needs at least one frame")
    layout = scan(root, fmt)
    samples = load_split(root, layout.fmt, split)
    hist = category_histograms(samples, size, progress)
    picked = choose(hist, n, strategy, seed)
    sel = hist[picked]
    present = (sel / np.maximum(sel.sum(1, keepdims=True), 1)) >= MIN_SHARE
    return {
        "format": FORMAT,
        "dataset": {"root": str(root), "format": layout.fmt, "split": split,
                    "frames_in_split": len(samples), "fingerprint": fingerprint(samples, root)},
        "strategy": strategy,
        "seed": seed,
        "n_requested": n,
        "n": len(picked),
        "input_size": list(size),
        "min_share": MIN_SHARE,
        "pixel_share": _shares(sel),
        "pixel_share_split": _shares(hist),
        "frames_with_category": {name: int(present[:, i].sum()) for i, name in enumerate(labels.CATEGORY_NAMES)},
        "files": [{"image": relative(samples[i].image, root), "mask": relative(samples[i].mask, root)} for i in picked],
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_manifest(path, manifest: dict) -> Path:
    path = Path(path)
    # record the root relative to the manifest when it can be, so a committed manifest
    # works from any clone that has the data beside it (../shared)
    root = Path(manifest["dataset"]["root"]).resolve()
    manifest = json.loads(json.dumps(manifest))
    manifest["dataset"]["root"] = relative(root, path.resolve().parent)
    atomic_write_json(path, manifest)
    return path


# ------------------------------------------------------------------ reading back

def is_manifest(path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == ".json"


def load_manifest_samples(path, input_size=None, root_override=None):
    """(samples, root, manifest) for a manifest, checked before any work: non-empty, made
    for ``input_size`` (W, H), every listed file present, the dataset unchanged."""
    from edge_seg.train.datasets import load_split

    manifest = read_manifest(path)
    if input_size is not None and tuple(manifest.get("input_size", ())) != tuple(input_size):
        got = "x".join(map(str, manifest.get("input_size", ["?"])))
        raise UserError(f"{path}: calibration set made for input {got} but the model takes "
                        f"{input_size[0]}x{input_size[1]}; re-run 'edge-seg calibrate --size "
                        f"{input_size[0]}x{input_size[1]}'")
    root = manifest_root(manifest, path, root_override)
    ds = manifest["dataset"]
    missing = [f["image"] for f in manifest["files"] if not (root / f["image"]).is_file()]
    missing += [f["mask"] for f in manifest["files"] if f.get("mask") and not (root / f["mask"]).is_file()]
    if missing:
        raise UserError(f"{path}: {len(missing)} listed file(s) not found under {root} "
                        f"(first: {missing[0]}); wrong dataset root or the data changed")
    # the split is resolved exactly as `select` did, derived splits (drive-train) included
    split_samples = load_split(root, ds.get("format", "auto"), ds.get("split", "train"))
    if ds.get("fingerprint") and fingerprint(split_samples, root) != ds["fingerprint"]:
        raise UserError(f"{path}: the dataset under {root} differs from the one the manifest was made "
                        f"from (fingerprint mismatch); re-run 'edge-seg calibrate'")
    by_image = {relative(s.image, root): s for s in split_samples}
    unknown = [f["image"] for f in manifest["files"] if f["image"] not in by_image]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} listed frame(s) are not image/mask pairs of the "
                        f"'{ds.get('split', 'train')}' split (first: {unknown[0]})")
    return [by_image[f["image"]] for f in manifest["files"]], root, manifest


def manifest_sha256(path) -> str:
    return file_sha256(path)

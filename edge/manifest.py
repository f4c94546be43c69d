"""Calibration manifests: the one reader of the frame lists ``edge-seg calibrate`` writes.

A manifest (format ``FORMAT``) lists frames as paths relative to a dataset root, with
their masks, and records where the dataset was and a fingerprint of it. ``edge-seg
convert`` calibrates int8 models on it, ``edge-seg tune`` measures on its frames, and
``edge-seg compare`` names the labelled set its accuracy was measured on by the same
fingerprint. Nothing here needs TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edge_seg.errors import UserError

FORMAT = "edge-seg-calibration/1"


def relative(path, root) -> str:
    """``path`` relative to ``root``, with forward slashes (as manifests record paths)."""
    return Path(os.path.relpath(path, root)).as_posix()


def fingerprint(samples, root) -> str:
    """sha256 over the sorted relative paths and byte sizes of every image and mask.

    ``samples`` are objects with ``image`` and ``mask`` paths (``mask`` may be None)."""
    entries = []
    for s in samples:
        for p in (s.image, s.mask):
            if p is not None:
                entries.append(f"{relative(p, root)}\t{Path(p).stat().st_size}")
    h = hashlib.sha256()
    for line in sorted(entries):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def _name(path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def read_manifest(path, option: str | None = None) -> dict:
    """The manifest at ``path``, checked: its format and a non-empty frame list.

    ``option`` (e.g. ``--frames``) prefixes errors so they name what the user typed."""
    path = Path(path)
    name = _name(path, option)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{name}: unreadable calibration manifest ({e})") from None
    got = manifest.get("format") if isinstance(manifest, dict) else None
    if got != FORMAT:
        raise UserError(f"{name}: not a calibration manifest (format {got!r}, expected "
                        f"{FORMAT!r}); make one with 'edge-seg calibrate'")
    files = manifest.get("files")
    if not isinstance(files, list) or not any(isinstance(f, dict) and f.get("image") for f in files):
        raise UserError(f"{name}: the calibration set is empty (no frames listed); re-run "
                        "'edge-seg calibrate' with --n > 0")
    return manifest


def manifest_files(manifest: dict) -> list[dict]:
    """The frame entries ({"image", "mask"?}) of a read manifest."""
    return [f for f in manifest["files"] if isinstance(f, dict) and f.get("image")]


def manifest_root(manifest: dict, manifest_path, root_override=None,
                  root_option: str = "--calibration-root", option: str | None = None) -> Path:
    """The dataset root: ``root_override``, else the recorded root (relative to the
    manifest's folder when relative). UserError naming ``root_option`` when missing."""
    if root_override:
        root = Path(root_override).expanduser()
    else:
        recorded = Path((manifest.get("dataset") or {}).get("root", "."))
        root = recorded if recorded.is_absolute() else Path(manifest_path).resolve().parent / recorded
    if not root.is_dir():
        raise UserError(f"{_name(manifest_path, option)}: dataset root {root} not found; pass the "
                        f"dataset folder with {root_option}")
    return root.resolve()

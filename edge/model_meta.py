"""Model metadata: the sidecar JSON beside every exported model.

``model-int8.tflite`` is described by ``model-int8.json``: input size, normalisation,
categories and colours, variant and quantisation, provenance hashes. The runtime needs
nothing else to run a model. Converters write it (atomically), the runtime reads it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import UserError
from .labels import CATEGORIES
from .outputs import atomic_write_bytes, atomic_write_json  # noqa: F401  (their home; imported from here too)
from .preprocess import NORMALIZATION

FORMAT = "edge-seg/1"


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_meta(input_size: tuple[int, int], variant: str, **extra) -> dict:
    """The fields every model carries; ``extra`` adds provenance, quantisation, etc."""
    meta = {
        "format": FORMAT,
        "input_size": list(input_size),  # [width, height]
        "normalization": dict(NORMALIZATION),
        "categories": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CATEGORIES],
        "variant": variant,
    }
    meta.update(extra)
    return meta


def write_meta(model_path: str | os.PathLike, meta: dict) -> Path:
    meta = dict(meta, model_sha256=file_sha256(model_path))
    path = sidecar_path(model_path)
    atomic_write_json(path, meta)
    return path


def read_meta(model_path: str | os.PathLike) -> dict:
    """The sidecar of ``model_path``, checked; UserError naming the file otherwise."""
    path = sidecar_path(model_path)
    if not path.is_file():
        raise UserError(f"{model_path}: metadata {path.name} is missing beside the model; "
                        f"re-export it with 'edge-seg convert'")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not edge-seg metadata (format {meta.get('format')!r}, expected {FORMAT!r})")
    missing = [k for k in ("input_size", "normalization", "categories") if k not in meta]
    if missing:
        raise UserError(f"{path}: metadata lacks {', '.join(missing)}")
    return meta

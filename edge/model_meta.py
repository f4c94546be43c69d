"""Model metadata: the sidecar JSON beside every exported model.

``model-int8.tflite`` is described by ``model-int8.json``: input size, normalisation,
categories and colours, variant and quantisation, provenance hashes. The runtime needs
nothing else to run a model. Converters write it (atomically), the runtime reads it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import UserError
from .labels import CATEGORIES
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


def _read_umask() -> int:
    # os.umask can only be read by setting it: do it once, at import, not while other
    # threads may be creating files
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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

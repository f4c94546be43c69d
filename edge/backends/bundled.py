"""Which model runs when ``--model`` is not given: the bundled package data.

The models ship inside the package ``edge_seg.models`` (the top-level ``models/`` folder,
see pyproject.toml), each ``X.tflite`` with its sidecar ``X.json``. The first file of
``PREFERENCE`` that is installed is the default.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from edge_seg.errors import UserError

PACKAGE = "edge_seg.models"
PREFERENCE = (
    "unet-mobilenetv2-camvid-idd-int8.tflite",  # the reference int8 model
)


def bundled_models() -> list[Path]:
    """Every .tflite shipped in ``edge_seg.models``."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        return []
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".tflite"))


def default_model() -> Path:
    """The preferred bundled model; UserError when none is installed."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        root = None
    for name in PREFERENCE:
        if root is not None and root.joinpath(name).is_file():
            # package data is installed as plain files (no zip), so this is a real path
            return Path(str(root.joinpath(name)))
    raise UserError("no bundled model is installed (edge_seg.models is empty); "
                    "pass --model PATH.tflite")


def resolve_model(model: str | os.PathLike | None) -> Path:
    """``--model`` as given, or the bundled default; checks the file exists."""
    if model is None or str(model) == "":
        return default_model()
    path = Path(model).expanduser()
    if not path.is_file():
        bundled = [p for p in bundled_models() if p.name in (str(model), f"{model}.tflite")]
        if bundled:
            return bundled[0]
        raise UserError(f"model {model}: no such file")
    return path


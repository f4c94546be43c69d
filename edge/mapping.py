"""The mask-value -> category mapping of folder-layout datasets (``mapping.json`` or
``mapping.yaml`` beside ``images/`` and ``masks/``): one reader for training, evaluation,
calibration and ``edge-seg tune --drop-vs labels``.

A mapping is an object of mask value (0..255) -> category name or ``"ignore"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import labels
from .errors import UserError

NAMES = ("mapping.json", "mapping.yaml", "mapping.yml")


def read_mapping(path: Path) -> tuple:
    """(mask value, category id or IGNORE) pairs, from JSON or YAML."""
    path = Path(path)
    try:
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise UserError(f"{path}: reading a YAML mapping needs PyYAML (pip install pyyaml), "
                                "or write it as mapping.json") from None
            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable mapping file ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: mapping must be an object of mask value -> category name")
    pairs = []
    for value, name in raw.items():
        try:
            value = int(value)
        except ValueError:
            raise UserError(f"{path}: mask value {value!r} is not an integer") from None
        if not 0 <= value <= 255:
            raise UserError(f"{path}: mask value {value} outside 0..255")
        name = str(name).lower()
        if name == "ignore":
            pairs.append((value, labels.IGNORE))
        elif name in labels.CATEGORY_IDS:
            pairs.append((value, labels.CATEGORY_IDS[name]))
        else:
            raise UserError(f"{path}: unknown category {name!r} for value {value}; use one of "
                            f"{', '.join(labels.CATEGORY_NAMES)} or 'ignore'")
    return tuple(pairs)


def find_mapping(root: Path) -> Path | None:
    """The mapping file of a folder dataset, or None."""
    for name in NAMES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def mapping_lut(pairs) -> np.ndarray:
    """256-entry lookup table: raw mask value -> category (UNKNOWN where unmapped)."""
    lut = np.full(256, labels.UNKNOWN, np.uint8)
    for value, cat in pairs:
        lut[value] = cat
    return lut

"""The mask-value -> category mapping of folder-layout datasets (``mapping.json`` or
``mapping.yaml`` beside ``images/`` and ``masks/``): one reader for training, evaluation,
calibration and ``edge-seg tune --drop-vs labels``; and the encoding of set-valued
(coarse) labels in category masks.

A mapping is an object of mask value (0..255) -> category name, ``"ignore"``, or a list
of category names. A list says "one of these categories" (a coarse label such as IDD's
"far objects" = construction or nature); a one-member list is an exact label.

Set-valued labels in a category mask: a mask holds catIds 0..7 for exact labels,
IGNORE (255) for unlabelled pixels and, for a set of 2..6 non-void categories, the code
``SET_BASE + bits`` (bit ``c - 1`` set for category ``c``), i.e. 130..253. The codes are
plain uint8 values, so NEAREST resizes, flips, crops and IGNORE padding carry them
unchanged, and code that only knows exact labels (``confusion_matrix`` counts values
below 8) leaves them unscored. A set of all seven scored categories constrains nothing
and is stored as IGNORE; void cannot be part of a set (a void pixel is never scored).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_seg import labels
from edge_seg.errors import UserError

NAMES = ("mapping.json", "mapping.yaml", "mapping.yml")

SET_BASE = 127
_SCORED = tuple(range(1, labels.NUM_CATEGORIES))  # the categories a set may name
_ALL_SCORED_BITS = (1 << len(_SCORED)) - 1


def set_code(categories) -> int:
    """Mask value for "one of ``categories``" (catIds): the catId itself for one member,
    IGNORE for all seven scored categories, else ``SET_BASE + bits``."""
    cats = sorted(set(int(c) for c in categories))
    if not cats:
        raise ValueError("an empty set of categories")
    if any(c not in _SCORED for c in cats):
        raise ValueError(f"a set of categories may only name scored categories "
                         f"({', '.join(labels.CATEGORY_NAMES[1:])}), got {cats}")
    if len(cats) == 1:
        return cats[0]
    bits = sum(1 << (c - 1) for c in cats)
    return labels.IGNORE if bits == _ALL_SCORED_BITS else SET_BASE + bits


def set_members(code: int) -> tuple[int, ...]:
    """The catIds a mask value allows: one for an exact label, several for a set code,
    none for IGNORE and values that are neither."""
    code = int(code)
    if 0 <= code < labels.NUM_CATEGORIES:
        return (code,)
    bits = code - SET_BASE
    if code in (labels.IGNORE, labels.UNKNOWN) or not 0 < bits < _ALL_SCORED_BITS or bits & (bits - 1) == 0:
        return ()
    return tuple(c for c in _SCORED if bits >> (c - 1) & 1)


def allowed_table(n: int = labels.NUM_CATEGORIES) -> np.ndarray:
    """(256, n) bool: row v marks the categories mask value v allows (one row per exact
    label, several per set code, none for IGNORE and unused values)."""
    table = np.zeros((256, n), bool)
    for v in range(256):
        for c in set_members(v):
            if c < n:
                table[v, c] = True
    return table


def set_code_mask(mask: np.ndarray) -> np.ndarray:
    """True where ``mask`` holds a set-valued label."""
    return _IS_SET[mask]


def set_name(code: int) -> str:
    """'construction|nature' for a set code."""
    return "|".join(labels.CATEGORY_NAMES[c] for c in set_members(code))


_IS_SET = np.array([len(set_members(v)) > 1 for v in range(256)])


def _category(path: Path, value: int, name) -> int:
    name = str(name).lower()
    if name in labels.CATEGORY_IDS:
        return labels.CATEGORY_IDS[name]
    raise UserError(f"{path}: unknown category {name!r} for value {value}; use one of "
                    f"{', '.join(labels.CATEGORY_NAMES)}, 'ignore' or a list of categories")


def read_mapping(path: Path) -> tuple:
    """(mask value, mask code) pairs, from JSON or YAML: the code is a catId, IGNORE, or
    a set code (see :func:`set_code`) for a list of categories."""
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
        if isinstance(name, (list, tuple)):
            cats = [_category(path, value, n) for n in name]
            try:
                pairs.append((value, set_code(cats)))
            except ValueError:
                raise UserError(f"{path}: value {value} lists {list(name)}: a list names one or more "
                                f"of {', '.join(labels.CATEGORY_NAMES[1:])} (void and 'ignore' "
                                f"cannot be part of a list)") from None
        elif str(name).lower() == "ignore":
            pairs.append((value, labels.IGNORE))
        else:
            pairs.append((value, _category(path, value, name)))
    return tuple(pairs)


def find_mapping(root: Path) -> Path | None:
    """The mapping file of a folder dataset, or None."""
    for name in NAMES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def mapping_lut(pairs) -> np.ndarray:
    """256-entry lookup table: raw mask value -> mask code (UNKNOWN where unmapped)."""
    lut = np.full(256, labels.UNKNOWN, np.uint8)
    for value, cat in pairs:
        lut[value] = cat
    return lut

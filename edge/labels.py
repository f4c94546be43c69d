"""The one label table every tool reads.

Eight Cityscapes categories in catId order, the official Cityscapes labelId table
(as in cityscapesScripts ``helpers/labels.py``) and the CamVid class table, each
mapped onto the categories. Training, evaluation, conversion and the runtime all
take their lookup tables from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255  # mask value that no metric or loss counts


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    color: tuple[int, int, int]  # RGB


CATEGORIES = (
    Category(0, "void", (0, 0, 0)),
    Category(1, "flat", (128, 64, 128)),
    Category(2, "construction", (70, 70, 70)),
    Category(3, "object", (250, 170, 30)),
    Category(4, "nature", (107, 142, 35)),
    Category(5, "sky", (70, 130, 180)),
    Category(6, "human", (220, 20, 60)),
    Category(7, "vehicle", (0, 0, 142)),
)
NUM_CATEGORIES = len(CATEGORIES)
CATEGORY_NAMES = tuple(c.name for c in CATEGORIES)
CATEGORY_IDS = {c.name: c.id for c in CATEGORIES}
VOID = 0
INSTANCE_CATEGORIES = ("human", "vehicle")  # those scored by iIoU


@dataclass(frozen=True)
class CityscapesLabel:
    name: str
    id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool

    @property
    def cat_id(self) -> int:
        return CATEGORY_IDS[self.category]


# name, labelId, category, hasInstances, ignoreInEval -- the official table.
CITYSCAPES_LABELS = tuple(CityscapesLabel(*row) for row in (
    ("unlabeled",             0, "void",         False, True),
    ("ego vehicle",           1, "void",         False, True),
    ("rectification border",  2, "void",         False, True),
    ("out of roi",            3, "void",         False, True),
    ("static",                4, "void",         False, True),
    ("dynamic",               5, "void",         False, True),
    ("ground",                6, "void",         False, True),
    ("road",                  7, "flat",         False, False),
    ("sidewalk",              8, "flat",         False, False),
    ("parking",               9, "flat",         False, True),
    ("rail track",           10, "flat",         False, True),
    ("building",             11, "construction", False, False),
    ("wall",                 12, "construction", False, False),
    ("fence",                13, "construction", False, False),
    ("guard rail",           14, "construction", False, True),
    ("bridge",               15, "construction", False, True),
    ("tunnel",               16, "construction", False, True),
    ("pole",                 17, "object",       False, False),
    ("polegroup",            18, "object",       False, True),
    ("traffic light",        19, "object",       False, False),
    ("traffic sign",         20, "object",       False, False),
    ("vegetation",           21, "nature",       False, False),
    ("terrain",              22, "nature",       False, False),
    ("sky",                  23, "sky",          False, False),
    ("person",               24, "human",        True,  False),
    ("rider",                25, "human",        True,  False),
    ("car",                  26, "vehicle",      True,  False),
    ("truck",                27, "vehicle",      True,  False),
    ("bus",                  28, "vehicle",      True,  False),
    ("caravan",              29, "vehicle",      True,  True),
    ("trailer",              30, "vehicle",      True,  True),
    ("train",                31, "vehicle",      True,  False),
    ("motorcycle",           32, "vehicle",      True,  False),
    ("bicycle",              33, "vehicle",      True,  False),
    ("license plate",        -1, "vehicle",      False, True),
))

# One labelId per category, used to write predictions in Cityscapes format.
CITYSCAPES_REPRESENTATIVE_ID = {
    "void": 0, "flat": 7, "construction": 11, "object": 17,
    "nature": 21, "sky": 23, "human": 24, "vehicle": 26,
}

# Mean instance size (pixels) per class at full Cityscapes resolution, from the
# official evaluator; iIoU weights each instance by its class's size over its own.
CITYSCAPES_AVG_INSTANCE_SIZE = {
    "bicycle": 4672.3249222261, "caravan": 36771.8241758242, "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518, "bus": 35732.1511111111, "train": 67583.7075812274,
    "car": 12794.0202738185, "person": 3462.4756337644, "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}

# CamVid (SegNet layout) class id -> category, see the dataset's README.
CAMVID_CLASSES = (
    ("Sky", "sky"), ("Building", "construction"), ("Pole", "object"),
    ("Road", "flat"), ("Pavement", "flat"), ("Tree", "nature"),
    ("SignSymbol", "object"), ("Fence", "construction"), ("Car", "vehicle"),
    ("Pedestrian", "human"), ("Bicyclist", "human"), ("Unlabelled", "void"),
)

UNKNOWN = 254  # LUT entry for a raw mask value the table does not know


def _lut(pairs) -> np.ndarray:
    lut = np.full(256, UNKNOWN, np.uint8)
    for raw, cat in pairs:
        lut[raw] = cat
    return lut


def cityscapes_lut(for_eval: bool = False) -> np.ndarray:
    """labelId -> catId. With ``for_eval`` the labels the official benchmark
    ignores outside void (parking, rail track, guard rail, caravan...) map to IGNORE,
    while void stays 0 so mIoU(8) can still score it."""
    pairs = []
    for label in CITYSCAPES_LABELS:
        if label.id < 0:
            continue
        ignored = for_eval and label.ignore_in_eval and label.category != "void"
        pairs.append((label.id, IGNORE if ignored else label.cat_id))
    return _lut(pairs)


def camvid_lut() -> np.ndarray:
    return _lut((i, CATEGORY_IDS[cat]) for i, (_, cat) in enumerate(CAMVID_CLASSES))


def identity_lut() -> np.ndarray:
    """For masks already in catIds (synthetic scenes, converted data)."""
    return _lut([(i, i) for i in range(NUM_CATEGORIES)] + [(IGNORE, IGNORE)])


def colors_rgb() -> np.ndarray:
    """(8, 3) uint8 palette in RGB order."""
    return np.array([c.color for c in CATEGORIES], np.uint8)


def colors_bgr() -> np.ndarray:
    return colors_rgb()[:, ::-1].copy()


def apply_lut(raw: np.ndarray, lut: np.ndarray, what: str = "mask") -> np.ndarray:
    """Map raw mask values to categories; unknown values raise ValueError naming them."""
    if raw.dtype != np.uint8:
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            raise ValueError(f"{what}: values outside 0..255 ({raw.min()}..{raw.max()})")
        raw = raw.astype(np.uint8)
    out = lut[raw]
    if (out == UNKNOWN).any():
        bad = sorted(int(v) for v in np.unique(raw[out == UNKNOWN]))[:10]
        raise ValueError(f"{what}: unknown label values {bad}; map them in the label table "
                         f"or a --mapping file")
    return out

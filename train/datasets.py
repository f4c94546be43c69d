"""Dataset readers: Cityscapes, CamVid (SegNet layout) and a generic image/mask folder.

Every reader yields :class:`Sample` records; :func:`read_pair` turns one into an RGB
image and a category mask at model size through the shared preprocessing. Nothing
here needs TensorFlow.

Split policy for Cityscapes: the official test masks are unusable, so the official
``val`` serves as our ``test`` split and a deterministic, city-disjoint part of the
official ``train`` (every sixth city in sorted order) serves as ``val``.

A folder dataset without a ``val`` folder gets a deterministic share of its ``train``
frames as ``val``, whole recordings at a time (see :func:`holdout`).

Drive-disjoint splits (``drive-train`` / ``drive-val``, every format): validation frames
come from recordings (drives) that no training frame comes from. A frame's drive is its
name's prefix before the first ``_`` (CamVid ``0006R0_f02070``, IDD-Lite ``123_004567``).
CamVid pools its ``train`` and ``val`` frames and holds out the largest drive that its
official ``val`` does not contain (0006R0 in the SegNet release: 101 frames); its official
``val`` shares drive 0016E5 with ``train``. Cityscapes' ``val`` (whole cities) and a folder
dataset's ``val`` are already disjoint, so there ``drive-*`` equal ``train`` / ``val``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_seg import labels
from edge_seg.errors import UserError
from edge_seg.mapping import find_mapping, mapping_lut, read_mapping
from edge_seg.preprocess import resize_image, resize_mask

FORMATS = ("cityscapes", "camvid", "folder")
SPLITS = ("train", "val", "test")
DRIVE_SPLITS = ("drive-train", "drive-val")
HOLDOUT_FRACTION = 0.15
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None
    name: str
    fmt: str
    instances: Path | None = None
    city: str | None = None
    mapping: tuple = field(default=(), compare=False, repr=False)  # folder format: (value, category)


@dataclass
class Layout:
    """What a dataset root holds, split by split, including what doesn't pair up."""
    fmt: str
    root: Path
    splits: dict[str, list[Sample]]
    orphan_images: list[Path] = field(default_factory=list)
    orphan_masks: list[Path] = field(default_factory=list)
    derived: dict[str, list[Sample]] = field(default_factory=dict)  # other views of the same frames


# ---------------------------------------------------------------- format detection

def detect_format(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if (root / "train").is_dir() and (root / "trainannot").is_dir() or \
            (root / "val").is_dir() and (root / "valannot").is_dir():
        return "camvid"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    raise UserError(f"{root}: not a Cityscapes (leftImg8bit/ + gtFine/), CamVid (train/ + trainannot/) "
                    f"or folder (images/ + masks/) dataset; check the path")


def scan(root, fmt: str = "auto", **folder_options) -> Layout:
    root = Path(root)
    fmt = detect_format(root) if fmt == "auto" else fmt
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    if fmt == "cityscapes":
        layout = _scan_cityscapes(root)
    elif fmt == "camvid":
        layout = _scan_camvid(root)
    elif fmt == "folder":
        layout = _scan_folder(root, **folder_options)
    else:
        raise UserError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    layout.derived = drive_splits(layout)
    return layout


def load_split(root, fmt: str = "auto", split: str = "train", **folder_options) -> list[Sample]:
    layout = scan(root, fmt, **folder_options)
    samples = layout.splits.get(split) or layout.derived.get(split, [])
    if not samples:
        have = ", ".join(f"{k} ({len(v)})" for k, v in {**layout.splits, **layout.derived}.items() if v)
        raise UserError(f"{root}: no '{split}' image/mask pairs in this {layout.fmt} dataset "
                        f"(splits found: {have or 'none'})")
    return samples


def drive_of(sample: Sample) -> str:
    """The recording a frame comes from: its name's prefix before the first '_'."""
    return sample.name.split("_", 1)[0]


def drive_splits(layout: Layout) -> dict[str, list[Sample]]:
    """``drive-train`` / ``drive-val``: validation drives that no training frame comes from."""
    train, val = layout.splits.get("train", []), layout.splits.get("val", [])
    if layout.fmt != "camvid":
        return {"drive-train": train, "drive-val": val}
    pooled = train + val
    val_drives = {drive_of(s) for s in val}
    sizes: dict[str, int] = {}
    for s in train:
        if drive_of(s) not in val_drives:
            sizes[drive_of(s)] = sizes.get(drive_of(s), 0) + 1
    if not sizes:  # every training drive also appears in val: nothing to hold out
        return {"drive-train": [], "drive-val": []}
    held = min(sizes, key=lambda d: (-sizes[d], d))
    return {"drive-train": [s for s in pooled if drive_of(s) != held],
            "drive-val": [s for s in pooled if drive_of(s) == held]}


def holdout(samples: list[Sample], fraction: float = HOLDOUT_FRACTION) -> tuple[list[Sample], list[Sample]]:
    """(train, val): a deterministic ``fraction`` of the drives (by a hash of the drive
    name) becomes val, so no recording is in both; when the names carry no usable drive
    prefix (one drive, or a hash that puts all of them on one side), frame by frame."""
    def pick(key):
        return [zlib.crc32(key(s).encode()) % 1000 < fraction * 1000 for s in samples]

    is_val = pick(drive_of)
    if all(is_val) or not any(is_val):
        is_val = pick(lambda s: s.name)
    return ([s for s, v in zip(samples, is_val) if not v], [s for s, v in zip(samples, is_val) if v])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS) if folder.is_dir() else []


# ---------------------------------------------------------------- Cityscapes

def validation_cities(cities) -> set[str]:
    """Deterministic, city-disjoint validation part of the official train split."""
    return set(sorted(cities)[::6])


def _scan_cityscapes(root: Path) -> Layout:
    layout = Layout("cityscapes", root, {s: [] for s in SPLITS})
    official = {}
    for split in ("train", "val"):
        img_dir = root / "leftImg8bit" / split
        if not img_dir.is_dir():
            continue
        samples = []
        for image in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            city = image.parent.name
            stem = image.name[: -len("_leftImg8bit.png")]
            gt_dir = root / "gtFine" / split / city
            mask = gt_dir / f"{stem}_gtFine_labelIds.png"
            inst = gt_dir / f"{stem}_gtFine_instanceIds.png"
            if not mask.is_file():
                layout.orphan_images.append(image)
                continue
            samples.append(Sample(image, mask, stem, "cityscapes", inst if inst.is_file() else None, city))
        for mask in sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png")):
            stem = mask.name[: -len("_gtFine_labelIds.png")]
            if not (root / "leftImg8bit" / split / mask.parent.name / f"{stem}_leftImg8bit.png").is_file():
                layout.orphan_masks.append(mask)
        official[split] = samples
    held_out = validation_cities({s.city for s in official.get("train", [])})
    layout.splits["train"] = [s for s in official.get("train", []) if s.city not in held_out]
    layout.splits["val"] = [s for s in official.get("train", []) if s.city in held_out]
    layout.splits["test"] = official.get("val", [])
    return layout


# ---------------------------------------------------------------- CamVid

def _scan_camvid(root: Path) -> Layout:
    layout = Layout("camvid", root, {})
    for split in SPLITS:
        img_dir, ann_dir = root / split, root / f"{split}annot"
        images = {p.stem: p for p in _images_in(img_dir)}
        masks = {p.stem: p for p in _images_in(ann_dir)}
        layout.splits[split] = [Sample(images[k], masks[k], k, "camvid") for k in sorted(images) if k in masks]
        layout.orphan_images += [images[k] for k in sorted(images) if k not in masks]
        layout.orphan_masks += [masks[k] for k in sorted(masks) if k not in images]
    return layout


# ---------------------------------------------------------------- folder

def _find_mapping(root: Path, mapping) -> Path:
    if mapping:
        path = Path(mapping)
        if not path.is_file():
            raise UserError(f"{path}: mapping file not found")
        return path
    found = find_mapping(root)
    if found:
        return found
    raise UserError(f"{root}: folder datasets need a mapping file (mapping.json or mapping.yaml: "
                    f"mask value -> category name or 'ignore') in that folder")


def _scan_folder(root: Path, image_suffix: str = "", mask_suffix: str = "", mapping=None,
                 val_fraction: float = 0.15) -> Layout:
    pairs = read_mapping(_find_mapping(root, mapping))
    layout = Layout("folder", root, {s: [] for s in SPLITS})
    subsplits = [s for s in SPLITS if (root / "images" / s).is_dir()]
    groups = {s: (root / "images" / s, root / "masks" / s) for s in subsplits} or \
        {"all": (root / "images", root / "masks")}
    for split, (img_dir, mask_dir) in groups.items():
        images = {_strip(p.stem, image_suffix): p for p in _images_in(img_dir)}
        masks = {_strip(p.stem, mask_suffix): p for p in _images_in(mask_dir)}
        samples = [Sample(images[k], masks[k], k, "folder", mapping=pairs) for k in sorted(images) if k in masks]
        layout.orphan_images += [images[k] for k in sorted(images) if k not in masks]
        layout.orphan_masks += [masks[k] for k in sorted(masks) if k not in images]
        layout.splits["train" if split == "all" else split] = samples
    if layout.splits["train"] and "val" not in subsplits:
        # no val folder: a deterministic share of the training drives becomes validation
        layout.splits["train"], layout.splits["val"] = holdout(layout.splits["train"], val_fraction)
    return layout


def _strip(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem


# ---------------------------------------------------------------- reading

def label_lut(sample: Sample, purpose: str = "train") -> np.ndarray:
    """Raw mask value -> category for this sample's format. ``purpose='eval'`` maps the
    labels the official Cityscapes benchmark ignores to IGNORE."""
    if sample.fmt == "cityscapes":
        return labels.cityscapes_lut(for_eval=purpose == "eval")
    if sample.fmt == "camvid":
        return labels.camvid_lut()
    if sample.fmt == "folder":
        return mapping_lut(sample.mapping)
    return labels.identity_lut()


def read_image(path: Path) -> np.ndarray:
    """RGB uint8, or UserError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: unreadable image (missing, corrupt or not an image); "
                        f"fix or remove it ('edge-seg data check' lists every such file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(sample: Sample, purpose: str = "train") -> np.ndarray:
    """Category mask at label resolution (uint8 catIds, IGNORE=255)."""
    raw = cv2.imread(str(sample.mask), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UserError(f"{sample.mask}: unreadable mask (missing, corrupt or not an image); "
                        f"fix or remove it ('edge-seg data check' lists every such file)")
    if raw.ndim != 2:
        raise UserError(f"{sample.mask}: mask has {raw.shape[2]} channels; expected one channel of label ids")
    try:
        return labels.apply_lut(raw, label_lut(sample, purpose), what=str(sample.mask))
    except ValueError as e:
        raise UserError(str(e)) from None


def read_instances(sample: Sample) -> np.ndarray | None:
    if sample.instances is None:
        return None
    inst = cv2.imread(str(sample.instances), cv2.IMREAD_UNCHANGED)
    if inst is None or inst.ndim != 2:
        raise UserError(f"{sample.instances}: unreadable instance map")
    return inst.astype(np.int32)


def read_pair(sample: Sample, size: tuple[int, int] | None = None, purpose: str = "train"):
    """(RGB uint8, category mask uint8), both at ``size`` (W, H) when given."""
    image = read_image(sample.image)
    mask = read_mask(sample, purpose)
    if image.shape[:2] != mask.shape:
        raise UserError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                        f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}")
    if size is not None:
        image, mask = resize_image(image, size), resize_mask(mask, size)
    return image, mask

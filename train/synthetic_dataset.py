"""Write synthetic street scenes (:mod:`scenes`) to disk as a dataset.

A dataset-free fixture for the readers, ``edge-seg data check``, training and
evaluation: every layout the readers understand, with exact labels.

* ``"cityscapes"``: ``leftImg8bit/<split>/<city>/<city>_000000_<k>_leftImg8bit.png`` plus
  ``gtFine/<split>/<city>/<same stem>_gtFine_labelIds.png`` (8-bit) and
  ``..._gtFine_instanceIds.png`` (16-bit, ``labelId*1000+k`` on person/car instances).
  The official ``train`` split is spread round-robin over 2 to 6 cities
  (:data:`TRAIN_CITIES`, in sorted order; 2 below 12 images, then one city per 4 images)
  so that the readers' city-disjoint validation (the sorted cities ``[::6]``, i.e. the
  first one) takes images from the train split; ``val`` has its own city (which the
  readers use as test) and so has ``test`` when ``n_test`` > 0.
* ``"camvid"``: the SegNet layout ``train/`` + ``trainannot/``, ``val/`` + ``valannot/``
  (+ ``test/`` + ``testannot/``), masks in CamVid class ids 0..11 (see
  :data:`CAMVID_FROM_LABELID`), and ``edge_seg.train.txt`` / ``val.txt`` (/ ``test.txt``) listing
  ``"train/x.png trainannot/x.png"`` per line.
* ``"folder"``: ``images/<stem>.jpg`` + ``masks/<stem>.png`` with arbitrary raw values
  (:data:`FOLDER_VALUES`: 10, 11, 20, ...; the ego-vehicle hood is 255 = "ignore") and
  ``mapping.json`` (raw value -> category name or "ignore"). All splits go into one
  folder (the readers split it by a hash of the stem) unless ``split_dirs=True``, which
  writes ``images/<split>/`` and ``masks/<split>/``.

Scene seeds derive from ``(seed, split, index)``, so a dataset is reproducible and
its splits never share a scene. numpy and OpenCV only (no TensorFlow)::

    python -m edge_seg.train.synthetic_dataset /tmp/synth --layout cityscapes --train 12 --val 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from edge_seg import labels
from edge_seg.scenes import render_scene

LAYOUTS = ("cityscapes", "camvid", "folder")
TRAIN_CITIES = ("synthtown", "synthville", "synthwick", "synthworth", "synthyard", "synthzell")
VAL_CITY = "synthburg"
TEST_CITY = "synthdorf"
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

# Cityscapes labelId -> CamVid class id (edge_seg.labels.CAMVID_CLASSES); 11 (Unlabelled) otherwise.
_CAMVID_PAIRS = {7: 3, 9: 3, 8: 4, 11: 1, 12: 1, 15: 1, 16: 1, 13: 7, 14: 7, 17: 2, 18: 2, 19: 6, 20: 6,
                 21: 5, 22: 5, 23: 0, 24: 9, 25: 10, 32: 10, 33: 10, 26: 8, 27: 8, 28: 8, 29: 8, 30: 8, 31: 8}
CAMVID_FROM_LABELID = np.full(256, 11, np.uint8)
for _lab, _cls in _CAMVID_PAIRS.items():
    CAMVID_FROM_LABELID[_lab] = _cls

# Cityscapes labelId -> raw mask value of the "folder" layout. Labels the generator
# draws have their own value; any other label gets 10 * catId + 9.
_FOLDER_PAIRS = {0: 0, 4: 0, 1: 255, 7: 10, 8: 11, 11: 20, 12: 21, 13: 22, 17: 30, 19: 31, 20: 32,
                 21: 40, 22: 41, 23: 50, 24: 60, 26: 70}
FOLDER_VALUES = np.zeros(256, np.uint8)
for _l in labels.CITYSCAPES_LABELS:
    if _l.id >= 0:
        FOLDER_VALUES[_l.id] = _FOLDER_PAIRS.get(_l.id, 10 * _l.cat_id + 9)
FOLDER_MAPPING = {}  # raw value -> category name or "ignore"
for _l in labels.CITYSCAPES_LABELS:
    if _l.id >= 0:
        _v = int(FOLDER_VALUES[_l.id])
        FOLDER_MAPPING[_v] = "ignore" if _v == 255 else _l.category
FOLDER_MAPPING = dict(sorted(FOLDER_MAPPING.items()))

_MANAGED = {
    "cityscapes": ("leftImg8bit", "gtFine"),
    "camvid": ("train", "trainannot", "val", "valannot", "test", "testannot", "edge_seg.train.txt", "val.txt", "test.txt"),
    "folder": ("images", "masks", "mapping.json"),
}


def scene_seed(seed: int, split: str, index: int) -> int:
    """The render_scene seed of image ``index`` of ``split``."""
    return int(np.random.SeedSequence([int(seed), _SPLIT_IDS[split], int(index)]).generate_state(1)[0])


def train_cities(n_train: int) -> tuple[str, ...]:
    """Cities of the official train split for ``n_train`` images (sorted)."""
    n = 1 if n_train < 2 else min(max(2, n_train // 4), len(TRAIN_CITIES))
    return TRAIN_CITIES[:n]


def _write_image(path: Path, array: np.ndarray, jpeg: bool = False) -> None:
    """Encode and write via a temporary file + os.replace (no half-written files)."""
    ext = ".jpg" if jpeg else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else []
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_dataset(root, layout: str, n_train: int, n_val: int, size=(512, 256), seed: int = 0,
                  n_test: int = 0, *, split_dirs: bool = False, overwrite: bool = False) -> Path:
    """Render ``n_train`` / ``n_val`` / ``n_test`` scenes of ``size`` (W, H) into ``root``
    in ``layout`` ("cityscapes", "camvid" or "folder"); returns ``root`` as a Path.

    Refuses (FileExistsError) when ``root`` already holds files of that layout, unless
    ``overwrite``, which first removes just those (so no stale files linger).
    ``split_dirs`` applies to the folder layout only (see the module doc)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"image counts must be >= 0, got {counts}")
    size = (int(size[0]), int(size[1]))
    root = Path(root)
    existing = [root / name for name in _MANAGED[layout] if (root / name).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(f"{root}: already holds a {layout} dataset ({existing[0].name}); "
                                  f"pass overwrite=True to replace it")
        for p in existing:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    root.mkdir(parents=True, exist_ok=True)
    writer = {"cityscapes": _write_cityscapes, "camvid": _write_camvid, "folder": _write_folder}[layout]
    writer(root, counts, size, seed, split_dirs)
    return root


def _scenes(split: str, n: int, size, seed: int):
    for i in range(n):
        yield i, render_scene(scene_seed(seed, split, i), size)


def _write_cityscapes(root: Path, counts, size, seed, _split_dirs):
    for split, n in counts.items():
        cities = train_cities(n) if split == "train" else ((VAL_CITY,) if split == "val" else (TEST_CITY,))
        for i, scene in _scenes(split, n, size, seed):
            city = cities[i % len(cities)]
            stem = f"{city}_000000_{i // len(cities):06d}"
            _write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", scene.image)
            gt = root / "gtFine" / split / city
            _write_image(gt / f"{stem}_gtFine_labelIds.png", scene.label_ids)
            _write_image(gt / f"{stem}_gtFine_instanceIds.png", scene.instance_ids.astype(np.uint16))


def _write_camvid(root: Path, counts, size, seed, _split_dirs):
    for split, n in counts.items():
        if n == 0 and split == "test":
            continue
        lines = []
        for i, scene in _scenes(split, n, size, seed):
            name = f"synth_{split}_{i:05d}.png"
            _write_image(root / split / name, scene.image)
            _write_image(root / f"{split}annot" / name, CAMVID_FROM_LABELID[scene.label_ids])
            lines.append(f"{split}/{name} {split}annot/{name}\n")
        (root / split).mkdir(exist_ok=True)
        (root / f"{split}annot").mkdir(exist_ok=True)
        _write_text(root / f"{split}.txt", "".join(lines))


def _write_folder(root: Path, counts, size, seed, split_dirs):
    for split, n in counts.items():
        sub = split if split_dirs else ""
        for i, scene in _scenes(split, n, size, seed):
            stem = f"synth_{split}_{i:05d}"
            _write_image(root / "images" / sub / f"{stem}.jpg", scene.image, jpeg=True)
            _write_image(root / "masks" / sub / f"{stem}.png", FOLDER_VALUES[scene.label_ids])
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    _write_text(root / "mapping.json", json.dumps({str(k): v for k, v in FOLDER_MAPPING.items()}, indent=1) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a synthetic street-scene dataset.")
    ap.add_argument("root")
    ap.add_argument("--layout", choices=LAYOUTS, default="cityscapes")
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--val", type=int, default=6)
    ap.add_argument("--test", type=int, default=0)
    ap.add_argument("--size", default="512x256", help="WIDTHxHEIGHT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-dirs", action="store_true", help="folder layout: images/<split>/, masks/<split>/")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    root = write_dataset(a.root, a.layout, a.train, a.val, (w, h), a.seed, a.test,
                         split_dirs=a.split_dirs, overwrite=a.overwrite)
    print(f"{root}: {a.layout} dataset, {a.train} train / {a.val} val / {a.test} test images at {w}x{h}")


if __name__ == "__main__":
    main()

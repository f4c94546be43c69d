"""Dataset readers, data check/preview and bad input."""
import json

import cv2
import numpy as np
import pytest

from edge_seg import labels
from edge_seg.errors import UserError
from edge_seg.preprocess import resize_mask
from edge_seg.train import datasets

from conftest import camvid_with_drives, edge_seg


def test_cityscapes_reader_maps_the_real_frame(cityscapes_sample):
    samples = datasets.load_split(cityscapes_sample, "auto", "test")
    assert len(samples) == 1 and samples[0].city == "frankfurt"
    raw = cv2.imread(str(samples[0].mask), cv2.IMREAD_UNCHANGED)
    cats = datasets.read_mask(samples[0])
    for label_id, category in [(7, "flat"), (8, "flat"), (24, "human"), (26, "vehicle"), (11, "construction")]:
        where = raw == label_id
        assert where.any(), label_id
        assert (cats[where] == labels.CATEGORY_IDS[category]).all()
    image, mask = datasets.read_pair(samples[0], (128, 64))
    assert image.shape == (64, 128, 3) and mask.shape == (64, 128)


def test_camvid_counts(camvid_root):
    layout = datasets.scan(camvid_root)
    assert layout.fmt == "camvid"
    assert len(layout.splits["train"]) == 367 and len(layout.splits["val"]) == 101


def test_data_check_camvid_shares(camvid_root):
    out = edge_seg("data", "check", camvid_root)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.split()}
    assert rows["train"][0] == "367" and rows["val"][0] == "101"
    expected = {"flat": 36.2, "construction": 24.4, "sky": 16.9, "nature": 9.7, "vehicle": 5.9,
                "void": 4.0, "object": 2.2, "human": 0.9}
    for name, share in expected.items():
        assert abs(float(rows[name][0]) - share) <= 0.5, (name, rows[name])


def test_cityscapes_split_policy_is_city_disjoint(synthetic_cityscapes):
    layout = datasets.scan(synthetic_cityscapes)
    train_cities = {s.city for s in layout.splits["train"]}
    val_cities = {s.city for s in layout.splits["val"]}
    assert train_cities and val_cities and not train_cities & val_cities
    assert layout.splits["test"]  # the official val split serves as test
    assert datasets.scan(synthetic_cityscapes).splits == layout.splits  # deterministic


def test_synthetic_camvid_layout_reads(synthetic_camvid):
    samples = datasets.load_split(synthetic_camvid, "auto", "train")
    image, mask = datasets.read_pair(samples[0])
    assert image.shape[:2] == mask.shape and set(np.unique(mask)) <= set(range(8))


def test_folder_layout_with_mapping(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(20):
        cv2.imwrite(str(tmp_path / "images" / f"f{i:02d}.jpg"), np.full((32, 64, 3), i * 10, np.uint8))
        mask = np.full((32, 64), 10, np.uint8)
        mask[:8] = 40
        mask[-4:] = 99
        cv2.imwrite(str(tmp_path / "masks" / f"f{i:02d}_mask.png"), mask)
    (tmp_path / "mapping.json").write_text(json.dumps({"10": "flat", "40": "sky", "99": "ignore"}))
    layout = datasets.scan(tmp_path, mask_suffix="_mask")
    assert len(layout.splits["train"]) + len(layout.splits["val"]) == 20 and layout.splits["val"]
    _, mask = datasets.read_pair(layout.splits["train"][0])
    assert set(np.unique(mask)) == {1, 5, labels.IGNORE}


def test_missing_root_is_one_line_error(tmp_path):
    out = edge_seg("data", "check", tmp_path / "nope")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "nope" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bad_files_are_reported_by_check(synthetic_camvid, tmp_path):
    import shutil
    root = tmp_path / "cv"
    shutil.copytree(synthetic_camvid, root)
    first = sorted((root / "train").iterdir())[0]
    first.write_bytes(b"not a png")                                  # corrupt image
    masks = sorted((root / "trainannot").iterdir())
    cv2.imwrite(str(masks[1]), np.full((10, 10), 3, np.uint8))        # wrong size
    cv2.imwrite(str(masks[2]), np.full(cv2.imread(str(masks[2]), 0).shape, 42, np.uint8))  # unknown id
    (root / "trainannot" / "lonely.png").write_bytes(masks[3].read_bytes())  # mask without image
    out = edge_seg("data", "check", root)
    assert out.returncode == 1
    assert "unreadable image" in out.stdout and first.name in out.stdout
    assert "unknown label values [42]" in out.stdout
    assert "mask is 10x10" in out.stdout
    assert "mask without image" in out.stdout and "lonely.png" in out.stdout
    with pytest.raises(UserError, match="unreadable image"):
        datasets.read_pair(datasets.load_split(root, "camvid", "train")[0])


def test_preview_writes_a_grid(synthetic_camvid, tmp_path):
    out = edge_seg("data", "preview", synthetic_camvid, "-o", tmp_path / "grid.png", "-n", "3", "--width", "128")
    assert out.returncode == 0, out.stderr
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape[1] == 256 and grid.shape[0] > 3 * 64


def test_mask_resize_never_invents_labels():
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([1, 3, 7, 255], np.uint8), size=(97, 131))
    for size in [(64, 32), (512, 256), (200, 77)]:
        assert set(np.unique(resize_mask(mask, size))) <= {1, 3, 7, 255}


# ---------------------------------------------------------------- drive-disjoint validation

def test_camvid_drive_split_holds_out_a_drive_val_never_saw(tmp_path):
    root = camvid_with_drives(tmp_path / "cv", {"train": {"A": 3, "B": 5, "C": 4}, "val": {"C": 2}})
    train = datasets.load_split(root, split="drive-train")
    val = datasets.load_split(root, split="drive-val")
    # B: the largest drive the official val lacks; everything else (val frames too) trains
    assert {datasets.drive_of(s) for s in val} == {"B"} and len(val) == 5
    assert sorted(s.name for s in train) == sorted([f"A_{i:05d}" for i in range(3)] + [f"C_{i:05d}" for i in range(4)]
                                                   + [f"C_{i:05d}" for i in range(2)])
    assert len(datasets.load_split(root, split="val")) == 2  # the official val is unchanged


def test_camvid_without_a_holdout_drive_says_so(tmp_path):
    root = camvid_with_drives(tmp_path / "cv", {"train": {"A": 3}, "val": {"A": 2}})
    with pytest.raises(UserError, match="no 'drive-val'"):
        datasets.load_split(root, split="drive-val")


def test_real_camvid_drive_split(camvid_root):
    """The SegNet release: 0006R0 (101 frames) held out; train and val share 0016E5."""
    val = datasets.load_split(camvid_root, split="drive-val")
    train = datasets.load_split(camvid_root, split="drive-train")
    assert {datasets.drive_of(s) for s in val} == {"0006R0"} and len(val) == 101
    assert {datasets.drive_of(s) for s in train} == {"0001TP", "0016E5"} and len(train) == 367
    official_val = {datasets.drive_of(s) for s in datasets.load_split(camvid_root, split="val")}
    assert official_val == {"0016E5"}


def test_folder_val_is_carved_by_drive_and_stable(tmp_path):
    for split in ("train",):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "masks" / split).mkdir(parents=True)
    for drive in range(40):
        for k in range(3):
            stem = f"{drive}_{k:06d}"
            cv2.imwrite(str(tmp_path / "images" / "train" / f"{stem}.jpg"), np.zeros((8, 16, 3), np.uint8))
            cv2.imwrite(str(tmp_path / "masks" / "train" / f"{stem}.png"), np.ones((8, 16), np.uint8))
    (tmp_path / "mapping.json").write_text(json.dumps({"1": "flat"}))
    layout = datasets.scan(tmp_path)
    train, val = layout.splits["train"], layout.splits["val"]
    assert len(train) + len(val) == 120 and 0 < len(val) < 40
    assert not {datasets.drive_of(s) for s in train} & {datasets.drive_of(s) for s in val}
    assert [s.name for s in datasets.scan(tmp_path).splits["val"]] == [s.name for s in val]
    assert datasets.load_split(tmp_path, split="drive-val") == val

"""The synthetic street-scene generator (edge/scenes/) and the dataset writer
(train/synthetic_dataset.py). Small frames keep this fast; no TensorFlow."""
from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest

from conftest import REPO, python_without_tf
import edge_seg.scenes as synthetic
from edge_seg import labels
from edge_seg.scenes import render_clip, render_scene

SMALL = (256, 128)


def assert_same(a: synthetic.Scene, b: synthetic.Scene):
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.label_ids, b.label_ids)
    assert np.array_equal(a.instance_ids, b.instance_ids)


@pytest.fixture(scope="module")
def scenes():
    """Scenes of seeds 0..5 at 512x256."""
    return {seed: render_scene(seed, (512, 256)) for seed in range(6)}


def test_types_shapes_and_size_order():
    sc = render_scene(1, (320, 160))
    assert sc.image.shape == (160, 320, 3) and sc.image.dtype == np.uint8
    assert sc.label_ids.shape == (160, 320) and sc.label_ids.dtype == np.uint8
    assert sc.instance_ids.shape == (160, 320) and sc.instance_ids.dtype == np.int32
    assert sc.categories.dtype == np.uint8
    assert np.array_equal(sc.categories, labels.cityscapes_lut()[sc.label_ids])
    known = {lab.id for lab in labels.CITYSCAPES_LABELS}
    assert set(np.unique(sc.label_ids).tolist()) <= known


def test_deterministic_by_seed():
    assert_same(render_scene(7, SMALL), render_scene(7, SMALL))
    assert not np.array_equal(render_scene(7, SMALL).image, render_scene(8, SMALL).image)


def test_all_categories_present(scenes):
    for seed, sc in scenes.items():
        present = set(np.unique(sc.categories).tolist())
        assert len(present) >= 7, (seed, present)
    union = set().union(*(np.unique(sc.categories).tolist() for sc in scenes.values()))
    assert union == set(range(labels.NUM_CATEGORIES))
    # the documented label set: road, sidewalk, building, pole, sign or light, vegetation,
    # terrain, sky, person, car, wall or fence, a void label (hood or static)
    union_ids = set().union(*(np.unique(sc.label_ids).tolist() for sc in scenes.values()))
    assert {7, 8, 11, 17, 21, 22, 23, 24, 26} <= union_ids
    assert union_ids & {19, 20} and union_ids & {12, 13} and union_ids & {1, 4}


def test_instance_ids_consistent_with_label_ids(scenes):
    for seed, sc in scenes.items():
        inst, lab = sc.instance_ids, sc.label_ids
        is_inst = inst >= 1000
        assert np.array_equal(inst[is_inst] // 1000, lab[is_inst].astype(np.int32))
        assert np.array_equal(inst[~is_inst], lab[~is_inst].astype(np.int32))
        classes = set((np.unique(inst[is_inst]) // 1000).tolist())
        assert classes <= {24, 26}
        # every person / car pixel belongs to an instance
        assert not np.isin(lab[~is_inst], (24, 26)).any()
        ids = np.unique(inst[is_inst])
        assert (ids // 1000 == 26).any(), f"seed {seed}: no car"
        assert (ids // 1000 == 24).any(), f"seed {seed}: no person"


def test_image_is_drawn_with_the_label_geometry():
    """In flat mode every primitive paints its label into the image (B = labelId, G =
    instance index): the image must reproduce the label maps exactly, and those maps must
    be the ones of the normal rendering."""
    for seed in (0, 4):
        flat = synthetic._World(seed, SMALL, flat=True)
        normal = synthetic._World(seed, SMALL)
        for i in (0, 40):
            f, n = flat.render(i), normal.render(i)
            k = np.where(f.instance_ids >= 1000, f.instance_ids % 1000 % 256, 0)
            assert np.array_equal(f.image[..., 0], f.label_ids)
            assert np.array_equal(f.image[..., 1], k)
            assert (f.image[..., 2] == 255).all()
            assert np.array_equal(f.instance_ids, n.instance_ids)


def test_image_agrees_with_labels(scenes):
    for seed, sc in scenes.items():
        img = sc.image.astype(float)
        sky, road = sc.label_ids == 23, sc.label_ids == 7
        assert sky.sum() > 1000 and road.sum() > 1000
        assert img[sky].mean() > img[road].mean() + 15, seed  # sky is brighter
        assert img[sky][:, 0].mean() > img[road][:, 0].mean(), seed  # and bluer
        # textured, not flat colour fills
        assert img[road].std(0).mean() > 2.0, seed


def test_clip_moves_and_is_deterministic():
    frames = list(render_clip(2, 12, SMALL))
    assert len(frames) == 12
    assert_same(frames[0], render_scene(2, SMALL))  # a scene is frame 0 of its clip
    assert_same(frames[9], list(render_clip(2, 10, SMALL))[9])  # frame i does not depend on n
    changed = [(a.label_ids != b.label_ids).mean() for a, b in zip(frames, frames[1:])]
    assert all(0 < c < 0.2 for c in changed), changed  # moving, smoothly
    assert (frames[0].label_ids != frames[-1].label_ids).mean() > max(changed)
    assert list(render_clip(2, 0, SMALL)) == []
    with pytest.raises(ValueError):
        render_clip(2, -1)


def test_camera_moves_forward():
    """The camera advances v_ego metres a second; static things come closer and grow."""
    world = synthetic._World(1, (512, 256))
    world.render(0)
    assert world.s_cam == 0
    a = world.render(0).label_ids
    b = world.render(15).label_ids
    assert world.s_cam == pytest.approx(world.v_ego / 2)  # half a second at FPS frames per second
    # the near road ahead stays road while what is beside it streams outward: the sky
    # (far away) barely changes, the lower image half changes more
    h = a.shape[0]
    sky_change = ((a == 23) != (b == 23))[: h // 3].mean()
    low_change = (a != b)[h // 2:].mean()
    assert low_change > sky_change


def test_runtime_module_needs_no_tensorflow():
    code = ("import sys\nfrom edge_seg import scenes\nimport edge_seg.train.synthetic_dataset\n"
            "scenes.render_scene(0, (64, 32))\n"
            "assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)\n")
    out = subprocess.run(python_without_tf(code), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


# ------------------------------------------------------------------ dataset writer

def files(root, pattern):
    return sorted(p for p in root.glob(pattern) if p.is_file())


def test_write_cityscapes(tmp_path):
    from edge_seg.train import datasets
    from edge_seg.train.synthetic_dataset import write_dataset
    root = write_dataset(tmp_path / "cs", "cityscapes", n_train=5, n_val=2, size=(128, 64), seed=1, n_test=1)
    assert len(files(root, "leftImg8bit/train/*/*_leftImg8bit.png")) == 5
    assert len(files(root, "gtFine/train/*/*_gtFine_labelIds.png")) == 5
    assert len(files(root, "gtFine/train/*/*_gtFine_instanceIds.png")) == 5
    assert len(files(root, "leftImg8bit/val/*/*.png")) == 2 and len(files(root, "gtFine/val/*/*.png")) == 4
    assert len(files(root, "leftImg8bit/test/*/*.png")) == 1
    train_cities = {p.name for p in (root / "leftImg8bit" / "train").iterdir()}
    val_cities = {p.name for p in (root / "leftImg8bit" / "val").iterdir()}
    assert len(train_cities) >= 2 and len(val_cities) == 1 and not train_cities & val_cities
    for image in files(root, "leftImg8bit/*/*/*.png"):
        stem = image.name[: -len("_leftImg8bit.png")]
        city = stem.split("_")[0]
        assert stem == f"{city}_000000_{stem.split('_')[2]}" and len(stem.split("_")[2]) == 6
    inst_png = files(root, "gtFine/train/*/*_gtFine_instanceIds.png")[0]
    inst = cv2.imread(str(inst_png), cv2.IMREAD_UNCHANGED)
    lab = cv2.imread(str(inst_png).replace("instanceIds", "labelIds"), cv2.IMREAD_UNCHANGED)
    assert inst.dtype == np.uint16 and lab.dtype == np.uint8
    assert np.array_equal(np.where(inst >= 1000, inst // 1000, inst), lab)
    layout = datasets.scan(root)  # the readers see: train cities minus the held-out one, val, test
    assert layout.fmt == "cityscapes" and not layout.orphan_images and not layout.orphan_masks
    assert len(layout.splits["train"]) + len(layout.splits["val"]) == 5 and len(layout.splits["test"]) == 2
    image, mask = datasets.read_pair(layout.splits["train"][0])
    assert image.shape == (64, 128, 3) and set(np.unique(mask).tolist()) <= set(range(8))


def test_write_camvid(tmp_path):
    from edge_seg.train import datasets
    from edge_seg.train.synthetic_dataset import scene_seed, write_dataset
    root = write_dataset(tmp_path / "cv", "camvid", n_train=4, n_val=2, size=(128, 64), seed=2, n_test=1)
    for split, n in (("train", 4), ("val", 2), ("test", 1)):
        assert len(files(root, f"{split}/*.png")) == n and len(files(root, f"{split}annot/*.png")) == n
        lines = (root / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            img, ann = line.split()
            assert img.startswith(f"{split}/") and ann.startswith(f"{split}annot/")
            assert (root / img).is_file() and (root / ann).is_file()
    layout = datasets.scan(root)
    assert layout.fmt == "camvid" and [len(layout.splits[s]) for s in ("train", "val", "test")] == [4, 2, 1]
    # annotations are CamVid class ids whose categories are exactly the scene's; images are RGB-correct
    sample = next(s for s in layout.splits["train"] if s.name.endswith("00000"))
    scene = render_scene(scene_seed(2, "train", 0), (128, 64))
    raw = cv2.imread(str(sample.mask), cv2.IMREAD_UNCHANGED)
    assert raw.max() <= 11
    assert np.array_equal(labels.camvid_lut()[raw], scene.categories)
    image, _ = datasets.read_pair(sample)
    assert np.array_equal(image, scene.image[..., ::-1])


def test_write_folder(tmp_path):
    from edge_seg.train import datasets
    from edge_seg.train.synthetic_dataset import scene_seed, write_dataset
    root = write_dataset(tmp_path / "fo", "folder", n_train=5, n_val=3, size=(128, 64), seed=3)
    assert len(files(root, "images/*.jpg")) == 8 and len(files(root, "masks/*.png")) == 8
    mapping = json.loads((root / "mapping.json").read_text())
    values = set().union(*(np.unique(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)).tolist()
                           for p in files(root, "masks/*.png")))
    assert {str(v) for v in values} <= set(mapping) and not values <= set(range(8))  # raw values, not catIds
    assert set(mapping.values()) <= set(labels.CATEGORY_NAMES) | {"ignore"}
    layout = datasets.scan(root)
    assert layout.fmt == "folder" and sum(len(v) for v in layout.splits.values()) == 8
    sample = next(s for s in layout.splits["train"] + layout.splits["val"] if s.name == "synth_train_00000")
    scene = render_scene(scene_seed(3, "train", 0), (128, 64))
    _, mask = datasets.read_pair(sample)
    expected = scene.categories.copy()
    expected[scene.label_ids == 1] = labels.IGNORE  # the ego-vehicle hood is "ignore" here
    assert np.array_equal(mask, expected)
    # split folders on request
    root2 = write_dataset(tmp_path / "fo2", "folder", n_train=3, n_val=2, size=(128, 64), split_dirs=True)
    assert [len(datasets.scan(root2).splits[s]) for s in ("train", "val")] == [3, 2]


def test_write_refuses_to_mix_datasets(tmp_path):
    from edge_seg.train.synthetic_dataset import write_dataset
    write_dataset(tmp_path, "camvid", n_train=3, n_val=1, size=(64, 32))
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path, "camvid", n_train=2, n_val=1, size=(64, 32))
    write_dataset(tmp_path, "camvid", n_train=2, n_val=1, size=(64, 32), overwrite=True)
    assert len(files(tmp_path, "train/*.png")) == 2 and len(files(tmp_path, "trainannot/*.png")) == 2
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "x", "kitti", 1, 1)

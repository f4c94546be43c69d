"""Set-valued (coarse) labels: mapping lists, the set loss, scoring, augmentation, data check."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from edge_seg import labels
from edge_seg.errors import UserError
from edge_seg.mapping import read_mapping, set_code, set_members
from edge_seg.iou import SegMetrics
from edge_seg.train import datasets

from conftest import edge_seg

FLAT, CONSTRUCTION, OBJECT, NATURE = (labels.CATEGORY_IDS[n] for n in ("flat", "construction", "object", "nature"))


def _coarse_folder(root, n=12, size=(64, 32)):
    """A folder dataset whose mask value 5 means "construction or nature", 6 "flat,
    construction or object", 1 flat, 2 sky (exact), 9 ignore; split into train/ only."""
    rng = np.random.default_rng(0)
    for split in ("train",):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            stem = f"{i % 5}_{i:04d}"  # drive prefix, as in IDD-Lite
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"),
                        rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
            mask = np.full((size[1], size[0]), 1, np.uint8)
            mask[: size[1] // 4] = 2
            mask[size[1] // 4: size[1] // 2, : size[0] // 2] = 5
            mask[size[1] // 4: size[1] // 2, size[0] // 2:] = 6
            mask[-2:] = 9
            cv2.imwrite(str(root / "masks" / split / f"{stem}.png"), mask)
    (root / "mapping.json").write_text(json.dumps(
        {"1": "flat", "2": ["sky"], "5": ["construction", "nature"], "6": ["flat", "construction", "object"],
         "9": "ignore"}))
    return root


# ------------------------------------------------------------------ mapping

def test_mapping_lists_become_set_codes(tmp_path):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps({"0": "flat", "1": ["construction", "nature"], "2": ["sky"], "3": "ignore"}))
    pairs = dict(read_mapping(path))
    assert pairs[0] == FLAT and pairs[2] == labels.CATEGORY_IDS["sky"] and pairs[3] == labels.IGNORE
    assert set_members(pairs[1]) == (CONSTRUCTION, NATURE)
    assert pairs[1] >= labels.NUM_CATEGORIES and pairs[1] not in (labels.IGNORE, labels.UNKNOWN)


def test_every_set_has_its_own_code_that_decodes_back():
    from itertools import combinations
    seen = {}
    for k in range(2, 7):
        for cats in combinations(range(1, 8), k):
            code = set_code(cats)
            assert set_members(code) == cats and code not in seen and 8 <= code < labels.UNKNOWN
            seen[code] = cats
    assert set_code(range(1, 8)) == labels.IGNORE  # "any scored category" constrains nothing


@pytest.mark.parametrize("value, message", [(["flat", "bogus"], "unknown category 'bogus'"),
                                            (["void", "flat"], "void and 'ignore' cannot"),
                                            ([], "a list names one or more")])
def test_bad_lists_are_user_errors(tmp_path, value, message):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps({"4": value}))
    with pytest.raises(UserError, match=message):
        read_mapping(path)


# ------------------------------------------------------------------ the loss

def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_set_loss_is_minus_log_of_the_summed_probabilities():
    import tensorflow as tf
    from edge_seg.train.losses import make_loss

    logits = np.array([[0.3, 1.0, 2.0, -1.0, 0.5, 0.0, -0.5, 1.5],     # "construction or nature"
                       [0.0, 0.2, -0.3, 0.8, 0.1, 1.1, 0.4, -0.9],     # exact flat
                       [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],       # ignore: not counted
                       [0.1, -2.0, 0.7, 1.9, -0.4, 0.3, 0.0, 0.6]],    # "flat, construction or object"
                      np.float32).reshape(1, 2, 2, 8)
    y = np.array([set_code([CONSTRUCTION, NATURE]), FLAT, labels.IGNORE,
                  set_code([FLAT, CONSTRUCTION, OBJECT])], np.int32).reshape(1, 2, 2)
    p = [_softmax(row.astype(np.float64)) for row in logits.reshape(4, 8)]
    by_pixel = [-math.log(p[0][CONSTRUCTION] + p[0][NATURE]), -math.log(p[1][FLAT]),
                -math.log(p[3][FLAT] + p[3][CONSTRUCTION] + p[3][OBJECT])]
    got = float(make_loss("ce")(tf.constant(y), tf.constant(logits)))
    assert got == pytest.approx(np.mean(by_pixel), rel=1e-5)

    # class weights: a set pixel weighs as its lightest member
    w = np.array([0, 1.0, 2.0, 5.0, 0.5, 1.0, 3.0, 1.0], np.float32)
    pixel_w = [min(w[CONSTRUCTION], w[NATURE]), w[FLAT], min(w[FLAT], w[CONSTRUCTION], w[OBJECT])]
    got = float(make_loss("ce", class_weights=w)(tf.constant(y), tf.constant(logits)))
    assert got == pytest.approx(np.dot(pixel_w, by_pixel) / sum(pixel_w), rel=1e-5)


def test_exact_labels_keep_the_ordinary_cross_entropy():
    import tensorflow as tf
    from edge_seg.train.losses import make_loss

    rng = np.random.default_rng(1)
    y = rng.integers(1, 8, (2, 6, 10)).astype(np.int32)
    logits = rng.normal(size=(2, 6, 10, 8)).astype(np.float32)
    reference = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    assert float(make_loss("ce")(tf.constant(y), tf.constant(logits))) == pytest.approx(float(reference), rel=1e-5)


def test_dice_and_lovasz_leave_set_pixels_out_and_stay_finite():
    import tensorflow as tf
    from edge_seg.train.losses import make_loss

    rng = np.random.default_rng(2)
    y = rng.integers(1, 8, (2, 8, 8)).astype(np.int32)
    y[:, :3] = set_code([CONSTRUCTION, NATURE])
    logits = rng.normal(size=(2, 8, 8, 8)).astype(np.float32)
    changed = logits.copy()
    changed[:, :3] = rng.normal(size=changed[:, :3].shape) * 10
    for kind in ("dice", "lovasz"):
        loss = make_loss(kind)
        base = float(loss(tf.constant(y), tf.constant(logits)))
        assert np.isfinite(base) and base > 0
        assert float(loss(tf.constant(y), tf.constant(changed))) == pytest.approx(base, rel=1e-5), kind
    only_sets = np.full_like(y, set_code([CONSTRUCTION, NATURE]))
    for kind in ("ce+dice", "ce+lovasz"):
        x = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = make_loss(kind)(tf.constant(only_sets), x)
        assert np.isfinite(float(value)) and np.isfinite(tape.gradient(value, x).numpy()).all()


# ------------------------------------------------------------------ scoring

def _iou_numpy(gt, pred, c):
    """Independent category IoU on exact non-void pixels: TP / (TP + FP + FN)."""
    exact = (gt >= 1) & (gt < labels.NUM_CATEGORIES)
    tp = np.sum(exact & (gt == c) & (pred == c))
    fp = np.sum(exact & (gt != c) & (pred == c))
    fn = np.sum((gt == c) & (pred != c))
    return tp / (tp + fp + fn) if tp + fp + fn else float("nan")


def test_a_set_valued_pixel_never_counts_in_iou():
    coarse = set_code([CONSTRUCTION, NATURE])
    gt = np.array([[FLAT, FLAT, CONSTRUCTION, coarse],
                   [NATURE, coarse, coarse, labels.IGNORE]], np.uint8)
    pred = np.array([[FLAT, CONSTRUCTION, CONSTRUCTION, NATURE],
                     [NATURE, OBJECT, CONSTRUCTION, FLAT]], np.uint8)
    r = SegMetrics().update(gt, pred).result()
    assert r["iou"]["flat"] == pytest.approx(1 / 2)
    assert r["iou"]["construction"] == pytest.approx(1 / 2)
    assert r["iou"]["nature"] == pytest.approx(1.0)
    assert r["pixels"] == 4  # only the exact labels enter the confusion matrix
    # whatever is predicted on set pixels, IoU does not move
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = pred.copy()
        other[gt == coarse] = rng.integers(0, 8, int((gt == coarse).sum()))
        again = SegMetrics().update(gt, other).result()
        np.testing.assert_equal(list(again["iou"].values()), list(r["iou"].values()))
        assert again["confusion_matrix"] == r["confusion_matrix"]
    # the set pixels: 2 of 3 predicted inside {construction, nature}
    sets = r["set_labels"]
    assert sets["pixels"] == 3 and sets["inside"] == pytest.approx(2 / 3)
    assert sets["share_of_labelled"] == pytest.approx(3 / 7)
    assert sets["by_set"]["construction|nature"] == {"pixels": 3, "inside": pytest.approx(2 / 3)}
    # flat, construction, nature have exact labels here; the mean over those three only
    assert sets["exact_categories"] == ["flat", "construction", "nature"]
    assert sets["miou_exact_categories"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)


def test_set_scoring_matches_an_independent_reference_on_random_masks():
    rng = np.random.default_rng(5)
    codes = np.array([1, 2, 3, 4, 5, 6, 7, 0, labels.IGNORE, set_code([1, 4]), set_code([2, 3, 4])], np.uint8)
    gt = rng.choice(codes, size=(40, 60))
    pred = rng.integers(0, 8, (40, 60)).astype(np.uint8)
    halves = SegMetrics().update(gt[:20], pred[:20]).merge(SegMetrics().update(gt[20:], pred[20:])).result()
    for name in labels.CATEGORY_NAMES[1:]:
        assert halves["iou"][name] == pytest.approx(_iou_numpy(gt, pred, labels.CATEGORY_IDS[name]))
    is_set = gt >= labels.NUM_CATEGORIES
    is_set &= gt != labels.IGNORE
    inside = [pred[y, x] in set_members(gt[y, x]) for y, x in zip(*np.nonzero(is_set))]
    assert halves["set_labels"]["pixels"] == is_set.sum()
    assert halves["set_labels"]["inside"] == pytest.approx(np.mean(inside))


def test_exact_only_data_reports_no_set_section():
    gt = np.array([[1, 2], [3, 255]], np.uint8)
    assert "set_labels" not in SegMetrics().update(gt, gt).result()


# ------------------------------------------------------------------ readers, augmentation, data check

def test_folder_reader_and_resize_keep_set_codes(tmp_path):
    root = _coarse_folder(tmp_path / "coarse")
    layout = datasets.scan(root)
    train_drives = {datasets.drive_of(s) for s in layout.splits["train"]}
    val_drives = {datasets.drive_of(s) for s in layout.splits["val"]}
    assert layout.splits["val"] and not train_drives & val_drives  # val carved out by drive
    _, mask = datasets.read_pair(layout.splits["train"][0], (128, 64))
    assert set(np.unique(mask)) == {FLAT, labels.CATEGORY_IDS["sky"], set_code([CONSTRUCTION, NATURE]),
                                    set_code([FLAT, CONSTRUCTION, OBJECT]), labels.IGNORE}


def test_augmentation_carries_set_codes_to_the_loss(tmp_path):
    pytest.importorskip("tensorflow")
    from edge_seg.train.pipeline import Augment, make_dataset

    root = _coarse_folder(tmp_path / "coarse")
    samples = datasets.load_split(root, split="train")
    allowed = {FLAT, labels.CATEGORY_IDS["sky"], set_code([CONSTRUCTION, NATURE]),
               set_code([FLAT, CONSTRUCTION, OBJECT]), labels.IGNORE}
    ds = make_dataset(samples, (64, 32), batch=4, training=True, seed=3, augment=Augment())
    seen = set()
    for _, y in ds.take(4):
        seen |= set(np.unique(y.numpy()).tolist())
    assert seen <= allowed and set_code([CONSTRUCTION, NATURE]) in seen


def test_data_check_reports_set_valued_shares(tmp_path):
    root = _coarse_folder(tmp_path / "coarse")
    out = edge_seg("data", "check", root)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.split()}
    # per frame: 64x32 = 2048 px; sky 8 rows, 8 rows half coarse {c,n} half {f,c,o}, 14 flat, 2 ignore
    assert float(rows["construction|nature"][0]) == pytest.approx(100 * 256 / 2048, abs=0.05)
    assert float(rows["flat|construction|object"][0]) == pytest.approx(100 * 256 / 2048, abs=0.05)
    assert float(rows["flat"][0]) == pytest.approx(100 * 896 / 2048, abs=0.05)
    assert "set-valued" in out.stdout


def test_idd_lite_check_counts_its_coarse_labels():
    from conftest import SHARED
    root = SHARED / "idd-lite"
    if not (root / "images").is_dir():
        pytest.skip(f"IDD-Lite not available at {root} (../shared is absent)")
    out = edge_seg("data", "check", root, "--limit", "40")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.split()}
    assert "construction|nature" in rows and "flat|construction|object" in rows and "flat|nature" in rows


def test_class_weights_count_exact_labels_only():
    from edge_seg.train.losses import class_pixel_stats

    exact = np.array([[1, 1, 2, 255]], np.uint8)
    coarse = exact.copy()
    coarse[0, 3] = set_code([CONSTRUCTION, NATURE])
    np.testing.assert_array_equal(np.stack(class_pixel_stats([coarse])), np.stack(class_pixel_stats([exact])))

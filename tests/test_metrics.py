"""edge_seg.iou against cityscapesScripts' official evaluator on the same files."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_seg import labels
from edge_seg.iou import SegMetrics, agreement, confusion_matrix
from edge_seg.train.datasets import load_split, read_instances, read_mask


def _official_evaluator():
    cs = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    if not hasattr(np, "in1d"):  # cityscapesscripts 2.3 still calls np.in1d, gone in NumPy 2.4
        np.in1d = np.isin
    args = cs.args
    args.evalInstLevelScore = True
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.evalLabels = [label.id for label in cs.labels if label.id >= 0]
    return cs


def _corrupt(categories: np.ndarray, seed: int) -> np.ndarray:
    """A plausible imperfect prediction: shifted, with blocks of wrong categories."""
    rng = np.random.default_rng(seed)
    pred = np.roll(categories, (int(rng.integers(-3, 4)), int(rng.integers(-5, 6))), axis=(0, 1)).copy()
    h, w = pred.shape
    for _ in range(12):
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        pred[y:y + int(rng.integers(4, h // 4)), x:x + int(rng.integers(4, w // 4))] = rng.integers(0, 8)
    return pred.astype(np.uint8)


def _write_prediction(path, pred_categories):
    lut = np.array([labels.CITYSCAPES_REPRESENTATIVE_ID[name] for name in labels.CATEGORY_NAMES], np.uint8)
    cv2.imwrite(str(path), lut[pred_categories])


def _compare_with_official(samples, tmp_path):
    cs = _official_evaluator()
    ours = SegMetrics()
    preds, gts = [], []
    for i, sample in enumerate(samples):
        gt_train = read_mask(sample, "train")
        pred = _corrupt(np.where(gt_train == labels.IGNORE, 0, gt_train), seed=i)
        path = tmp_path / f"pred_{i}.png"
        _write_prediction(path, pred)
        ours.update(read_mask(sample, "eval"), pred, read_instances(sample))
        preds.append(str(path))
        gts.append(str(sample.mask))
    official = cs.evaluateImgLists(preds, gts, cs.args)
    result = ours.result()

    for name in labels.CATEGORY_NAMES:
        theirs, mine = official["categoryScores"][name], result["iou"][name]
        assert (math.isnan(theirs) and math.isnan(mine)) or abs(theirs - mine) < 1e-6, name
    assert abs(official["averageScoreCategories"] - result["miou7"]) < 1e-6
    for name in labels.INSTANCE_CATEGORIES:
        assert abs(official["categoryInstScores"][name] - result["iiou"][name]) < 1e-6, name
    assert abs(official["averageScoreInstCategories"] - result["miiou"]) < 1e-6
    assert 0.2 < result["miou7"] < 0.99  # the corruption made a non-trivial case
    return result


def test_matches_official_evaluator_on_real_cityscapes_frame(cityscapes_sample, tmp_path):
    samples = load_split(cityscapes_sample, "cityscapes", "test")
    assert samples[0].instances is not None
    _compare_with_official(samples, tmp_path)


def test_matches_official_evaluator_on_synthetic_cityscapes_layout(synthetic_cityscapes, tmp_path):
    samples = load_split(synthetic_cityscapes, "cityscapes", "train")
    result = _compare_with_official(samples, tmp_path)
    assert not math.isnan(result["iiou"]["human"]) and not math.isnan(result["iiou"]["vehicle"])


def test_perfect_prediction_scores_one_and_void_is_not_scored():
    gt = np.array([[0, 1, 1, 2], [3, 4, 5, 6], [7, 7, 255, 0]], np.uint8)
    pred = np.where(gt == 255, 3, gt).astype(np.uint8)
    pred[0, 0] = 5  # a wrong guess on void ground truth costs nothing in mIoU(7)
    r = SegMetrics().update(gt, pred).result()
    assert r["miou7"] == pytest.approx(1.0)
    assert math.isnan(r["iou"]["void"])
    assert r["pixel_accuracy"] == pytest.approx(1.0)
    assert r["iou_all"]["void"] == pytest.approx(0.5)  # the plain 8-class score does count it


def test_known_small_case_by_hand():
    gt = np.array([1, 1, 1, 1, 2, 2, 0, 0], np.uint8)
    pred = np.array([1, 1, 2, 0, 2, 1, 1, 2], np.uint8)
    r = SegMetrics().update(gt, pred).result()
    # flat: TP 2, FN 2 (one as construction, one as void), FP 1 (from construction row)
    assert r["iou"]["flat"] == pytest.approx(2 / 5)
    # construction: TP 1, FN 1, FP 1
    assert r["iou"]["construction"] == pytest.approx(1 / 3)
    assert r["dice"]["flat"] == pytest.approx(4 / 7)
    assert r["miou7"] == pytest.approx((2 / 5 + 1 / 3) / 2)
    assert r["pixel_accuracy"] == pytest.approx(3 / 6)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 8, (20, 30), dtype=np.uint8) for _ in range(4)]
    preds = [rng.integers(0, 8, (20, 30), dtype=np.uint8) for _ in range(4)]
    stream = SegMetrics()
    for g, p in zip(gts, preds):
        stream.update(g, p)
    once = SegMetrics().update(np.concatenate(gts), np.concatenate(preds))
    assert np.array_equal(stream.cm, once.cm)
    halves = SegMetrics().update(gts[0], preds[0]).merge(SegMetrics().update(gts[1], preds[1]))
    assert np.array_equal(halves.cm, confusion_matrix(np.stack(gts[:2]), np.stack(preds[:2])))


def test_agreement_of_identical_masks_is_one():
    mask = np.random.default_rng(1).integers(0, 8, (16, 16), dtype=np.uint8)
    a = agreement(mask, mask)
    assert a["miou7"] == pytest.approx(1.0) and a["pixel_agreement"] == pytest.approx(1.0)


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        SegMetrics().update(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))

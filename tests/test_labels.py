"""The label table against cityscapesScripts' official one and the CamVid README."""
import numpy as np
import pytest

from edge_seg import labels


def test_cityscapes_table_is_the_official_one():
    official = pytest.importorskip("cityscapesscripts.helpers.labels")
    ours = {(l.name, l.id, l.category, l.cat_id, l.has_instances, l.ignore_in_eval)
            for l in labels.CITYSCAPES_LABELS}
    theirs = {(l.name, l.id, l.category, l.categoryId, l.hasInstances, l.ignoreInEval)
              for l in official.labels}
    assert ours == theirs
    assert [c.name for c in labels.CATEGORIES] == [
        official.labels[i].category for i in sorted({l.categoryId: i for i, l in enumerate(official.labels)}.values())]


def test_avg_instance_sizes_are_the_evaluators():
    cs = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    assert labels.CITYSCAPES_AVG_INSTANCE_SIZE == cs.args.avgClassSize


def test_category_order_and_names():
    assert labels.CATEGORY_NAMES == ("void", "flat", "construction", "object", "nature", "sky", "human", "vehicle")
    assert labels.colors_rgb().shape == (8, 3) and len({tuple(c) for c in labels.colors_rgb()}) == 8


@pytest.mark.parametrize("label_id,category", [(7, "flat"), (8, "flat"), (24, "human"), (25, "human"),
                                               (26, "vehicle"), (33, "vehicle"), (11, "construction"),
                                               (17, "object"), (21, "nature"), (23, "sky"), (0, "void")])
def test_cityscapes_lut(label_id, category):
    assert labels.cityscapes_lut()[label_id] == labels.CATEGORY_IDS[category]


def test_eval_lut_ignores_what_the_benchmark_ignores():
    lut = labels.cityscapes_lut(for_eval=True)
    for label_id in (9, 10, 14, 15, 16, 18, 29, 30):  # parking, rail track, guard rail, ... caravan, trailer
        assert lut[label_id] == labels.IGNORE
    assert lut[0] == labels.VOID and lut[7] == 1


def test_camvid_lut_matches_readme():
    lut = labels.camvid_lut()
    expected = {0: "sky", 1: "construction", 2: "object", 3: "flat", 4: "flat", 5: "nature", 6: "object",
                7: "construction", 8: "vehicle", 9: "human", 10: "human", 11: "void"}
    assert {i: labels.CATEGORY_NAMES[lut[i]] for i in expected} == expected


def test_unknown_values_are_named():
    with pytest.raises(ValueError, match=r"unknown label values \[12, 200\]"):
        labels.apply_lut(np.array([[1, 12, 200]], np.uint8), labels.camvid_lut(), "m.png")

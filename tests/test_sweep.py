"""The sweep's leaderboard: ranking, and the other datasets' validation scores of a mixed run."""
from __future__ import annotations

from edge_seg.labels import CATEGORY_NAMES
from edge_seg.train.sweep import leaderboard_markdown, other_val_scores


def eval_other(miou7, exact=None, inside=None):
    """An eval.json ``other_val`` entry as train_model writes it."""
    metrics = {"miou7": miou7}
    if exact is not None:
        metrics["set_labels"] = {"miou_exact_categories": exact, "inside": inside,
                                 "exact_categories": ["flat", "sky", "human", "vehicle"]}
    return {"split": "drive-val", "metrics": metrics}


def row(run, miou7, other_val=None):
    r = {"run": run, "arch": "unet-small", "alpha": 0.75, "params": 530_000,
         "macs_512x256": 0.949e9, "miou7": miou7, "iou": {c: miou7 for c in CATEGORY_NAMES[1:]},
         "epochs_run": 40, "wall_seconds": 3600.0}
    if other_val is not None:
        r["other_val"] = other_val
    return r


def test_coarse_other_val_scores_its_exact_categories_not_its_miou7():
    scores = other_val_scores(eval_other(0.4444, exact=0.7777, inside=0.9))
    assert scores["miou"] == 0.7777 and scores["set_inside"] == 0.9
    plain = other_val_scores(eval_other(0.61))
    assert plain["miou"] == 0.61 and plain["set_inside"] is None


def test_leaderboard_ranks_by_val_and_shows_each_mixed_dataset():
    idd = {"idd-lite": other_val_scores(eval_other(0.44, exact=0.75, inside=0.864))}
    rows = [row("b", 0.547, idd), row("a", 0.555, {"idd-lite": other_val_scores(eval_other(0.43, 0.70, 0.80))}),
            row("c", 0.50), {"run": "d", "error": "out of memory"}]
    lines = leaderboard_markdown(rows).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[head.index("vehicle") + 1:head.index("vehicle") + 3] == ["idd-lite mIoU (exact)", "idd-lite in set"]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert [b[0] for b in body[:3]] == ["a", "b", "c"]
    col = head.index("idd-lite mIoU (exact)")
    assert body[1][col] == "0.750" and body[1][col + 1] == "86.4%"
    assert body[2][col] == "-" and body[2][col + 1] == "-"          # a run without the second dataset
    assert lines[-1] == "| d | failed: out of memory |"


def test_leaderboard_of_single_dataset_runs_has_no_extra_columns():
    md = leaderboard_markdown([row("a", 0.6)])
    assert "in set" not in md and "mIoU (exact)" not in md
    head, _, body = md.splitlines()
    assert head.count("|") == body.count("|")                      # every row fills every column

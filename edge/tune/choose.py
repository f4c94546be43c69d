"""The choice of ``edge-seg tune``: each row's drop and its basis, the on-device
correctness guard, the budget, and the order of the table.

Accuracy is measured where labels are (``edge-seg compare`` records it in the model's
metadata); speed is measured on the device; agreement with the float model on the device
guards against kernels or delegates that compute something else there.
"""
from __future__ import annotations

import math

DEFAULT_MAX_DROP = 0.5
# A variant whose pixel agreement with the float model on the device is more than this
# many points below the one recorded on the labelled set computes differently here. Out-
# of-domain frames cost a few points on their own (the synthetic demo scenes: 2.4 for int8,
# 2.9 for qat-int8 of the reference model); broken kernels cost tens of points.
GUARD_MARGIN = 5.0
DIFFERENT = "computes differently here"

BASIS_TEXT = {
    "recorded": "mIoU(7) points lost vs the float model the reference was converted from, on "
                "a labelled set, recorded in the model's metadata by 'edge-seg compare'",
    "agreement": "100 * (1 - agreement mIoU(7)) with the float reference on these frames, "
                 "where the model's metadata records no drop",
    "labels": "the reference's mIoU(7) minus the variant's, against the ground-truth labels of "
              "the --frames manifest at their resolution",
}
BASIS_NAME = {"recorded": "recorded", "agreement": "agreement with the float reference",
              "labels": "ground-truth labels"}


def agreement_drop(agreement) -> float:
    """100 * (1 - agreement) in points; infinite when there is no agreement to speak of."""
    from edge_seg.iou import drop_points
    drop = drop_points(1.0, agreement if agreement is not None else math.nan)
    return math.inf if math.isnan(drop) else drop


def assign_drop(row: dict) -> None:
    """Set ``drop`` and ``drop_basis``: against labels when measured so (kept), else the
    drop recorded in the model's metadata, else the agreement with the float reference."""
    if row.get("drop_basis") == "labels":
        return
    if row.get("recorded_drop") is not None:
        row["drop"], row["drop_basis"] = float(row["recorded_drop"]), "recorded"
    else:
        row["drop"], row["drop_basis"] = agreement_drop(row.get("agreement")), "agreement"


def guard(row: dict, margin: float = GUARD_MARGIN) -> str:
    """"" when the variant computes here as it did on the labelled set, else why not.

    Only rows at the float reference's input size (``guarded`` not False) are checked: a
    variant of another size computes something else by design, and on frames unlike the
    labelled set its agreement falls far more than quantisation's does (the 384x192 int8
    of the reference model: 83.4% of pixels on the demo scenes, 95.9% on CamVid val)."""
    recorded, here = row.get("recorded_pixels"), row.get("pixel_agreement")
    if recorded is None or here is None or row.get("guarded") is False:
        return ""
    if math.isnan(here) or 100.0 * (recorded - here) > margin + 1e-9:
        return (f"{DIFFERENT} (pixel agreement {100 * here:.1f}% vs {100 * recorded:.1f}% "
                f"recorded)")
    return ""


def _reasons(r: dict, max_drop, target_fps, margin) -> list[str]:
    why = []
    different = guard(r, margin)
    if different:
        why.append(different)
    if max_drop is not None and not r["drop"] <= max_drop + 1e-9:
        why.append(f"drop > {max_drop:g}")
    if target_fps is not None and not r["fps"] >= target_fps:
        why.append(f"< {target_fps:g} FPS")
    return why


def choose(rows: list[dict], max_drop: float | None = None, target_fps: float | None = None,
           margin: float = GUARD_MARGIN) -> dict | None:
    """Mark every row ``in_budget`` (and ``why`` not) and return the chosen one.

    Rows need ``fps`` and ``agreement`` (mIoU(7) vs the float reference, 0..1); a
    ``recorded_drop`` (points, from the model's metadata) is the drop when present, a row
    with ``drop_basis`` "labels" keeps its precomputed ``drop``. With ``recorded_pixels``
    and ``pixel_agreement`` the guard rejects a row whose pixel agreement here is more than
    ``margin`` points below the recorded one, whatever the budget.
    Without ``target_fps``: the fastest row whose drop is within ``max_drop`` points
    (default 0.5). With ``target_fps``: the most accurate row reaching it (within
    ``max_drop`` too when that is given); when none reaches it, the fastest row within
    ``max_drop`` is returned with ``target_met`` False on it.
    Ties: drop then FPS. None when no row qualifies.
    """
    if max_drop is None and target_fps is None:
        max_drop = DEFAULT_MAX_DROP
    for r in rows:
        assign_drop(r)
        why = _reasons(r, max_drop, target_fps, margin)
        r["in_budget"] = not why
        r["why"] = ", ".join(why)
        r["chosen"] = False
    ok = [r for r in rows if r["in_budget"]]
    chosen = None
    if target_fps is None:
        if ok:
            chosen = max(ok, key=lambda r: (r["fps"], -r["drop"]))
    elif ok:
        chosen = max(ok, key=lambda r: (-r["drop"], r["fps"]))
        chosen["target_met"] = True
    else:
        accurate = [r for r in rows if not guard(r, margin)
                    and (max_drop is None or r["drop"] <= max_drop + 1e-9)]
        if accurate:
            chosen = max(accurate, key=lambda r: (r["fps"], -r["drop"]))
            chosen["target_met"] = False
    if chosen is not None:
        chosen["chosen"] = True
    return chosen


def order_rows(rows: list[dict], target_fps: float | None = None) -> list[dict]:
    """Best first: the choice, then the rows in budget by the same criterion, then the rest
    by FPS."""
    def key(r):
        if target_fps is not None and r["in_budget"]:
            crit = (-r["drop"], r["fps"])
        else:
            crit = (r["fps"], -r["drop"])
        return (not r.get("chosen"), not r["in_budget"], tuple(-c for c in crit))
    return sorted(rows, key=key)

"""What ``edge-seg tune`` prints (the table, its legend, the choice) and the device
profile it saves (edge_seg.device_profile reads it back for ``edge-seg run``)."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from edge_seg.tune.choose import BASIS_NAME, BASIS_TEXT, DEFAULT_MAX_DROP, GUARD_MARGIN

COLUMNS = ("", "model", "variant", "input", "delegate", "threads", "p50 ms", "p90 ms", "FPS",
           "agreement", "pixels", "drop pt", "basis", "")
FIRST_NUMBER = 5     # columns from here on are right-aligned, up to the basis and reason


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:.2f}%"


def _drop(v) -> str:
    text = "-" if math.isinf(v) or math.isnan(v) else f"{v:.2f}"
    return "0.00" if text == "-0.00" else text


def format_table(rows: list[dict]) -> str:
    labelled = any("miou7_labels" in r for r in rows)
    columns = list(COLUMNS)
    if labelled:
        columns.insert(9, "mIoU(7)")
    body = []
    for r in rows:
        mark = "*" if r.get("chosen") else ("x" if not r["in_budget"] else "")
        cells = [mark, r["file"], r["variant"], r["input"], r["delegate"], str(r["threads"]),
                 f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['fps']:.1f}",
                 _pct(r["agreement"]), _pct(r.get("pixel_agreement")), _drop(r["drop"]),
                 r.get("drop_basis") or "", r.get("why") or ""]
        if labelled:
            cells.insert(9, _pct(r.get("miou7_labels")))
        body.append(cells)
    table = [columns] + body
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    right = set(range(FIRST_NUMBER, len(columns) - 2))
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def legend(reference: str, max_drop, target_fps, rows: list[dict] = ()) -> str:
    budget = []
    if max_drop is not None or target_fps is None:
        budget.append(f"drop over {max_drop if max_drop is not None else DEFAULT_MAX_DROP:g} points")
    if target_fps is not None:
        budget.append(f"below {target_fps:g} FPS")
    budget.append(f"pixel agreement over {GUARD_MARGIN:g} points below the recorded one")
    lines = [
        f"* = chosen; x = rejected ({' or '.join(budget)}). latency = preprocess + inference + "
        "argmax of one frame, FPS = 1000 / mean latency; agreement = mIoU(7) of the variant's "
        f"masks against {reference}'s on these frames, pixels = share of pixels where they are equal.",
        "drop pt = mIoU(7) points the variant loses, by basis:",
    ]
    used = dict.fromkeys(r.get("drop_basis") for r in rows)
    for basis, text in BASIS_TEXT.items():
        if basis in used or not rows:
            on = {r.get("recorded_on") for r in rows if r.get("drop_basis") == basis and r.get("recorded_on")}
            lines.append(f"  {basis} = {text}" + (f" ({', '.join(sorted(on))})" if on else ""))
    if any(r.get("recorded_pixels") is not None for r in rows):
        lines.append(f"A variant at {reference}'s input size whose pixel agreement here is more than "
                     f"{GUARD_MARGIN:g} points below the one recorded on its labelled set computes "
                     "differently here (a broken kernel or delegate) and is rejected.")
    return "\n".join(lines)


def chosen_line(chosen: dict) -> str:
    return (f"chosen: {Path(chosen['model']).name} ({chosen['input']}), threads {chosen['threads']}, "
            f"delegate {chosen['delegate']}: {chosen['fps']:.1f} FPS, drop {_drop(chosen['drop'])} "
            f"points ({chosen['drop_basis']}), agreement here {_pct(chosen['agreement'])}")


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in row.items()}


def profile_result(o, chosen: dict, rows: list[dict], reference, ref_miou, frames_text: str,
                   n_frames: int, skipped, notes) -> dict:
    """The device profile's content (edge_seg.device_profile.FORMAT)."""
    from edge_seg.backends.metadata import file_sha256
    from edge_seg.device_profile import FORMAT, device_info
    model_path = Path(chosen["model"])
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device_info(),
        "model": {"path": str(model_path), "sha256": file_sha256(model_path),
                  "variant": chosen["variant"], "input_size": chosen["input_size"]},
        "threads": chosen["threads"],
        "delegate": chosen["delegate"],
        "fps": chosen["fps"],
        "latency_ms": {"p50": chosen["p50_ms"], "p90": chosen["p90_ms"]},
        "agreement_miou7": chosen["agreement"],
        "drop_points": chosen["drop"],
        "drop_basis": f"{BASIS_NAME[chosen['drop_basis']]}: {BASIS_TEXT[chosen['drop_basis']]}",
        "miou7_labels": chosen.get("miou7_labels"),
        "criterion": {"max_drop": o.max_drop if o.max_drop is not None or o.target_fps is not None
                      else DEFAULT_MAX_DROP, "target_fps": o.target_fps,
                      "target_met": chosen.get("target_met"), "guard_margin_points": GUARD_MARGIN},
        "reference": {"path": str(reference.path.resolve()), "variant": reference.variant,
                      "input_size": list(reference.input_size), "miou7_labels": ref_miou},
        "frames": {"source": o.frames or "demo", "description": frames_text, "n": n_frames},
        "seconds_per_configuration": o.seconds,
        "table": [_clean(r) for r in rows],
        "skipped": [{"file": n, "why": w} for n, w in skipped],
        "notes": list(dict.fromkeys(notes)),
    }

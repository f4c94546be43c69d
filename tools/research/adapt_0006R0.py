"""Drive 0006R0 as the user's own street: the `edge-seg adapt` learning curve.

CamVid's drive 0006R0 (101 frames, one per second) is the drive the bundled model never saw.
This script plays the user: `edge-seg run --collect --collect-max N` goes over the drive's
frames in time order with the bundled int8 model and keeps the N it is least sure of (with
``--stand-in``: one frame in K instead, K = ``--every`` or 101 // N, the model's masks as
pre-labels); the first N collected are labelled with CamVid's ground truth mapped to
categories (written as CVAT's export and brought back by `edge-seg data import`); `edge-seg
adapt --holdout 0` adapts to them; parent and adapted model are scored with `edge-seg compare`
on the drive's frames that were NOT labelled, and on CamVid val and IDD-Lite val (from the
adapted model's card).

    python tools/research/adapt_0006R0.py --out /tmp/adapt-0006R0 --n 5 --n 10 --n 20 --n 40 \
        [--stand-in [--every K]] [-- extra edge-seg adapt options]

Writes OUT/collection-*/ (the collections), OUT/cvat-N-*.zip and OUT/labelled-N-*/ (the
labelled folders), OUT/rest-N-*/ (the frames scored, split test), OUT/run-N-*/ (each adapt
run) and OUT/curve.json + OUT/curve.md (the table of docs/adapting.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import cv2

from edge_seg.io.publish import atomic_write_bytes, atomic_write_json

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets"
CAMVID, IDD = SHARED / "camvid", SHARED / "idd-lite"
PARENT = REPO / "models" / "unet-mobilenetv2-camvid-idd.keras"
PARENT_INT8 = PARENT.with_name(PARENT.stem + "-int8.tflite")
EDGE_SEG = Path(sys.executable).with_name("edge-seg")
STAMP = "20261206T000000Z"  # the stand-in collection's capture time; stems sort by frame index


def drive_frames() -> list:
    """0006R0's frames in time order (their names sort in time)."""
    from edge_seg.train.datasets import load_split
    return sorted(load_split(CAMVID, "camvid", "drive-val"), key=lambda s: s.name)


def png(mask) -> bytes:
    ok, data = cv2.imencode(".png", mask)
    assert ok
    return data.tobytes()


def collect(out: Path, every: int) -> Path:
    """OUT/collection: every ``every``-th frame of the drive in the collection layout, the
    parent int8 model's masks as pre-labels (a stand-in for `edge-seg run --collect`)."""
    from edge_seg.backends.metadata import model_sha256
    from edge_seg.segmenter import Segmenter
    from edge_seg.train.labeling import mapping_json

    root = out / f"collection-every{every}"
    if (root / "mapping.json").is_file():
        return root
    seg = Segmenter(PARENT_INT8, threads=2)
    for index, sample in enumerate(drive_frames()):
        if index % every:
            continue
        stem = f"{STAMP}-{index:07d}"
        image = cv2.imread(str(sample.image))
        atomic_write_bytes(root / "images" / f"{stem}.png", sample.image.read_bytes())
        atomic_write_bytes(root / "masks" / f"{stem}.png", png(seg(image).mask))
        atomic_write_json(root / "meta" / f"{stem}.json", {
            "stem": stem, "time": "2026-12-06T00:00:00Z", "source": str(CAMVID / "train"),
            "frame_index": index, "source_name": sample.image.name, "model": PARENT_INT8.name,
            "model_sha256": model_sha256(PARENT_INT8), "reason": f"stand-in: 1 frame in {every}",
            "score": None, "scores": {}, "labelled": False})
    atomic_write_json(root / "mapping.json", mapping_json())
    return root


def tag(every: int) -> str:
    """How the frames were collected, in file names: run --collect, or one in ``every``."""
    return f"every{every}" if every else "run-collect"


def run_collect(out: Path, n: int) -> Path:
    """OUT/collection-maxN: `edge-seg run --collect` over the drive's frames in time order with
    the bundled int8 model, keeping the N frames it is least sure of."""
    root = out / f"collection-max{n}"
    if not (root / "mapping.json").is_file():
        subprocess.run([str(EDGE_SEG), "run", "--source", str(CAMVID / "train" / "0006R0_*.png"), "--headless",
                        "-q", "--collect", str(root), "--collect-max", str(n)], check=True)
    return root


def prepare(out: Path, n: int, every: int) -> tuple[Path, Path]:
    """OUT/labelled-N-everyK: the first N frames collected (by `edge-seg run --collect` when
    ``every`` is 0, else one in ``every``) labelled with CamVid's ground truth, through CVAT's
    export format and `edge-seg data import`; OUT/rest-N-everyK: the drive's other frames, as a
    folder dataset of split test (the frames scored)."""
    from edge_seg.train.datasets import read_mask
    from edge_seg.train.labeling import mapping_json, write_cvat_annotations

    collection = collect(out, every) if every else run_collect(out, n)
    by_name = {s.image.name: s for s in drive_frames()}
    metas = [json.loads(p.read_text()) for p in sorted((collection / "meta").glob("*.json"))]
    if n > len(metas):
        raise SystemExit(f"error: --n {n}: only {len(metas)} frames collected (every {every})")
    chosen = {m["stem"]: by_name[m["source_name"]] for m in metas[:n]}
    labelled, rest = out / f"labelled-{n}-{tag(every)}", out / f"rest-{n}-{tag(every)}"
    if not labelled.exists():
        annotations = out / f"cvat-{n}-{tag(every)}.zip"  # what CVAT exports once the labeller is done
        write_cvat_annotations({stem: read_mask(s) for stem, s in chosen.items()}, annotations)
        subprocess.run([str(EDGE_SEG), "data", "import", str(collection), str(annotations), "--format",
                        "cvat", "-o", str(labelled)], check=True)
    names = {s.image.name for s in chosen.values()}
    for sample in by_name.values():
        if sample.image.name in names or (rest / "images" / "test" / sample.image.name).exists():
            continue
        (rest / "images" / "test").mkdir(parents=True, exist_ok=True)
        os.symlink(sample.image.resolve(), rest / "images" / "test" / sample.image.name)
        atomic_write_bytes(rest / "masks" / "test" / sample.image.name, png(read_mask(sample)))
    atomic_write_json(rest / "mapping.json", mapping_json())
    return labelled, rest


def adapt(labelled: Path, run: Path, extra: list[str]) -> float:
    """`edge-seg adapt` on one labelled folder; its wall time in seconds."""
    cmd = [str(EDGE_SEG), "adapt", str(labelled), "--holdout", "0",
           "--out", str(run), "--base-data", str(CAMVID), "--base-data", str(IDD), "--quiet", *extra]
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def rest_scores(run: Path, rest: Path) -> dict:
    """Parent and adapted model, float and int8, on the drive's unlabelled frames."""
    from edge_seg.train.adapt import EvalSet, compare_pair, scores_of

    card = json.loads((run / "adapt.json").read_text())
    es = EvalSet("rest of 0006R0", rest, "test")
    return {"frames": len(list((rest / "images" / "test").iterdir())),
            "parent": scores_of(compare_pair(PARENT, PARENT_INT8, es)),
            "adapted": scores_of(compare_pair(run / card["files"]["adapted"]["file"],
                                              run / card["files"]["adapted_int8"]["file"], es))}


def row(n: int, every: int, run: Path, rest: Path, seconds: float) -> dict:
    card = json.loads((run / "adapt.json").read_text())
    sets = {"rest of 0006R0": rest_scores(run, rest), **{s["set"]: s for s in card["scores"]}}
    return {"n": n, "every": every, "adapt_seconds": round(seconds), "adapted_sha256": card["files"]["adapted"]["sha256"],
            "adapted_int8_sha256": card["files"]["adapted_int8"]["sha256"], "recipe": card["recipe"],
            "command": card["command"], "frames": {k: v.get("frames") for k, v in sets.items()},
            "sets": {k: {"parent": v["parent"], "adapted": v["adapted"]} for k, v in sets.items()}}


def table(rows: list[dict]) -> str:
    """mIoU(7) of parent -> adapted, float (int8), per N and set."""
    names = list(rows[0]["sets"])
    lines = ["| N (collected by) | " + " | ".join(f"{s}: parent -> adapted (points)" for s in names) + " | adapt wall |",
             "|---" * (len(names) + 2) + "|"]
    for r in rows:
        cells = []
        for s in names:
            p, a = r["sets"][s]["parent"], r["sets"][s]["adapted"]
            cells.append(f"{100 * p['float']['miou7']:.1f} -> {100 * a['float']['miou7']:.1f} "
                         f"({100 * (a['float']['miou7'] - p['float']['miou7']):+.1f}; int8 "
                         f"{100 * (a['int8']['miou7'] - p['int8']['miou7']):+.1f})")
        lines.append(f"| {r['n']} ({tag(r['every'])}) | " + " | ".join(cells) + f" | {r['adapt_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def merged(path: Path, rows: list[dict]) -> list[dict]:
    """``rows`` with those of an earlier (or parallel) run of the script on other N, by N."""
    old = json.loads(path.read_text()) if path.is_file() else []
    mine = {(r["n"], r["every"]) for r in rows}
    return sorted([r for r in old if (r["n"], r["every"]) not in mine] + rows, key=lambda r: (r["n"], r["every"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, action="append", help="labelled frames (repeat)")
    parser.add_argument("--every", type=int, default=0,
                        help="stand in for `run --collect` with one frame in K, K = 101 // N when 0 and "
                             "--stand-in [default: `edge-seg run --collect --collect-max N`]")
    parser.add_argument("--stand-in", action="store_true", help="collect one frame in --every K")
    parser.add_argument("extra", nargs="*", help="options passed on to edge-seg adapt (after --)")
    args = parser.parse_args(argv)
    rows = []
    for n in args.n or [5, 10, 20, 40]:
        every = (args.every or len(drive_frames()) // n) if args.stand_in else 0
        labelled, rest = prepare(args.out, n, every)
        run = args.out / f"run-{n}-{tag(every)}"
        seconds = adapt(labelled, run, args.extra)
        rows.append(row(n, every, run, rest, seconds))
        rows = merged(args.out / "curve.json", rows)
        atomic_write_json(args.out / "curve.json", rows)
        atomic_write_bytes(args.out / "curve.md", table(rows).encode())
        print(table(rows), flush=True)


if __name__ == "__main__":
    main()

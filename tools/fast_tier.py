"""Bundle the fast tier from a trained checkpoint, in one re-runnable command:

    make fast-tier FAST=runs/fast-s2/best.keras [SIZE=416x224]
    .venv/bin/python tools/fast_tier.py runs/fast-s2/best.keras [--size 416x224] [--data ../shared/datasets] [--out build/fast-tier]

1. the checkpoint becomes ``models/unet-mobilenetv2-fast-camvid-idd.keras``, rebuilt at
   ``--size`` with the same weights when that is not the size it was trained at (the network
   is fully convolutional, and a larger input can score better than the training size: the
   bundled file then takes that size natively in convert, compare, tune and run); its run's
   and its first stage's (``init_from``) configuration and history ``models/training/...``
   stay the training's own;
2. the calibration manifest of that size is made once (the reference's recipe at the fast
   tier's input size) and kept: the same frames for every checkpoint;
3. ``edge-seg convert --fp16 --int8`` with it;
4. ``edge-seg compare`` of the fast variants against their own float model on CamVid val,
   IDD-Lite drive-val, then CamVid drive-val (last: the gate's set is the drop each sidecar's
   ``accuracy`` keeps), and against the reference's float model on CamVid drive-val (each
   sidecar's ``reference_accuracy``, the scale ``edge-seg tune`` ranks both models on);
5. ``edge-seg tune --models models/`` for the speed of every bundled variant on this CPU;
6. the marked tables of the fast tier's card and of models/README.md rewritten from those
   outputs (between ``<!-- fast-tier:NAME -->`` and ``<!-- /fast-tier:NAME -->``).

A compare whose budget fails is reported and the bundling goes on: the gate is
tests/test_compare.py. Outputs (JSON, logs) stay in --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from edge_seg.converters.sizes import size_text

REPO = Path(__file__).resolve().parents[1]
STEM = "unet-mobilenetv2-fast-camvid-idd"
REFERENCE = "unet-mobilenetv2-camvid-idd"
MODELS = Path("models")
CARD = MODELS / f"{STEM}.md"
INDEX = MODELS / "README.md"
VARIANTS = ("fp16", "int8")
# (dataset folder, split, table name); drive-val last, see above
SETS = (("camvid", "val", "camvid-val"), ("idd-lite", "drive-val", "idd-lite-drive-val"),
        ("camvid", "drive-val", "camvid-drive-val"))
CATEGORIES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def edge_seg(*args, log: Path, check: bool = True) -> int:
    """Run one ``edge-seg`` command from the repository root, echoed and logged."""
    cmd = [str(Path(sys.executable).with_name("edge-seg")), *map(str, args)]
    shown = "edge-seg " + " ".join(map(str, args))
    print(f"$ {shown}", flush=True)
    start = time.monotonic()
    with open(log, "a") as f:
        f.write(f"$ {shown}\n")
        f.flush()
        done = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    print(f"  exit {done.returncode} after {time.monotonic() - start:.0f} s (output: {log})", flush=True)
    if check and done.returncode != 0:
        fail(f"{shown} exited {done.returncode}; see {log}", 1)
    return done.returncode


def calibration_manifest(size: tuple[int, int]) -> Path:
    """One manifest per input size: the frames are selected (and their fingerprints taken)
    at the size the int8 model is calibrated at."""
    return Path(f"calibration/camvid-drive-train-{size_text(size)}.json")


def checkpoint_size(checkpoint: Path) -> tuple[int, int]:
    config = json.loads((checkpoint.parent / "config.json").read_text())
    return tuple(config["input_size"])


def bundle_model(checkpoint: Path, trained: tuple[int, int], size: tuple[int, int]) -> None:
    """The checkpoint as models/STEM.keras: its bytes at the size it was ``trained`` at, else
    rebuilt at ``size`` with the same weights (saved under a partial name, published when
    complete)."""
    from edge_seg.io.publish import atomic_write_bytes, partial_path, publish

    target = REPO / MODELS / f"{STEM}.keras"
    if size == trained:
        atomic_write_bytes(target, checkpoint.read_bytes())
        return
    from edge_seg.converters.keras_model import load_keras_model
    from edge_seg.converters.sizes import rebuild_at_size

    tmp = partial_path(target)
    rebuild_at_size(load_keras_model(checkpoint), size).save(tmp)
    publish(tmp, target)


def copy_checkpoint(checkpoint: Path, size: tuple[int, int]) -> dict:
    """The checkpoint (at ``size``) and its runs' records into models/; returns its run
    configuration."""
    from edge_seg.io.publish import atomic_write_bytes

    run = checkpoint.parent
    config = json.loads((run / "config.json").read_text())
    bundle_model(checkpoint, tuple(config["input_size"]), size)
    stages = {"": run}
    if config.get("init_from"):
        stages["-stage1"] = Path(config["init_from"]).parent
    else:  # a first stage bundled on its own: no earlier stage's records
        for ext in ("config.json", "history.csv"):
            (REPO / MODELS / "training" / f"{STEM}-stage1.{ext}").unlink(missing_ok=True)
    for suffix, folder in stages.items():
        for name, ext in (("config.json", "config.json"), ("history.csv", "history.csv")):
            if (folder / name).is_file():
                atomic_write_bytes(REPO / MODELS / "training" / f"{STEM}{suffix}.{ext}",
                                   (folder / name).read_bytes())
    return config


def ensure_calibration(data: Path, size: tuple[int, int], log: Path) -> Path:
    manifest = calibration_manifest(size)
    if (REPO / manifest).is_file():
        print(f"{manifest}: kept (delete it to select the frames again)")
        return manifest
    edge_seg("calibrate", "--data", data / "camvid", "--split", "drive-train", "--n", "200",
             "--size", size_text(size), "-o", manifest, log=log)
    return manifest


def variant_files() -> list[Path]:
    return [MODELS / f"{STEM}-{v}.tflite" for v in VARIANTS]


def compare(float_model: Path, data: Path, split: str, name: str, out: Path, log: Path,
            budget: bool) -> dict:
    """One ``edge-seg compare`` of the fast variants; its JSON, its Markdown in models/."""
    models = ([MODELS / f"{STEM}.keras"] if float_model.stem != STEM else []) + variant_files()
    md = MODELS / f"compare-fast-{name}.md"
    limits = ["--max-drop", "0.5", "--max-category-drop", "1.5"] if budget else []
    args = ["compare", float_model, *models, "--data", data, "--split", split, *limits,
            "--json", out / f"{name}.json", "--markdown", md]
    code = edge_seg(*args, log=log, check=False)
    if code not in (0, 1):
        fail(f"edge-seg compare exited {code}; see {log}", 1)
    result = json.loads((out / f"{name}.json").read_text())
    footer(md, args, result, code)
    return result


def footer(md: Path, args, result: dict, code: int) -> None:
    """The command and the machine under the table compare wrote."""
    from edge_seg.device_profile import device_info
    from edge_seg.io.publish import atomic_write_bytes

    shown = " ".join(str(a) for a in args).replace(f" --json {args[args.index('--json') + 1]}", "")
    text = (REPO / md).read_text()
    text += (f"\nMade on {time.strftime('%Y-%m-%d', time.gmtime())} from the repository root by "
             f"`tools/fast_tier.py` ({device_info()['cpu']}, {result['threads']} threads"
             f"{'; budget exceeded, exit 1' if code == 1 else ''}):\n\n```sh\nedge-seg {shown}\n```\n")
    atomic_write_bytes(REPO / md, text.encode())


def tune(out: Path, log: Path) -> dict:
    """The tune profile, with the 1-minute load averages before and after it: timings on a
    shared CPU mean little without them."""
    import os

    from edge_seg.io.publish import atomic_write_json

    profile = out / "tune-profile.json"
    before = os.getloadavg()[0]
    edge_seg("tune", "--models", MODELS, "--frames", "demo", "--threads", "1,2", "--delegates",
             "xnnpack", "--seconds", "3", "--no-progress", "--profile", profile, log=log)
    result = json.loads(profile.read_text())
    result["load_average"] = [round(before, 1), round(os.getloadavg()[0], 1)]
    atomic_write_json(profile, result)
    return result


def bundle(checkpoint: Path, size: tuple[int, int], data: Path, out: Path) -> tuple[dict, dict, dict, dict]:
    """Steps 1-5; returns the run configuration, the own-float compares by set, the compare
    against the reference and the tune profile."""
    log = out / "bundle.log"
    log.write_text("")
    config = copy_checkpoint(checkpoint, size)
    calibration = ensure_calibration(data, size, log)
    edge_seg("convert", MODELS / f"{STEM}.keras", "--fp16", "--int8", "--calibration", calibration,
             "--calibration-root", data / "camvid", log=log)
    own = {name: compare(MODELS / f"{STEM}.keras", data / folder, split, name, out, log, True)
           for folder, split, name in SETS}
    vs_ref = compare(MODELS / f"{REFERENCE}.keras", data / "camvid", "drive-val",
                     "vs-reference-camvid-drive-val", out, log, False)
    return config, own, vs_ref, tune(out, log)


def outputs(out: Path) -> tuple[dict, dict, dict, dict]:
    """What bundle() returned, read back from models/ and --out."""
    def load(path):
        if not path.is_file():
            fail(f"{path}: missing; bundle a checkpoint first (make fast-tier FAST=...)")
        return json.loads(path.read_text())
    return (load(REPO / MODELS / "training" / f"{STEM}.config.json"),
            {name: load(out / f"{name}.json") for _, _, name in SETS},
            load(out / "vs-reference-camvid-drive-val.json"), load(out / "tune-profile.json"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, nargs="?",
                    help="the fast tier's trained .keras (a run's best.keras, config.json beside it)")
    ap.add_argument("--size", metavar="WxH",
                    help="the bundled model's input size (default: the checkpoint's own, from its "
                         "run's config.json); the same weights at another size, multiples of 32")
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets"),
                    help="folder holding camvid/ and idd-lite/ (relative to the repository root)")
    ap.add_argument("--out", type=Path, default=Path("build/fast-tier"), help="JSON outputs and the log")
    ap.add_argument("--tables-only", action="store_true",
                    help="rewrite the card's tables from the outputs of the last bundling in --out")
    args = ap.parse_args(argv)
    out = REPO / args.out
    if args.tables_only:
        results = outputs(out)
    else:
        checkpoint = args.checkpoint.expanduser().resolve() if args.checkpoint else None
        if checkpoint is None or not checkpoint.is_file() or not (checkpoint.parent / "config.json").is_file():
            fail(f"{args.checkpoint}: expected a run's checkpoint with config.json beside it")
        size = checkpoint_size(checkpoint)
        if args.size:
            from edge_seg.preprocess import parse_size
            try:
                size = parse_size(args.size)
            except ValueError as e:
                fail(f"--size: {e}")
        out.mkdir(parents=True, exist_ok=True)
        results = bundle(checkpoint, size, args.data, out)

    from card_tables import fill_tables
    fill_tables(REPO, *results)
    print(f"updated {CARD} and {INDEX}; outputs in {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()

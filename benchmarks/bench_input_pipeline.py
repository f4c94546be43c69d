"""The input-pipeline target: the tf.data stream alone delivers >= 3x the training step rate.

    .venv/bin/python benchmarks/bench_input_pipeline.py [--data ../shared/datasets/camvid]
        [--arch unet-mobilenetv2] [--batch 8] [--steps 12] [--json out.json]

Both rates are measured in one run, on the CPU named in the header, the way training uses them:

* pipeline: ``train.pipeline.make_dataset(training=True)`` (decode cache warmed by one pass,
  as after the first epoch), batches pulled as fast as possible, nothing else running;
* training: the trainer's step (forward, CE+Dice loss, gradients, AdamW update) on batches
  already in memory, so it measures the model alone.

Without ``--data`` (or when it is missing) it uses synthetic street scenes written in CamVid
layout. The training rate is the first one in the ratio: a faster device makes the target harder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from edge_seg.train.tf_env import use_legacy_keras  # noqa: E402

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import print_header  # noqa: E402


def pipeline_rate(ds, batches: int) -> float:
    it = iter(ds)
    next(it)  # first batch pays for start-up
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - t)


def train_rate(arch: str, size, batch_xy, steps: int) -> float:
    import tensorflow as tf
    import tf_keras as keras

    from edge_seg.train.losses import make_loss
    from edge_seg.train.models import build_model

    model = build_model(arch, size)
    optimizer = keras.optimizers.AdamW(1e-3)
    loss_fn = make_loss("ce+dice", None, 1.0)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    x, y = batch_xy
    float(step(x, y))  # trace + first step
    float(step(x, y))
    t = time.perf_counter()
    for _ in range(steps):
        float(step(x, y))
    return steps / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/camvid")
    p.add_argument("--arch", default="unet-mobilenetv2")
    p.add_argument("--size", default="512x256")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="training steps timed")
    p.add_argument("--batches", type=int, default=200, help="pipeline batches timed")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import tensorflow as tf

    from edge_seg.preprocess import parse_size
    from edge_seg.train.datasets import load_split
    from edge_seg.train.pipeline import make_dataset

    size = parse_size(args.size)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or f"TensorFlow default ({os.cpu_count()})"
    header = print_header(threads, size, None)
    print(f"model {args.arch} (random init), batch {args.batch}")
    root = args.data
    if not root.is_dir():
        from edge_seg.train.synthetic_dataset import write_dataset
        root = Path(tempfile.mkdtemp(prefix="edge-seg-bench-")) / "camvid"
        write_dataset(root, "camvid", n_train=64, n_val=8)
        print(f"{args.data} is absent: using synthetic scenes in {root}")
    samples = load_split(root, "auto", "train")
    ds = make_dataset(samples, size=size, batch=args.batch, training=True, seed=0)

    warm = (len(samples) + args.batch - 1) // args.batch + 2
    print(f"warming the decode cache over {len(samples)} frames ...", flush=True)
    pipeline_rate(ds, warm)
    pipe = pipeline_rate(ds, args.batches)
    print(f"tf.data pipeline alone: {pipe:.2f} batches/s of {args.batch}", flush=True)
    batch_xy = next(iter(ds))
    train = train_rate(args.arch, size, batch_xy, args.steps)
    ratio = pipe / train
    print(f"training step ({args.arch}, {size[0]}x{size[1]}, batch {args.batch}): {train:.3f} steps/s")
    print(f"pipeline / training = {ratio:.1f}x  (target >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    print(f"threads: tf intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": header, "pipeline_batches_per_s": pipe, "train_steps_per_s": train,
                                         "ratio": ratio, "batch": args.batch, "arch": args.arch,
                                         "size": list(size), "data": str(root)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

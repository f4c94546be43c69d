"""`edge-seg adapt`: the holdout, the card and metadata naming the parent, atomic output,
bad input. A tiny U-Net (tests/model_builder.py) adapts to a tiny synthetic labelled folder
mixed with a tiny synthetic base dataset."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import TESTS, edge_seg

from edge_seg.errors import UserError

STAMP = "20261206T101500Z"


def write_labelled(root: Path, n: int, labelled: bool = True, size=(128, 64), order=None) -> list[str]:
    """A labelled folder in the collection layout (images/, masks/ catIds, mapping.json,
    meta/), its frames written in ``order`` (default: shuffled) so that nothing but the stems
    can give the capture order; the stems in capture order."""
    from edge_seg.scenes.clip import render_scene
    from edge_seg.train.labeling import mapping_json

    stems = [f"{STAMP}-{i:07d}" for i in range(n)]
    order = order if order is not None else list(np.random.default_rng(7).permutation(n))
    for d in ("images", "masks", "meta"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in order:
        scene = render_scene(100 + int(i), size)
        cv2.imwrite(str(root / "images" / f"{stems[i]}.png"), scene.image)
        cv2.imwrite(str(root / "masks" / f"{stems[i]}.png"), scene.categories)
        (root / "meta" / f"{stems[i]}.json").write_text(json.dumps(
            {"stem": stems[i], "frame_index": int(i), "labelled": labelled}))
    (root / "mapping.json").write_text(json.dumps(mapping_json()))
    return stems


# ------------------------------------------------------------------ the new frames (no TensorFlow)

def test_holdout_is_the_last_frames_in_time_order(tmp_path):
    from edge_seg.train.adapt import labelled_frames, split_holdout

    stems = write_labelled(tmp_path / "street", 10, size=(64, 32))
    frames = labelled_frames(tmp_path / "street")
    assert [s.name for s in frames] == stems
    train, held = split_holdout(frames, 0.2)
    assert [s.name for s in held] == stems[8:] and [s.name for s in train] == stems[:8]
    train, held = split_holdout(frames, 0.25)  # a part of a frame holds a whole one out
    assert [s.name for s in held] == stems[7:]
    assert len(split_holdout(frames, 0.3)[1]) == 3  # not 4: 0.3 * 10 is 3.0000000000000004 in floats
    assert split_holdout(frames, 0.0) == (frames, [])


def test_prelabels_are_not_labels(tmp_path):
    """A collection's masks are the model's guesses: only frames marked labelled train."""
    from edge_seg.train.adapt import labelled_frames

    stems = write_labelled(tmp_path / "street", 4, size=(64, 32))
    meta = tmp_path / "street" / "meta" / f"{stems[1]}.json"
    meta.write_text(json.dumps({"stem": stems[1], "labelled": False}))
    assert [s.name for s in labelled_frames(tmp_path / "street")] == [stems[0], *stems[2:]]
    write_labelled(tmp_path / "collected", 3, labelled=False, size=(64, 32))
    with pytest.raises(UserError, match="pre-labels"):
        labelled_frames(tmp_path / "collected")


def test_too_few_frames_for_the_holdout(tmp_path):
    from edge_seg.train.adapt import labelled_frames, split_holdout

    write_labelled(tmp_path / "street", 1, size=(64, 32))
    with pytest.raises(UserError, match="too few"):
        split_holdout(labelled_frames(tmp_path / "street"), 0.2)


def test_encoder_blocks_by_layer_name():
    """--freeze-blocks N reaches MobileNetV2's stem and blocks below N, never the decoder."""
    from edge_seg.train.adapt import block_of

    assert [block_of(n) for n in ("Conv1", "bn_Conv1", "expanded_conv_project_BN", "block_2_add",
                                  "block_12_depthwise", "dec16_a_dw", "head", "block_x")] == \
        [0, 0, 0, 2, 12, None, None, None]


def test_a_failed_run_leaves_no_output(tmp_path, monkeypatch):
    """The run folder appears complete or not at all: a failure after training started
    removes everything written under the temporary name."""
    from edge_seg.train import adapt

    write_labelled(tmp_path / "street", 5, size=(64, 32))
    base = tmp_path / "base"
    from edge_seg.train.synthetic_dataset import write_dataset
    write_dataset(base, "folder", n_train=2, n_val=1, size=(64, 32), seed=1)
    model = tmp_path / "parent.keras"
    model.write_bytes(b"not read: training fails first")
    seen = []

    def failing_training(opts, new_train, val, run_dir, final):
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text("{}")
        seen.append(run_dir.parent)
        raise UserError("stopped")

    monkeypatch.setattr(adapt, "train_adapted", failing_training)
    opts = adapt.AdaptOptions(tmp_path / "street", tmp_path / "run", model, (str(base),))
    with pytest.raises(UserError, match="stopped"):
        adapt.run_adapt(opts)
    assert seen and seen[0].name.startswith(".run.partial")
    assert not (tmp_path / "run").exists() and not seen[0].exists()


@pytest.mark.parametrize("case, args, message", [
    ("empty", [], "not a collection folder"),
    ("collected", [], "pre-labels"),
    ("one", [], "too few"),
    ("one", ["--new-weight", "0"], "--new-weight"),
    ("one", ["--model", "{tmp}/missing.keras"], "no such file"),
    ("one", ["--base-data", "{tmp}/nowhere"], "dataset folder not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, args, message):
    (tmp_path / "empty").mkdir()
    write_labelled(tmp_path / "collected", 2, labelled=False, size=(64, 32))
    write_labelled(tmp_path / "one", 1, size=(64, 32))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = edge_seg("adapt", tmp_path / case, "--out", tmp_path / "run", *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ a whole run (TensorFlow)

@pytest.fixture(scope="module")
def tiny_parent(tmp_path_factory) -> Path:
    """A tiny U-Net (tests/model_builder.py) saved as the parent .keras."""
    import sys
    sys.path.insert(0, str(TESTS))
    from model_builder import build_unet

    path = tmp_path_factory.mktemp("parent") / "tiny-parent.keras"
    build_unet((128, 64), (8, 16, 24), seed=1, batch_size=None).save(path)
    return path


@pytest.mark.slow
def test_adapt_writes_the_card_and_names_the_parent(tmp_path, tiny_parent):
    from edge_seg.backends.metadata import model_sha256, read_embedded, read_meta
    from edge_seg.segmenter import Segmenter
    from edge_seg.train.synthetic_dataset import write_dataset

    stems = write_labelled(tmp_path / "street", 6)
    base = write_dataset(tmp_path / "base", "folder", n_train=4, n_val=2, size=(128, 64), seed=2)
    run = tmp_path / "run"
    out = edge_seg("adapt", tmp_path / "street", "--model", tiny_parent, "--base-data", base,
                   "--holdout", "0.3", "--steps", "3", "--warmup-steps", "1", "--batch", "2",
                   "--calibration", base, "--max-drop", "100", "--quiet", "--out", run,
                   env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    parent_sha = model_sha256(tiny_parent)

    report = json.loads((run / "adapt.json").read_text())
    assert report["parent"] == {"model": "tiny-parent.keras", "sha256": parent_sha}
    assert report["new_frames"]["holdout"] == stems[4:]            # the last two in time order
    assert report["new_frames"]["train"] == stems[:4]
    assert sorted(p.stem for p in (run / "holdout" / "images" / "test").iterdir()) == stems[4:]
    assert [s["set"] for s in report["scores"]] == ["held-out new frames", "base val"]
    assert report["scores"][0]["frames"] == 2

    card = (run / "README.md").read_text()
    assert parent_sha[:12] in card and "tiny-parent.keras" in card and stems[4] in card

    int8 = run / "tiny-parent-adapted-int8.tflite"
    for variant in (int8, run / "tiny-parent-adapted-fp16.tflite"):
        assert read_meta(variant)["parent"] == report["parent"]      # sidecar ...
        assert read_embedded(variant)["parent"] == report["parent"]  # ... and the copy inside
    assert read_meta(int8)["accuracy"]["labelled_set"]["frames"] == 2  # the gate, on the held-out frames
    assert read_meta(int8)["source_model"]["sha256"] == model_sha256(run / "tiny-parent-adapted.keras")
    assert "adapted from tiny-parent.keras " + parent_sha[:12] in Segmenter(int8, threads=1).describe()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    # the run folder is a set of variants `tune` measures as it is
    tuned = edge_seg("tune", "--models", run, "--frames", "demo", "--n-frames", "2", "--threads", "1",
                     "--delegates", "xnnpack", "--seconds", "0.2", "--warmup", "1", "--no-profile",
                     "--no-progress")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "tiny-parent-adapted-int8.tflite" in tuned.stdout

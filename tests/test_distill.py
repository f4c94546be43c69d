"""Distillation (`edge-seg train --teacher`): the loss against a hand computation, the
weight-0 loss against the plain one, the teacher's soft targets, and a 3-step run with a
tiny teacher that checkpoints and resumes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET_TF, edge_seg

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")

from edge_seg.labels import IGNORE, NUM_CATEGORIES, VOID  # noqa: E402
from edge_seg.mapping import set_code  # noqa: E402
from edge_seg.train.distill import Teacher, make_distill_loss, soft_target_mask  # noqa: E402
from edge_seg.train.losses import make_loss  # noqa: E402

FLAT, CONSTRUCTION, NATURE, SKY = 1, 2, 4, 5
COARSE = set_code([CONSTRUCTION, NATURE])


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _pixels():
    """One exact, one set-valued, one ignore and one void pixel as a (1, 2, 2) batch."""
    rng = np.random.default_rng(3)
    labels = np.array([[[FLAT, COARSE], [IGNORE, VOID]]], np.int32)
    student = rng.normal(0, 2, (1, 2, 2, NUM_CATEGORIES)).astype(np.float32)
    teacher = np.stack([_softmax(z) for z in rng.normal(0, 2, (4, NUM_CATEGORIES))]).reshape(1, 2, 2, -1)
    return labels, student, teacher.astype(np.float32)


def _kl_by_hand(labels, student, teacher, t):
    """Per pixel, written out: KL(q || softmax(z / t)), q the teacher restricted to a set
    pixel's members and renormalised, the teacher as it is elsewhere."""
    total = []
    for (i, j), label in np.ndenumerate(labels[0]):
        q = teacher[0, i, j].astype(np.float64)
        if label == COARSE:
            q = np.where(np.isin(np.arange(NUM_CATEGORIES), [CONSTRUCTION, NATURE]), q, 0.0)
            q = q / q.sum()
        p = _softmax(student[0, i, j].astype(np.float64) / t)
        total.append(sum(qc * math.log(qc / pc) for qc, pc in zip(q, p) if qc > 0))
    return np.mean(total)


def test_the_restriction_table_narrows_set_pixels_only():
    table = soft_target_mask()
    assert table[COARSE].tolist() == [c in (CONSTRUCTION, NATURE) for c in range(NUM_CATEGORIES)]
    assert table[FLAT].all() and table[VOID].all() and table[IGNORE].all()


@pytest.mark.parametrize("t", [1.0, 2.5])
def test_the_distillation_loss_equals_the_hand_computation(t):
    labels, student, teacher = _pixels()
    hard = make_loss("ce")
    a = 0.3
    loss = make_distill_loss(hard, a, t)
    got = float(loss(tf.constant(labels), tf.constant(student), tf.constant(teacher)))
    kd = t * t * _kl_by_hand(labels, student, teacher, t)
    want = (1 - a) * float(hard(tf.constant(labels), tf.constant(student))) + a * kd
    assert got == pytest.approx(want, rel=1e-5)
    # the set pixel's target puts nothing outside its set: a teacher sure of sky there
    # asks the student for construction|nature in the teacher's own proportions
    sure_sky = teacher.copy()
    sure_sky[0, 0, 1] = np.where(np.arange(NUM_CATEGORIES) == SKY, 0.97, 0.03 / 7)
    kd_sky = float(loss.kd_term(tf.constant(labels), tf.constant(student), tf.constant(sure_sky)))
    assert kd_sky == pytest.approx(t * t * _kl_by_hand(labels, student, sure_sky, t), rel=1e-5)


@pytest.mark.parametrize("kind", ["ce", "ce+dice"])
def test_with_weight_zero_the_loss_is_the_hard_loss_exactly(kind):
    labels, student, teacher = _pixels()
    hard = make_loss(kind, class_weights=[0, 0.5, 1, 2, 1, 0.7, 2.3, 1.1])
    args = tf.constant(labels), tf.constant(student)
    assert float(make_distill_loss(hard, 0.0, 2.0)(*args, tf.constant(teacher))) == float(hard(*args))


def _tiny_teacher(path: Path, size=(128, 64)) -> Path:
    import tf_keras as keras

    from edge_seg.train.models import build_model

    keras.utils.set_random_seed(1)
    build_model("unet-small", size, 0.25).save(path)
    return path


def test_the_teacher_sees_the_batch_at_its_own_scale_and_averages_the_mirror(tmp_path):
    """A 128x64 teacher for a 64x32 student: a 64x32 crop reaches it at 128x64; its
    flip-averaged targets are the mean of its two passes, resized to the student's size."""
    path = _tiny_teacher(tmp_path / "teacher.keras")
    teacher = Teacher(path, student_size=(64, 32), fit_size=(64, 32), temperature=2.0, flip=True)
    assert teacher.size == (128, 64)
    x = tf.random.stateless_uniform((2, 32, 64, 3), (1, 2), -1, 1)
    got = teacher(x, (32, 64)).numpy()
    big = tf.image.resize(x, (64, 128))
    model = teacher.model
    p = tf.nn.softmax(model(big) / 2.0) + tf.nn.softmax(tf.reverse(model(tf.reverse(big, [2])), [2]) / 2.0)
    want = tf.image.resize(p / 2.0, (32, 64)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(Exception, match="multiples of 32"):
        Teacher(path, student_size=(96, 64), fit_size=(64, 64))  # 64 * 128 / 96: no multiple of 32


@pytest.mark.slow
def test_a_short_distilled_run_checkpoints_and_resumes(synthetic_camvid, tmp_path):
    teacher = _tiny_teacher(tmp_path / "teacher.keras")
    run_dir = tmp_path / "run"
    common = ["--data", synthetic_camvid, "--run-dir", run_dir, "--quiet"]
    out = edge_seg("train", *common, "--arch", "unet-mobilenetv2", "--alpha", "0.35",
                   "--decoder-widths", "32,24,16,8", "--input-size", "64x32", "--batch", "2",
                   "--max-val-samples", "4", "--epochs", "1", "--steps-per-epoch", "3",
                   "--teacher", teacher, "--teacher-flip", "--distill-weight", "0.7", "--temperature", "3",
                   env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["teacher"], config["teacher_flip"], config["distill_weight"], config["temperature"]) == \
        (str(teacher), True, 0.7, 3.0)
    assert config["decoder_widths"] == [32, 24, 16, 8] and len(config["teacher_sha256"]) == 64
    assert math.isfinite(json.loads((run_dir / "last" / "state.json").read_text())["history"][0]["loss"])

    out = edge_seg("train", *common, "--resume", "--epochs", "2", env=QUIET_TF)
    assert out.returncode == 0, out.stderr[-3000:]
    state = json.loads((run_dir / "last" / "state.json").read_text())
    assert [row["epoch"] for row in state["history"]] == [1, 2]

    _tiny_teacher(teacher, (64, 32))  # another teacher under the same name
    out = edge_seg("train", *common, "--resume", "--epochs", "3", env=QUIET_TF)
    assert out.returncode == 2 and "changed since the run began" in out.stderr


def test_decoder_widths_narrow_the_student_and_its_macs():
    from edge_seg.errors import UserError
    from edge_seg.train.models import build_model, count_macs

    wide = build_model("unet-mobilenetv2", (64, 32), 0.35)
    narrow = build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 16, 8])
    assert [narrow.get_layer(f"dec{s}_a_pw_conv").filters for s in (16, 8, 4, 2)] == [32, 24, 16, 8]
    assert count_macs(narrow) < count_macs(wide)
    with pytest.raises(UserError, match="unet-mobilenetv2 only"):
        build_model("unet-small", (64, 32), 0.5, decoder_widths=[32, 24, 16, 8])
    with pytest.raises(UserError, match="four positive"):
        build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24])


def test_three_decoder_widths_end_the_decoder_at_stride_4_and_convert_drops_the_x4():
    """A faster graph than the default: no stride-2 decoder step, logits at stride 4 in the
    exported graph (the runtime upsamples them once, at display size)."""
    from edge_seg.converters.keras_model import final_upsampling, logits_model
    from edge_seg.train.models import build_model, count_macs

    four = build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 16, 8])
    three = build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 16])
    assert "dec2_a_pw_conv" not in [layer.name for layer in three.layers]
    assert three.get_layer("head").input_shape[1:3] == (8, 16)
    assert three.output_shape[1:] == four.output_shape[1:] == (32, 64, 8)
    assert count_macs(three) < count_macs(four)
    assert final_upsampling(three) == 4 and final_upsampling(four) == 2
    trimmed, stride = logits_model(three)
    assert stride == 4 and trimmed.output_shape[1:] == (8, 16, 8)


def test_width_0_at_stride_2_refines_the_stride_4_logits_with_one_1x1_conv():
    from edge_seg.converters.keras_model import logits_model
    from edge_seg.errors import UserError
    from edge_seg.train.models import build_model, count_macs

    three = build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 16])
    four = build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 16, 8])
    refined = build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 16, 0])
    names = [layer.name for layer in refined.layers]
    assert "dec2_a_pw_conv" not in names and {"head4", "refine_cat", "head"} <= set(names)
    # the 1x1 refinement sees the 8 upsampled logits and the 16*alpha-channel stride-2 skip
    assert refined.get_layer("head").input_shape[1:] == (16, 32, 8 + 8)
    assert count_macs(three) < count_macs(refined) < count_macs(four)
    trimmed, stride = logits_model(refined)
    assert stride == 2 and trimmed.output_shape[1:] == (16, 32, 8)
    with pytest.raises(UserError, match="four positive"):
        build_model("unet-mobilenetv2", (64, 32), 0.35, decoder_widths=[32, 24, 0, 8])

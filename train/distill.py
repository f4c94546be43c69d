"""Knowledge distillation for ``edge-seg train --teacher MODEL.keras``.

A frozen teacher runs on the very batch the student trains on, inside the training step,
so its soft targets follow every crop, flip and colour jitter of the augmentation. The
loss is ``(1 - A) * hard + A * T^2 * KL(teacher_T || student_T)`` per pixel (Hinton et
al. 2015: ``T^2`` keeps the soft term's gradients on the hard term's scale whatever T).

Soft targets by the label under the pixel:

* an exact label: the teacher's distribution as it is (the hard term already says which
  category is right; what the teacher adds is how wrong the others are);
* a set-valued (coarse) label, e.g. IDD-Lite's "construction or nature": the teacher's
  distribution restricted to the set and renormalised, which is the exact soft label the
  coarse annotation could not give;
* void and ignore (unlabelled, padding): the teacher's distribution alone, so the student
  learns what the teacher sees on pixels no annotator labelled; the hard term skips them.

Sizes: the student's batch is resized (bilinear) by the ratio of the teacher's input size
to the student's, so the teacher sees objects at the scale it was trained at, and its
probabilities are resized back to the student's logits. A student at 384x192 taught by a
512x256 teacher thus trains on frames the teacher sees upsampled by 4/3.

``--teacher-flip`` averages the teacher's probabilities over the frame and its mirror
image (the flip test-time augmentation), at twice the teacher's cost per step.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edge_seg.errors import UserError
from edge_seg.labels import NUM_CATEGORIES
from edge_seg.mapping import allowed_table, set_code_mask


def check_distill(cfg) -> None:
    """Fail on distillation options that cannot work, before any data is read."""
    if not cfg.teacher:
        return
    if not Path(cfg.teacher).is_file():
        raise UserError(f"--teacher {cfg.teacher}: no such model file")
    if not 0.0 <= cfg.distill_weight <= 1.0:
        raise UserError(f"--distill-weight {cfg.distill_weight:g}: must be between 0 and 1")
    if not cfg.temperature > 0:
        raise UserError(f"--temperature {cfg.temperature:g}: must be > 0")


def teacher_record(cfg, saved: dict | None) -> dict:
    """config.json's record of the teacher; a resume refuses a teacher file that changed
    since the run began (its soft targets would no longer be the run's)."""
    if not cfg.teacher:
        return {}
    sha = hashlib.sha256(Path(cfg.teacher).read_bytes()).hexdigest()
    before = (saved or {}).get("teacher_sha256")
    if before and before != sha:
        raise UserError(f"--teacher {cfg.teacher}: the file changed since the run began "
                        f"(sha256 {sha[:12]}, the run's {before[:12]}); restore it or start a new run")
    return {"teacher_resolved": str(Path(cfg.teacher).resolve()), "teacher_sha256": sha}


def soft_target_mask(num_classes: int = NUM_CATEGORIES) -> np.ndarray:
    """(256, C) bool: the categories the teacher's distribution is restricted to, by mask
    value: a set code's members; every other value (exact, void, ignore) all of them."""
    table = np.ones((256, num_classes), bool)
    codes = np.arange(256, dtype=np.uint8)
    is_set = set_code_mask(codes)
    table[is_set] = allowed_table(num_classes)[is_set]
    return table


def make_distill_loss(hard_loss, weight: float, temperature: float, num_classes: int = NUM_CATEGORIES):
    """loss(labels (B,H,W), student logits (B,H,W,C), teacher probabilities at temperature
    ``temperature`` (B,H,W,C)) -> scalar. With ``weight`` 0 it is ``hard_loss`` itself."""
    import tensorflow as tf

    restrict = tf.constant(soft_target_mask(num_classes))
    t = float(temperature)

    def kd_term(labels, logits, teacher_probs):
        inside = tf.gather(restrict, tf.clip_by_value(tf.cast(labels, tf.int32), 0, 255))
        q = tf.where(inside, tf.cast(teacher_probs, tf.float32), 0.0)
        q = q / tf.maximum(tf.reduce_sum(q, -1, keepdims=True), 1e-12)
        log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32) / t, -1)
        kl = tf.reduce_sum(tf.math.xlogy(q, q) - q * log_p, -1)
        return t * t * tf.reduce_mean(kl)

    def loss(labels, logits, teacher_probs):
        if weight == 0:
            return hard_loss(labels, logits)
        return (1.0 - weight) * hard_loss(labels, logits) + weight * kd_term(labels, logits, teacher_probs)

    loss.kd_term = kd_term
    return loss


def resized_input(model, size):
    """``model`` (functional, fully convolutional) rebuilt for (width, height) inputs with
    the same weights: the teacher sees crops as large as the student's, at its own scale."""
    import tf_keras as keras

    w, h = size
    if tuple(model.input_shape[1:3]) == (h, w):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_input_shape"] = (None, h, w, model.input_shape[-1])
    twin = keras.Model.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


class Teacher:
    """The frozen teacher: ``teacher(x, out_hw)`` is its distribution at the temperature
    for the student's normalised batch ``x``, at ``out_hw``, without gradient."""

    def __init__(self, path, student_size, fit_size, temperature: float = 1.0, flip: bool = False):
        import tf_keras as keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 -- a corrupt or foreign file is a user error
            raise UserError(f"--teacher {path}: not a loadable Keras model ({type(e).__name__}: {e})") from None
        model.trainable = False
        th, tw = model.input_shape[1:3]
        self.size = (int(round(fit_size[0] * tw / student_size[0])), int(round(fit_size[1] * th / student_size[1])))
        if self.size[0] % 32 or self.size[1] % 32:
            raise UserError(f"--teacher {path}: at its {tw}x{th} scale the student's {fit_size[0]}x{fit_size[1]} "
                            f"batches become {self.size[0]}x{self.size[1]}, not multiples of 32; choose a "
                            "--crop (or --input-size) that scales to multiples of 32")
        self.model = resized_input(model, self.size)
        self.temperature, self.flip = float(temperature), flip

    def __call__(self, x, out_hw):
        import tensorflow as tf

        w, h = self.size
        if tuple(x.shape[1:3]) != (h, w):
            x = tf.image.resize(x, (h, w), method="bilinear")
        probs = tf.nn.softmax(self.model(x, training=False) / self.temperature, -1)
        if self.flip:
            mirrored = tf.reverse(self.model(tf.reverse(x, [2]), training=False), [2])
            probs = 0.5 * (probs + tf.nn.softmax(mirrored / self.temperature, -1))
        if tuple(probs.shape[1:3]) != tuple(out_hw):
            probs = tf.image.resize(probs, out_hw, method="bilinear")
        return tf.stop_gradient(probs)

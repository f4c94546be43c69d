"""Quantisation-aware fine-tuning with tensorflow-model-optimization.

``tfmot.quantization.keras.quantize_model`` wraps the float model with fake-quant ops;
a short fine-tune at low learning rate on the training split (through
``edge_seg.train.pipeline.make_dataset``, the training augmentation included) lets the weights
adapt to int8 before full-integer conversion. BatchNorm layers are frozen (their
statistics stay those of the float model), as usual for QAT on small batches.

The fine-tune distils the float model: the loss is the cross-entropy between the float
model's softmax and the quantised model's, over every pixel. QAT's job is to stay where
the float model is, and the labels pulled it elsewhere: fine-tuned on label
cross-entropy (void not ignored, no class weights) the reference's QAT variant gained 2.5
points overall but lost 10.8 points of object IoU.

Conv weights stay per channel (tfmot's scheme) even though post-training ``--int8`` is per
tensor by default: tfmot fake-quantises the kernel before BatchNorm is folded into it, and
the converter folds the per-channel BN scale in afterwards, which a per-channel scale
absorbs exactly and a per-tensor one does not (tried: -9.8 points of mIoU(7)).
"""
from __future__ import annotations

import time

import numpy as np

from edge_seg.errors import UserError


def _registry():
    import tensorflow_model_optimization as tfmot
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()


def check_quantizable(model) -> None:
    """UserError naming the first layer the default 8-bit QAT scheme can't handle."""
    import tf_keras as keras

    registry = _registry()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise UserError(f"--qat: layer '{layer.name}' is a nested model; tfmot quantises flat models "
                            "only: build the backbone on the model's input tensor (one functional graph)")
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.BatchNormalization)):
            continue  # BatchNorm is folded into the preceding convolution by tfmot's transforms
        if isinstance(layer, keras.layers.Lambda) or type(layer).__name__ in ("TFOpLambda", "SlicingOpLambda"):
            raise UserError(
                f"--qat: layer '{layer.name}' ({type(layer).__name__}) wraps arbitrary TensorFlow ops that "
                f"tensorflow-model-optimization cannot quantise; fix: replace it with Keras layers "
                f"(Conv2D, ReLU, Add, UpSampling2D...) or a custom layer with a QuantizeConfig, or use "
                f"post-training --int8 instead")
        if not registry.supports(layer):
            raise UserError(
                f"--qat: layer '{layer.name}' ({type(layer).__name__}) is not supported by "
                f"tensorflow-model-optimization's default 8-bit scheme; fix: replace it with a "
                f"supported layer (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add, "
                f"Concatenate, UpSampling2D...), or annotate it with a QuantizeConfig, or use "
                f"post-training --int8 instead")


def quantize(model):
    """The fake-quant (QAT) model, BatchNorm frozen."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    check_quantizable(model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    try:
        return tfmot.quantization.keras.quantize_model(clone)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"--qat: tensorflow-model-optimization cannot quantise this model "
                        f"({str(e).splitlines()[0]}); fix: replace the layer it names with a supported "
                        f"one, or use post-training --int8") from None


def qat_finetune(model, calibration, size, epochs: int = 1, steps=None, lr: float = 1e-5,
                 batch: int = 4, seed: int = 0, log=print):
    """(QAT model, info dict). Trains on the train split of the calibration set's dataset."""
    import tf_keras as keras

    from edge_seg.train.datasets import load_split
    from edge_seg.train.pipeline import make_dataset, steps_per_epoch

    if epochs < 1:
        raise UserError(f"--qat-epochs {epochs}: must be at least 1")
    fmt = calibration.manifest.get("dataset", {}).get("format", "auto")
    samples = load_split(calibration.root, fmt, "train")
    steps = steps or steps_per_epoch(len(samples), batch)
    keras.utils.set_random_seed(seed)
    q_model = quantize(model)
    ds = make_dataset(samples, size, batch=batch, training=True, seed=seed)
    log(f"  QAT fine-tune (distilling the float model): {epochs} epoch(s) x {steps} steps, batch {batch}, "
        f"lr {lr:g}, {len(samples)} training frames")
    start = time.time()
    losses = distill(q_model, model, ds, epochs, steps, lr)
    info = {"epochs": epochs, "steps_per_epoch": steps, "batch": batch, "learning_rate": lr,
            "train_frames": len(samples), "dataset_root": str(calibration.root),
            "loss": losses, "objective": "distillation: cross-entropy to the float model's softmax",
            "wall_time_s": round(time.time() - start, 1), "batchnorm": "frozen"}
    log(f"  QAT done in {info['wall_time_s']:.0f} s, loss per epoch {[round(v, 4) for v in losses]}")
    return q_model, info


def distill(student, teacher, ds, epochs: int, steps: int, lr: float) -> list[float]:
    """Fine-tune ``student`` towards ``teacher``'s per-pixel softmax; mean loss per epoch."""
    import tensorflow as tf
    import tf_keras as keras

    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step(x):
        target = tf.nn.softmax(teacher(x, training=False))
        with tf.GradientTape() as tape:
            logits = student(x, training=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits))
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    it, per_epoch = iter(ds), []
    for _ in range(epochs):
        per_epoch.append(float(np.mean([float(step(next(it)[0])) for _ in range(steps)])))
    return per_epoch

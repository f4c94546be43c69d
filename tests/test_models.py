"""Architectures: shapes, cost, bad input, and that tfmot / TFLite int8 accept them."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tf_keras")
from edge_seg.errors import UserError  # noqa: E402
from edge_seg.train.models import ARCHS, build_model, count_macs  # noqa: E402

SMALL = (128, 64)


@pytest.mark.parametrize("arch,alpha", [("unet-mobilenetv2", 0.35), ("lraspp-mobilenetv2", 0.35),
                                        ("deeplabv3plus-mobilenetv2", 0.35), ("unet-small", 0.5)])
def test_archs_output_logits_at_input_resolution(arch, alpha):
    model = build_model(arch, SMALL, alpha)
    x = np.random.default_rng(0).uniform(-1, 1, (2, SMALL[1], SMALL[0], 3)).astype(np.float32)
    y = model(x, training=False).numpy()
    assert y.shape == (2, SMALL[1], SMALL[0], 8)
    assert np.isfinite(y).all()
    assert count_macs(model) > 0
    # BatchNorm momentum is set for training from scratch
    bns = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert bns and all(abs(layer.momentum - 0.9) < 1e-9 for layer in bns)
    # one flat functional graph (tfmot cannot quantise nested models)
    assert not any(hasattr(layer, "layers") for layer in model.layers)


def test_reference_design_meets_the_mac_budget():
    model = build_model("unet-mobilenetv2", (512, 256))  # the default alpha, the reference's
    macs = count_macs(model)
    assert 0.5e9 < macs <= 1.0e9, macs
    assert model.count_params() * 4 < 10e6  # float model under 10 MB


def test_count_macs_by_hand():
    import tf_keras as keras
    inp = keras.Input((8, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)           # 8*16*4*3*3*3 = 13824
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)        # 8*16*4*9 = 4608
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5)(x)                                  # 4*5 = 20
    assert count_macs(keras.Model(inp, x)) == 13824 + 4608 + 20


@pytest.mark.parametrize("kwargs,match", [
    ({"arch": "segformer"}, "unknown architecture"),
    ({"arch": "unet-mobilenetv2", "alpha": 0.6}, "alpha 0.6 is not supported"),
    ({"arch": "unet-mobilenetv2", "input_size": (500, 256)}, "multiples of 32"),
    ({"arch": "unet-small", "input_size": (512, 250)}, "multiples of 32"),
    ({"arch": "unet-mobilenetv2", "backbone_weights": "/nonexistent/w.h5"}, "no such file"),
])
def test_bad_model_options_are_user_errors(kwargs, match):
    kwargs = {"input_size": SMALL, **kwargs}
    with pytest.raises(UserError, match=match):
        build_model(**kwargs)


def test_imagenet_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(UserError, match="offline"):
        build_model("unet-mobilenetv2", SMALL, 0.35, backbone_weights="imagenet")


def test_all_archs_listed():
    assert ARCHS[0] == "unet-mobilenetv2"


@pytest.mark.slow
@pytest.mark.parametrize("arch,qat_ok", [("unet-mobilenetv2", True), ("lraspp-mobilenetv2", False)])
def test_qat_and_int8_tflite_accept_the_model(arch, qat_ok):
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = build_model(arch, (64, 32), 0.35)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 64, 3)).astype(np.float32)
    if qat_ok:
        qat = tfmot.quantization.keras.quantize_model(model)
        assert qat(x).shape == (1, 32, 64, 8)
    else:  # LR-ASPP's gate (Multiply) is not in tfmot's registry: post-training int8 only
        with pytest.raises(RuntimeError, match="Multiply"):
            tfmot.quantization.keras.quantize_model(model)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.default_rng(i).uniform(-1, 1, (1, 32, 64, 3))
                                            .astype(np.float32)] for i in range(4))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    interp = Interpreter(model_content=conv.convert(),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    ops = {op["op_name"] for op in interp._get_ops_details()}
    # only ops every int8 / GPU-delegate path has
    allowed = {"CONV_2D", "DEPTHWISE_CONV_2D", "RESIZE_BILINEAR", "CONCATENATION", "ADD", "PAD",
               "MEAN", "LOGISTIC", "MUL", "QUANTIZE", "DEQUANTIZE", "RESIZE_NEAREST_NEIGHBOR",
               "RELU6", "MAX_POOL_2D"}
    assert ops <= allowed, ops - allowed


def test_losses_ignore_void_and_ignore_pixels():
    import tensorflow as tf
    from edge_seg.train.losses import make_loss, median_frequency_weights

    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, (2, 8, 16)).astype(np.int32)
    y[0, :2] = 255
    logits = rng.normal(size=(2, 8, 16, 8)).astype(np.float32)
    for kind in ("ce", "dice", "ce+dice", "lovasz", "ce+lovasz"):
        loss = make_loss(kind, class_weights=np.linspace(0, 2, 8))
        base = float(loss(tf.constant(y), tf.constant(logits)))
        changed = logits.copy()
        changed[(y == 0) | (y == 255)] = rng.normal(size=(int(((y == 0) | (y == 255)).sum()), 8)) * 10
        assert float(loss(tf.constant(y), tf.constant(changed))) == pytest.approx(base, rel=1e-5), kind
        assert np.isfinite(base) and base > 0

    masks = [np.array([[1, 1, 1, 1], [1, 1, 2, 3]], np.uint8), np.array([[1, 1, 0, 255]], np.uint8)]
    w = median_frequency_weights(masks)
    assert w[0] == 0 and w[4] == 0  # void and absent categories
    assert w[1] < w[2] == w[3]       # frequent category weighs less
    assert np.allclose(median_frequency_weights(masks, power=0.5) ** 2, w)


def test_lovasz_loss_is_one_minus_iou_on_hard_predictions():
    """On (near) one-hot predictions the Lovász extension equals the set function: the mean
    over the scored categories present in the labels of 1 - IoU, here checked against
    edge_seg.iou' IoU of the same prediction."""
    import tensorflow as tf
    from edge_seg.iou import category_scores, confusion_matrix
    from edge_seg.train.losses import make_loss

    rng = np.random.default_rng(1)
    y = rng.integers(0, 6, (2, 16, 24)).astype(np.int32)   # category 6 and 7 absent
    y[1, :3] = 255
    pred = np.where(rng.random(y.shape) < 0.7, y, rng.integers(1, 8, y.shape))
    pred = np.where(pred == 255, 1, pred)
    logits = np.eye(8, dtype=np.float32)[pred] * 60.0
    got = float(make_loss("lovasz")(tf.constant(y), tf.constant(logits)))

    cm = confusion_matrix(y, pred)
    iou = category_scores(cm)["iou"]
    present = [c for c in range(1, 8) if (y == c).any()]
    assert got == pytest.approx(np.mean([1.0 - iou[c] for c in present]), abs=1e-4)
    perfect = np.eye(8, dtype=np.float32)[np.where(y == 255, 0, y)] * 60.0
    assert float(make_loss("lovasz")(tf.constant(y), tf.constant(perfect))) == pytest.approx(0.0, abs=1e-4)

"""Segmentation models (tf_keras functional, so tensorflow-model-optimization can quantise them).

Every architecture takes an input already normalised by ``edge_seg.preprocess.normalize``
((rgb - 127.5) / 127.5, RGB) -- normalisation is deliberately not in the graph -- and
returns 8 logits per pixel at input resolution. Only layers that tfmot QAT, TFLite int8
and the TFLite GPU delegate support are used: Conv2D, DepthwiseConv2D,
BatchNormalization, ReLU(6), ZeroPadding2D, Add, Concatenate, Multiply,
GlobalAveragePooling2D, sigmoid, MaxPooling2D and bilinear UpSampling2D.

Architectures:

* ``unet-mobilenetv2`` (default): MobileNetV2 encoder (width ``alpha``), skips at
  strides 2/4/8/16 and a light U-Net decoder of depthwise-separable
  DW3x3-BN-ReLU6 / PW1x1-BN-ReLU6 blocks, bilinear x2 upsampling and concatenation,
  a 1x1 head at stride 2 and the logits upsampled x2 (bilinear); with three decoder widths
  the decoder stops at stride 4 and the logits are upsampled x4; with width 0 at stride 2 the
  stride-4 logits are upsampled x2 and refined by a 1x1 conv over them and the stride-2 skip.
  There is no full-resolution refinement block: no stride-1 skip would feed it, and depthwise
  back-propagation at full resolution is slow in TensorFlow's CPU kernels
  (docs/experiments.md has the step times).
* ``lraspp-mobilenetv2``: the LR-ASPP head of MobileNetV3 (Howard et al. 2019) on the
  same backbone: stride-16 features gated by a global-pooled sigmoid branch, plus a
  stride-8 skip, logits upsampled x8. tfmot's QAT rejects its Multiply gate, so it is
  quantised post-training only.
* ``deeplabv3plus-mobilenetv2``: DeepLabV3+-style head (Chen et al. 2018) on the same
  backbone: depthwise-separable ASPP (rates 3/6/9 at stride 16) + image pooling, stride-4
  decoder, logits upsampled x4. Its dilated convolutions become SPACE_TO_BATCH_ND /
  BATCH_TO_SPACE_ND in TFLite, which GPU delegates handle poorly.
* ``unet-small``: a plain small U-Net (no backbone), 3x3 Conv-BN-ReLU6 blocks, max
  pooling, channel widths scaled by ``alpha``.

The U-Nets convert to TFLite as CONV_2D, DEPTHWISE_CONV_2D, ADD, CONCATENATION,
RESIZE_BILINEAR (and MAX_POOL_2D) only. Each architecture's parameters and MACs per
``alpha``, and which ones QAT accepts: docs/training.md.
"""
from __future__ import annotations

import os

from edge_seg.errors import UserError
from edge_seg.labels import NUM_CATEGORIES

ARCHS = ("unet-mobilenetv2", "lraspp-mobilenetv2", "deeplabv3plus-mobilenetv2", "unet-small")
DEFAULT_ARCH = "unet-mobilenetv2"
MOBILENETV2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
DEFAULT_ALPHA = {"unet-mobilenetv2": 1.0, "lraspp-mobilenetv2": 1.0,
                 "deeplabv3plus-mobilenetv2": 0.75, "unet-small": 0.75}

# MobileNetV2 layers whose outputs are the skips, by stride: the last block output at
# each stride (16/24/32/96 * alpha channels). The wider expand activations
# (block_1_expand_relu...) make the decoder at strides 2 and 4 much dearer and gained
# nothing (docs/experiments.md).
_MNV2_SKIPS = {2: "expanded_conv_project_BN", 4: "block_2_add", 8: "block_5_add",
               16: "block_12_add"}
_MNV2_DEEP = "block_16_project_BN"  # stride 32, 320*alpha channels (skips the 1280-wide last conv)


def check_arch_alpha(arch: str, alpha: float | None) -> float:
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if alpha is None:
        return DEFAULT_ALPHA[arch]
    alpha = float(alpha)
    if arch.endswith("mobilenetv2") and alpha not in MOBILENETV2_ALPHAS:
        raise UserError(f"alpha {alpha:g} is not supported by the MobileNetV2 backbone; "
                        f"choose one of {', '.join(f'{a:g}' for a in MOBILENETV2_ALPHAS)}")
    if arch == "unet-small" and not 0.25 <= alpha <= 4:
        raise UserError(f"alpha {alpha:g} out of range for unet-small (0.25..4)")
    return alpha


def check_input_size(input_size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise UserError(f"input size {input_size!r}: expected (width, height)") from None
    if w <= 0 or h <= 0 or w % 32 or h % 32:
        raise UserError(f"input size {w}x{h}: width and height must be positive multiples of 32 "
                        "(the encoder's output stride)")
    return w, h


def _keras():
    import tf_keras as keras
    return keras


def _set_bn_momentum(model, momentum: float):
    keras = _keras()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _resolve_weights(backbone_weights, alpha: float):
    """'none' -> None; 'imagenet' only from the local Keras cache; a path must exist."""
    if backbone_weights in (None, "none", "None", ""):
        return None
    if backbone_weights == "imagenet":
        keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        cache = os.path.join(keras_home, "models")
        alpha_str = {0.35: "0.35", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0", 1.3: "1.3", 1.4: "1.4"}[alpha]
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha_str}_224_no_top.h5"
        path = os.path.join(cache, name)
        if not os.path.isfile(path):
            raise UserError(f"--backbone-weights imagenet: {name} is not in the Keras cache ({cache}), "
                            "and edge-seg trains offline (it never downloads): copy the file into that "
                            "folder, pass its path with --backbone-weights PATH, or use --backbone-weights none")
        return path
    if not os.path.isfile(backbone_weights):
        raise UserError(f"--backbone-weights {backbone_weights}: no such file "
                        "(use none, imagenet or the path of MobileNetV2 no-top .h5 weights)")
    return str(backbone_weights)


def mobilenetv2_backbone(inputs, alpha: float, backbone_weights=None):
    """MobileNetV2 encoder on ``inputs``; returns {stride: tensor} for strides 2..32."""
    keras = _keras()
    weights_path = _resolve_weights(backbone_weights, alpha)
    h, w = inputs.shape[1], inputs.shape[2]
    # built on ``inputs`` directly so the final model is one flat functional graph
    # (tfmot cannot quantise a model nested inside another)
    base = keras.applications.MobileNetV2(input_shape=(h, w, 3), input_tensor=inputs, alpha=alpha,
                                          include_top=False, weights=None)
    if weights_path:
        try:
            base.load_weights(weights_path, by_name=True, skip_mismatch=False)
        except Exception as e:  # noqa: BLE001 -- any h5/shape problem is a user-facing error
            raise UserError(f"--backbone-weights {weights_path}: cannot load into MobileNetV2 "
                            f"alpha {alpha:g} ({e})") from None
    names = {**_MNV2_SKIPS, 32: _MNV2_DEEP}
    return {s: base.get_layer(names[s]).output for s in (2, 4, 8, 16, 32)}


def _conv_bn(x, filters, kernel=1, strides=1, name=None, act=True, dilation=1):
    keras = _keras()
    L = keras.layers
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                 dilation_rate=dilation, name=f"{name}_conv")(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    if act:
        x = L.ReLU(6.0, name=f"{name}_relu")(x)
    return x


def _ds_block(x, filters, name, dilation=1):
    """Depthwise-separable block: DW3x3-BN-ReLU6, PW1x1-BN-ReLU6."""
    keras = _keras()
    L = keras.layers
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, dilation_rate=dilation,
                          name=f"{name}_dw")(x)
    x = L.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = L.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return _conv_bn(x, filters, 1, name=f"{name}_pw")


def _up(x, factor, name):
    return _keras().layers.UpSampling2D(factor, interpolation="bilinear", name=name)(x)


# decoder widths per stride for unet-mobilenetv2 (independent of alpha: the decoder is
# what thin classes need, and it is cheap when depthwise-separable)
UNET_DECODER = {16: 128, 8: 64, 4: 48, 2: 32}


def decoder_table(widths) -> dict:
    """{stride: channels} of the unet-mobilenetv2 decoder from four widths at strides
    16/8/4/2, or three at 16/8/4 for logits at stride 4 (None: ``UNET_DECODER``); narrower
    or shorter decoders make the cheap students."""
    if widths is None:
        return dict(UNET_DECODER)
    try:
        widths = [int(w) for w in widths]
    except (TypeError, ValueError):
        raise UserError(f"decoder widths {widths!r}: expected three or four integers") from None
    if len(widths) not in (3, 4) or min(widths[:3]) < 1 or widths[-1] < 0:
        raise UserError(f"decoder widths {widths}: expected four positive channel counts "
                        "(strides 16, 8, 4, 2; 0 at stride 2 for the 1x1 refinement), or three "
                        "(16, 8, 4) for logits at stride 4")
    return dict(zip((16, 8, 4, 2), widths))


def _unet_mobilenetv2(inputs, alpha, backbone_weights, num_classes, decoder_widths=None):
    keras = _keras()
    L = keras.layers
    widths = decoder_table(decoder_widths)
    feats = mobilenetv2_backbone(inputs, alpha, backbone_weights)
    x = feats[32]
    strides = [s for s in widths if widths[s]]
    for stride in strides:
        x = _up(x, 2, f"dec{stride}_up")
        x = L.Concatenate(name=f"dec{stride}_cat")([x, feats[stride]])
        x = _ds_block(x, widths[stride], f"dec{stride}_a")
        if stride >= 8:
            x = _ds_block(x, widths[stride], f"dec{stride}_b")
    logit_stride = strides[-1]
    if widths.get(2) == 0:
        # logits at stride 4, sharpened at stride 2 by one 1x1 conv over them and the stride-2
        # skip: the borders a stride-4 graph loses, for a fraction of a stride-2 decoder step
        x = L.Conv2D(num_classes, 1, name="head4")(x)
        x = _up(x, 2, "refine_up")
        x = L.Concatenate(name="refine_cat")([x, feats[2]])
        logit_stride = 2
    x = L.Conv2D(num_classes, 1, name="head")(x)
    return _up(x, logit_stride, "head_up")


def _lraspp_mobilenetv2(inputs, alpha, backbone_weights, num_classes):
    keras = _keras()
    L = keras.layers
    feats = mobilenetv2_backbone(inputs, alpha, backbone_weights)
    # LR-ASPP uses stride-16 features; take the stride-32 output upsampled into the
    # stride-16 expand features so the whole backbone contributes.
    deep = _up(feats[32], 2, "lr_deep_up")
    high = L.Concatenate(name="lr_cat16")([deep, feats[16]])
    a = _conv_bn(high, 128, 1, name="lr_a")
    g = L.GlobalAveragePooling2D(keepdims=True, name="lr_gap")(high)
    g = L.Conv2D(128, 1, name="lr_gate_conv")(g)
    g = L.Activation("sigmoid", name="lr_gate")(g)
    x = L.Multiply(name="lr_mul")([a, g])
    x = _up(x, 2, "lr_up8")
    x = L.Conv2D(num_classes, 1, name="lr_high_head")(x)
    low = L.Conv2D(num_classes, 1, name="lr_low_head")(feats[8])
    x = L.Add(name="lr_add")([x, low])
    return _up(x, 8, "lr_up1")


def _deeplabv3plus_mobilenetv2(inputs, alpha, backbone_weights, num_classes):
    keras = _keras()
    L = keras.layers
    feats = mobilenetv2_backbone(inputs, alpha, backbone_weights)
    deep = _up(feats[32], 2, "aspp_deep_up")
    x16 = L.Concatenate(name="aspp_in")([deep, feats[16]])
    branches = [_conv_bn(x16, 96, 1, name="aspp_b0")]
    for rate in (3, 6, 9):
        branches.append(_ds_block(x16, 96, f"aspp_r{rate}", dilation=rate))
    h16, w16 = x16.shape[1], x16.shape[2]
    pool = L.GlobalAveragePooling2D(keepdims=True, name="aspp_gap")(x16)
    pool = _conv_bn(pool, 96, 1, name="aspp_pool")
    pool = L.UpSampling2D((h16, w16), interpolation="nearest", name="aspp_pool_up")(pool)
    x = L.Concatenate(name="aspp_cat")(branches + [pool])
    x = _conv_bn(x, 128, 1, name="aspp_proj")
    x = _up(x, 4, "dec_up4")
    low = _conv_bn(feats[4], 32, 1, name="dec_low")
    x = L.Concatenate(name="dec_cat")([x, low])
    x = _ds_block(x, 96, "dec_a")
    x = _ds_block(x, 96, "dec_b")
    x = L.Conv2D(num_classes, 1, name="head")(x)
    return _up(x, 4, "dec_up1")


def _unet_small(inputs, alpha, num_classes):
    keras = _keras()
    L = keras.layers
    widths = [max(8, int(round(w * alpha / 8)) * 8) for w in (16, 32, 64, 96, 128)]
    skips = []
    # stride-2 stem keeps the full-resolution cost down
    x = _conv_bn(inputs, widths[0], 3, strides=2, name="enc1_stem")
    x = _conv_bn(x, widths[0], 3, name="enc1_b")
    skips.append(x)  # stride 2
    for i, w in enumerate(widths[1:], start=2):
        x = L.MaxPooling2D(2, name=f"enc{i}_pool")(x)
        x = _conv_bn(x, w, 3, name=f"enc{i}_a")
        x = _conv_bn(x, w, 3, name=f"enc{i}_b")
        skips.append(x)  # strides 4, 8, 16, 32
    x = skips.pop()
    for i, w in zip(range(len(widths) - 1, 0, -1), reversed(widths[:-1])):
        x = _up(x, 2, f"dec{i}_up")
        x = L.Concatenate(name=f"dec{i}_cat")([x, skips.pop()])
        x = _conv_bn(x, w, 3, name=f"dec{i}_a")
        x = _conv_bn(x, w, 3, name=f"dec{i}_b")
    x = L.Conv2D(num_classes, 1, name="head")(x)
    return _up(x, 2, "dec0_up")


def build_model(arch: str = DEFAULT_ARCH, input_size=(512, 256), alpha: float | None = None,
                backbone_weights=None, num_classes: int = NUM_CATEGORIES, bn_momentum: float = 0.9,
                decoder_widths=None):
    """A compiled-free tf_keras functional model: (B, H, W, 3) normalised RGB -> (B, H, W, C) logits.

    ``input_size`` is (width, height), multiples of 32. ``bn_momentum`` replaces the
    Keras default of 0.999, which leaves inference-mode BatchNorm useless for thousands of
    steps when training from scratch. ``decoder_widths``: unet-mobilenetv2's decoder channels
    at strides 16/8/4/2 (default ``UNET_DECODER``).
    """
    alpha = check_arch_alpha(arch, alpha)
    w, h = check_input_size(input_size)
    keras = _keras()
    inputs = keras.Input((h, w, 3), name="image")
    if decoder_widths is not None and arch != "unet-mobilenetv2":
        raise UserError(f"decoder widths apply to unet-mobilenetv2 only, not {arch}")
    if arch == "unet-mobilenetv2":
        logits = _unet_mobilenetv2(inputs, alpha, backbone_weights, num_classes, decoder_widths)
    elif arch == "lraspp-mobilenetv2":
        logits = _lraspp_mobilenetv2(inputs, alpha, backbone_weights, num_classes)
    elif arch == "deeplabv3plus-mobilenetv2":
        logits = _deeplabv3plus_mobilenetv2(inputs, alpha, backbone_weights, num_classes)
    else:
        if backbone_weights not in (None, "none"):
            raise UserError("unet-small has no backbone; use --backbone-weights none")
        logits = _unet_small(inputs, alpha, num_classes)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    name = f"{arch}_{alpha:g}".replace(".", "_").replace("-", "_")
    model = keras.Model(inputs, logits, name=name)
    _set_bn_momentum(model, bn_momentum)
    return model


def _iter_layers(model):
    keras = _keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _iter_layers(layer)
        else:
            yield layer


def layer_macs(layer) -> int:
    """Multiply-accumulates of one layer (0 for the uncounted kinds): count_macs's unit, so a
    profiler can attribute a model's MACs to groups of its layers."""
    L = _keras().layers
    if isinstance(layer, L.DepthwiseConv2D):
        _, ho, wo, co = layer.output.shape
        kh, kw = layer.kernel_size
        return int(kh * kw * ho * wo * co)
    if isinstance(layer, L.Conv2D):
        _, ho, wo, co = layer.output.shape
        kh, kw = layer.kernel_size
        ci = layer.input.shape[-1] // layer.groups
        return int(kh * kw * ci * ho * wo * co)
    if isinstance(layer, L.Dense):
        return int(layer.input.shape[-1] * layer.units)
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass, counted analytically over Conv2D,
    DepthwiseConv2D and Dense layers (BatchNorm folds into convs; adds, activations and
    resizes are not counted, as is usual)."""
    return int(sum(layer_macs(layer) for layer in _iter_layers(model)))


def count_params(model) -> int:
    return int(model.count_params())


def describe(model) -> dict:
    return {"params": count_params(model), "macs": count_macs(model)}

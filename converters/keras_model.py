"""The one Keras loader of the converters: a saved model file, or a model already in memory.

    model = load_keras_model("runs/x/model.keras")   # or load_keras_model(model)
    width, height = model_input_size(model)
"""
from __future__ import annotations

from pathlib import Path

from edge_seg.errors import UserError

SUFFIXES = (".keras", ".h5")


def is_keras_model(obj) -> bool:
    return hasattr(obj, "inputs") and hasattr(obj, "outputs")


def load_keras_model(model_or_path):
    """A tf_keras model: ``model_or_path`` itself when it is one, else loaded (uncompiled)
    from a .keras or .h5 file. UserError naming the file when it cannot be."""
    if is_keras_model(model_or_path):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise UserError(f"{path}: model not found")
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: expected a Keras model (.keras or .h5) to convert")
    import tf_keras as keras
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 -- any load failure is the user's file
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise UserError(f"{path}: cannot load Keras model "
                        f"({type(e).__name__}: {lines[0] if lines else ''})") from None


def model_input_size(model) -> tuple[int, int]:
    """(width, height) of the model's one fixed-size image input; UserError otherwise."""
    shape = model.input_shape
    if isinstance(shape, list):
        raise UserError(f"model {model.name} has {len(shape)} inputs; expected one image input")
    _, h, w, c = shape
    if h is None or w is None or c != 3:
        raise UserError(f"model {model.name}: input shape {shape}; expected a fixed (H, W, 3) input")
    return int(w), int(h)


# The runtime upsamples small logits to the input size itself, once, in the output's own type
# (edge_seg.preprocess.upsample_logits), so the graph's final bilinear upsampling of the logits
# only costs time inside the model (and a 4x or 16x larger output to hand over). Up to this
# factor (the U-Net's x2, the stride-4 U-Net's and DeepLab's x4) it is left out of exported
# TFLite graphs; LR-ASPP's x8 was not measured against the accuracy gate, and stays in.
MAX_TRIMMED_UPSAMPLING = 4


def _is_identity(layer) -> bool:
    """A linear Activation: the float32 ``logits`` layer train.models ends every model with."""
    return type(layer).__name__ == "Activation" and getattr(layer.activation, "__name__", "") == "linear"


def _final_upsampling_layer(model):
    """The model's last layer past any identity layers, unwrapped from a tfmot quantize wrapper,
    and the layer object the graph holds (wrapped or not)."""
    layers = [layer for layer in model.layers if not _is_identity(getattr(layer, "layer", layer))]
    last = layers[-1] if layers else model.layers[-1]
    return getattr(last, "layer", last), last


def final_upsampling(model) -> int:
    """The factor of the model's final bilinear UpSampling2D (only identity layers after it),
    else 1."""
    layer, _ = _final_upsampling_layer(model)
    if type(layer).__name__ != "UpSampling2D" or getattr(layer, "interpolation", "") != "bilinear":
        return 1
    factors = {int(f) for f in layer.size}
    return factors.pop() if len(factors) == 1 else 1


def logits_model(model, full_resolution: bool = False):
    """(model, output stride): ``model`` ending before its final bilinear upsampling of the
    logits when that is at most MAX_TRIMMED_UPSAMPLING, else (or with ``full_resolution``) the
    model itself at stride 1."""
    factor = final_upsampling(model)
    if full_resolution or not 1 < factor <= MAX_TRIMMED_UPSAMPLING:
        return model, 1
    import tf_keras as keras

    _, held = _final_upsampling_layer(model)
    return keras.Model(model.inputs, held.input, name=model.name), factor

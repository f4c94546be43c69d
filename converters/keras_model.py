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

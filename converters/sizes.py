"""Several input sizes of one model: ``edge-seg convert MODEL --sizes 512x256,384x192,256x128``.

The models are fully convolutional, so the same weights run at any input size that is a
multiple of the encoder's stride (32): the Keras model is rebuilt from its own config with a
new input shape (``rebuild_at_size``) and the weights are copied over, then each requested
variant is converted at each size. Layers whose shape depends on the input size are
adapted: an ``UpSampling2D`` that broadcasts a globally pooled 1x1 map back to a feature
map (the image-pooling branch of the DeepLabV3+ head) gets the new feature-map size.

File names carry the size when more than one size, or a size other than the model's own,
is asked for: ``<stem>-384x192-int8.tflite``, ``<stem>-384x192.onnx``; otherwise they are
those of a plain ``edge-seg convert``. The conversion loop over sizes and variants is
``edge_seg.converters.tflite_export.export``. Every model's metadata records the size the file really takes
(``input_size``) and the model's native one (``native_input_size``).

A slow device trades resolution for speed: ``edge-seg compare`` scores variants of
different sizes at the label resolution (so the sizes compare fairly), and ``edge-seg tune``
measures each size as its own row.
"""
from __future__ import annotations

from pathlib import Path

from edge_seg.errors import UserError
from edge_seg.preprocess import parse_size

from .keras_model import model_input_size


def parse_sizes(text: str | None) -> list[tuple[int, int]]:
    """'512x256,384x192' -> [(512, 256), (384, 192)] (in order, without repeats)."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            size = parse_size(part)
        except ValueError as e:
            raise UserError(f"--sizes: {e}") from None
        if size not in out:
            out.append(size)
    if not out:
        raise UserError(f"--sizes {text!r}: expected sizes such as 512x256,384x192")
    return out


def size_text(size) -> str:
    return f"{size[0]}x{size[1]}"


def rebuild_at_size(model, size):
    """The functional tf_keras ``model`` rebuilt for input ``size`` (W, H), same weights.
    UserError when the model is not fully convolutional at that size."""
    import tf_keras as keras

    w, h = (int(v) for v in size)
    nw, nh = model_input_size(model)
    if (w, h) == (nw, nh):
        return model
    if not hasattr(model, "_is_graph_network") or not model._is_graph_network:
        raise UserError(f"model {model.name} is not a functional Keras model; --sizes needs one "
                        "(subclassed models cannot be rebuilt from their config)")
    config = model.get_config()
    for layer in config["layers"]:
        cfg = layer["config"]
        if layer["class_name"] == "InputLayer":
            shape = list(cfg.get("batch_input_shape") or cfg.get("batch_shape"))
            shape[1], shape[2] = h, w
            cfg["batch_input_shape" if "batch_input_shape" in cfg else "batch_shape"] = shape
        elif layer["class_name"] == "UpSampling2D":
            original = model.get_layer(cfg["name"])
            if tuple(original.input_shape[1:3]) == (1, 1):  # broadcasts a pooled map
                sh, sw = original.size
                if nh % sh or nw % sw or h % (nh // sh) or w % (nw // sw):
                    raise UserError(f"layer '{cfg['name']}' (UpSampling2D {sh}x{sw}) cannot be "
                                    f"adapted to {w}x{h}")
                cfg["size"] = [h // (nh // sh), w // (nw // sw)]
    try:
        rebuilt = keras.Model.from_config(config)
        rebuilt.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 -- shape errors surface as several types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model {model.name} cannot be rebuilt at {w}x{h} (not fully "
                        f"convolutional at that size? {type(e).__name__}: {first})") from None
    out, native_out = rebuilt.output_shape, model.output_shape
    if out[1] * nh != native_out[1] * h or out[2] * nw != native_out[2] * w or out[3] != native_out[3]:
        raise UserError(f"model {model.name} rebuilt at {w}x{h} outputs {out[2]}x{out[1]}x{out[3]}, "
                        f"which does not scale from its native {native_out[2]}x{native_out[1]} "
                        f"at {nw}x{nh}: the model is not fully convolutional")
    return rebuilt


def with_size(stem: str, size, named: bool) -> str:
    return f"{stem}-{size_text(size)}" if named else stem

"""Several input sizes of one model: ``edge-seg convert MODEL --sizes 512x256,384x192,256x128``.

The models are fully convolutional, so the same weights run at any input size that is a
multiple of the encoder's stride (32): the Keras model is rebuilt from its own config with a
new input shape (``rebuild_at_size``) and the weights are copied over, then each requested
variant is converted at each size. Layers whose shape depends on the input size are
adapted: an ``UpSampling2D`` that broadcasts a globally pooled 1x1 map back to a feature
map (the image-pooling branch of the DeepLabV3+ head) gets the new feature-map size.

File names carry the size when more than one size, or a size other than the model's own,
is asked for: ``<stem>-384x192-int8.tflite``, ``<stem>-384x192.onnx``; otherwise they are
those of a plain ``edge-seg convert``. Every sidecar records the size the file really takes
(``input_size``) and the model's native one (``native_input_size``).

A slow device trades resolution for speed: ``edge-seg compare`` scores variants of
different sizes at the label resolution (so the sizes compare fairly), and ``edge-seg tune``
measures each size as its own row.
"""
from __future__ import annotations

from pathlib import Path

from edge.errors import UserError
from edge.model_meta import file_sha256
from edge.preprocess import parse_size


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

    from .tflite_export import model_input_size

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


def export_sizes(model_path, variants, sizes=None, out_dir=None, calibration=None, io: str = "uint8",
                 calibration_root=None, qat_epochs: int = 1, qat_steps=None, qat_lr: float = 1e-5,
                 qat_batch: int = 4, onnx: bool = False, nchw: bool = False, per_channel: bool = False,
                 log=print) -> list[Path]:
    """Convert ``model_path`` to each of ``variants`` (and ONNX with ``onnx``) at each of
    ``sizes`` (default: its own size). Everything is checked before any conversion."""
    from .gpu_check import check_gpu
    from .tflite_export import (IO_TYPES, VARIANTS, convert, load_keras_model, model_input_size,
                                representative_dataset, resolve_calibration, variant_meta,
                                write_variant)

    variants = [v for v in VARIANTS if v in set(variants)]
    if not variants and not onnx:
        raise UserError("nothing to convert: pass one or more of --fp32 --fp16 --int8 --dynamic --qat --onnx")
    if io not in IO_TYPES:
        raise UserError(f"--io {io}: choose one of {', '.join(IO_TYPES)}")
    needs_data = [v for v in variants if v in ("int8", "qat-int8")]
    if needs_data and not calibration:
        raise UserError(f"--{needs_data[0].replace('qat-int8', 'qat')} needs data: pass --calibration MANIFEST|ROOT")
    if onnx:
        from .onnx_export import _require_tf2onnx
        _require_tf2onnx()
    model_path = Path(model_path)
    base = load_keras_model(model_path)
    native = model_input_size(base)
    sizes = list(sizes or [native])
    named = len(sizes) > 1 or sizes != [native]
    # the calibration set is a list of frames, chosen (and checked) for the model's own size;
    # each size reads the same frames at its own resolution
    cal = resolve_calibration(calibration, native, calibration_root) if needs_data else None
    if "qat-int8" in variants:
        from .qat import check_quantizable
        check_quantizable(base)
    models = {size: rebuild_at_size(base, size) for size in sizes}  # all sizes checked first
    source_sha = file_sha256(model_path)
    out_dir = Path(out_dir or model_path.parent)
    written = []
    for size, model in models.items():
        rep = representative_dataset(cal.samples, size) if cal is not None else None
        for variant in variants:
            log(f"converting {model_path.name} -> {variant} at {size_text(size)}")
            qat_info = None
            if variant == "qat-int8":
                from .qat import qat_finetune
                q_model, qat_info = qat_finetune(model, cal, size, epochs=qat_epochs, steps=qat_steps,
                                                 lr=qat_lr, batch=qat_batch, log=log)
                content = convert(q_model, variant, rep, io, per_channel)
            else:
                content = convert(model, variant, rep, io, per_channel)
            gpu = check_gpu(content)
            if variant in ("int8", "qat-int8") and "DEQUANTIZE" in gpu["ops"]:
                log(f"  warning: the {variant} model keeps some ops in float (DEQUANTIZE inside the "
                    f"graph); ops: {', '.join(gpu['ops'])}")
            quantized = variant in ("int8", "qat-int8")
            meta = variant_meta(variant, size, content, model_path, source_sha, cal if quantized else None,
                                io if quantized else None, gpu, qat_info, per_channel)
            meta["native_input_size"] = list(native)
            path = out_dir / f"{with_size(model_path.stem, size, named)}-{variant}.tflite"
            write_variant(path, content, meta)
            log(f"  {path} ({len(content) / 1e6:.2f} MB, GPU delegate: {gpu['verdict']})")
            written.append(path)
        if onnx:
            from .onnx_export import export_onnx
            path = out_dir / f"{with_size(model_path.stem, size, named)}.onnx"
            result = export_onnx(model, path, nchw=nchw, log=log, source=str(model_path),
                                 source_sha256=source_sha,
                                 source_model={"file": model_path.name, "sha256": source_sha},
                                 native_input_size=list(native))
            log(f"  {result.describe()}")
            for note in result.notes:
                log(f"  warning: {note}")
            written.append(path)
    return written

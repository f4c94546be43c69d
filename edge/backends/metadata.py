"""Model metadata: input size, normalisation, categories and colours, variant and
quantisation, provenance hashes: everything the runtime needs to run a model.

It travels inside the model file (edge_seg.backends.embedded: a flatbuffer metadata entry of the
.tflite, a ``metadata_props`` entry of the .onnx) and, as a copy for people and tools, in
the sidecar ``model-int8.json`` beside ``model-int8.tflite``. Converters write both
(atomically). The runtime reads the sidecar when there is one and checks it: the right
shape, recorded for this model file (``model_sha256``), and the same as the embedded copy;
a model copied alone runs from its embedded metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import click

from edge_seg.backends import embedded
from edge_seg.errors import UserError
from edge_seg.labels import CATEGORIES
from edge_seg.io.publish import atomic_write_bytes, atomic_write_json, jsonable
from edge_seg.preprocess import NORMALIZATION

FORMAT = "edge-seg/1"
# The entry for a variant's drop measured against a float model it was not converted from
# (``edge-seg compare REFERENCE.keras FAST-int8.tflite``): a smaller model on the bundled
# reference's scale, which ``edge-seg tune`` ranks every model by. ``accuracy`` stays the drop
# vs its own float model, the one the gate budgets.
REFERENCE_ACCURACY = "reference_accuracy"


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_meta(input_size: tuple[int, int], variant: str, **extra) -> dict:
    """The fields every model carries; ``extra`` adds provenance, quantisation, etc."""
    meta = {
        "format": FORMAT,
        "input_size": list(input_size),  # [width, height]
        "normalization": dict(NORMALIZATION),
        "categories": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CATEGORIES],
        "variant": variant,
    }
    meta.update(extra)
    return meta


def model_sha256(model_path: str | os.PathLike) -> str:
    """The model's identity: sha256 of the file without its embedded metadata (for a file
    without embedded metadata, the file's own sha256), so embedding does not change it."""
    return embedded.model_sha256(model_path)


def write_meta(model_path: str | os.PathLike, meta: dict) -> Path:
    """The sidecar of an already written model (which is not changed)."""
    meta = dict(meta, model_sha256=model_sha256(model_path))
    path = sidecar_path(model_path)
    atomic_write_json(path, meta)
    return path


def publish_model(model_path: str | os.PathLike, content: bytes, meta: dict) -> dict:
    """Write ``content`` (.tflite or .onnx bytes) with ``meta`` embedded, then its sidecar,
    each atomically; returns the metadata as recorded (with ``model_sha256``)."""
    meta = dict(meta, model_sha256=hashlib.sha256(embedded.original_bytes(content)).hexdigest())
    atomic_write_bytes(model_path, embedded.embed(content, _as_json(meta)))
    atomic_write_json(sidecar_path(model_path), meta)
    return meta


def embed_sidecar(model_path: str | os.PathLike) -> dict:
    """Embed the sidecar beside ``model_path`` into the model file (replacing any embedded
    copy) without converting again; the sidecar must be valid and name this model."""
    model_path = Path(model_path)
    side = sidecar_path(model_path)
    if not side.is_file():
        raise UserError(f"{model_path}: no sidecar {side.name} beside it to embed")
    meta = _load_sidecar(side)
    _check_hash(model_path, meta, side, trust=False, warn=None)
    try:
        data = model_path.read_bytes()
        content = embedded.embed(data, meta)
    except OSError as e:
        raise UserError(f"{model_path}: cannot read it ({e.strerror})") from None
    except embedded.EmbedError as e:
        raise UserError(f"{model_path}: {e}") from None
    if content != data:
        atomic_write_bytes(model_path, content)
    return meta


def _as_json(meta: dict) -> dict:
    # what the sidecar holds once read back: tuples as lists, numpy values as numbers
    return json.loads(json.dumps(meta, default=jsonable))


def read_meta(model_path: str | os.PathLike, trust_sidecar: bool = False, warn=None) -> dict:
    """The metadata of ``model_path``: its sidecar when there is one, else the copy embedded
    in the model. UserError (one line, naming the file) when neither exists, either is
    malformed, the sidecar records another model's sha256 (a warning instead with
    ``trust_sidecar``) or the sidecar and the embedded copy disagree."""
    model_path = Path(model_path)
    side = sidecar_path(model_path)
    embedded = read_embedded(model_path)
    if side.is_file():
        meta = _load_sidecar(side)
        _check_hash(model_path, meta, side, trust_sidecar, warn)
        if embedded is not None and embedded != meta:
            keys = sorted(k for k in set(meta) | set(embedded) if meta.get(k) != embedded.get(k))
            message = (f"{side} disagrees with the metadata embedded in {model_path.name} "
                       f"({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}); re-embed it with "
                       f"'python -m edge_seg.converters.embed {model_path}' or remove the sidecar")
            if not trust_sidecar:
                raise UserError(message + " (--trust-sidecar uses the sidecar)")
            _warn(warn, f"warning: {message}; using the sidecar (--trust-sidecar)")
        return meta
    if embedded is not None:
        _check_hash(model_path, embedded, f"{model_path} (embedded metadata)", False, warn)
        return embedded
    raise UserError(f"{model_path}: no metadata (no {side.name} beside it and none embedded in "
                    f"the model); re-export it with 'edge-seg convert'")


def read_embedded(model_path: str | os.PathLike) -> dict | None:
    """The metadata embedded in the model file (checked), or None when it carries none."""
    model_path = Path(model_path)
    try:
        data = model_path.read_bytes()
    except OSError as e:
        raise UserError(f"model {model_path}: cannot read it ({e.strerror})") from None
    try:
        raw = embedded.read_embedded(data)
    except embedded.EmbedError as e:
        if data[4:8] == b"TFL3":  # a TFLite file whose own tables do not hold together
            raise UserError(f"model {model_path}: damaged ({e}); copy it again or re-export it "
                            "with 'edge-seg convert'") from None
        return None  # not a model this reader understands: the interpreter says why
    if raw is None:
        return None
    where = f"{model_path} (embedded metadata)"
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise UserError(f"{where}: unreadable JSON ({e})") from None
    validate(meta, where)
    return meta


def _load_sidecar(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable metadata ({e})") from None
    validate(meta, path)
    return meta


def _check_hash(model_path: Path, meta: dict, where, trust: bool, warn) -> None:
    recorded = meta.get("model_sha256")
    if recorded is None:
        return
    actual = model_sha256(model_path)
    if recorded == actual:
        return
    message = (f"{where} describes another model (recorded sha256 {recorded[:12]}, "
               f"{model_path.name} is {actual[:12]})")
    if not trust:
        raise UserError(message + "; use the metadata of this model, or pass --trust-sidecar")
    _warn(warn, f"warning: {message}; used anyway (--trust-sidecar)")


def _warn(warn, message: str) -> None:
    if warn is not None:
        warn(message)
    else:
        import sys
        print(message, file=sys.stderr)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(meta, where) -> None:
    """UserError naming ``where`` unless ``meta`` has the shape the runtime reads."""
    def bad(what):
        raise UserError(f"{where}: not edge-seg metadata ({what})")
    if not isinstance(meta, dict):
        bad(f"a JSON {type(meta).__name__}, expected an object")
    if meta.get("format") != FORMAT:
        bad(f"format {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in ("input_size", "normalization", "categories") if k not in meta]
    if missing:
        raise UserError(f"{where}: metadata lacks {', '.join(missing)}")
    size = meta["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        bad(f"input_size {size!r}, expected [width, height] in pixels")
    if not isinstance(meta["normalization"], dict):
        bad(f"normalization {meta['normalization']!r}, expected an object")
    cats = meta["categories"]
    if not (isinstance(cats, list) and cats and all(
            isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)
            and isinstance(c.get("color"), list) and len(c["color"]) == 3
            and all(_is_int(v) and 0 <= v <= 255 for v in c["color"]) for c in cats)):
        bad("categories must be a list of {id, name, color: [r, g, b]}")
    for key in ("variant",):
        if key in meta and not isinstance(meta[key], str):
            bad(f"{key} {meta[key]!r}, expected a string")
    for key in ("input", "output", "gpu", "onnx"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            bad(f"{key} {meta[key]!r}, expected an object")
    if "model_sha256" in meta and not (isinstance(meta["model_sha256"], str)
                                       and _HEX64.fullmatch(meta["model_sha256"])):
        bad(f"model_sha256 {meta['model_sha256']!r}, expected 64 hex digits")


# The one definition of the option every command that loads a model offers.
trust_sidecar_option = click.option(
    "--trust-sidecar", is_flag=True,
    help="Use a model's sidecar .json even when it records another model's sha256 or "
         "disagrees with the metadata embedded in the model (a warning, not an error).")


@click.command(help="Print each model's sha256 as the docs, sidecars and run banner give it: of "
                    "the model without its embedded metadata, so not what sha256sum prints.")
@click.argument("models", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(models) -> None:
    for model in models:
        try:
            digest = model_sha256(model)
        except (OSError, ValueError, UserError) as e:
            click.echo(f"error: {model}: {e}", err=True)
            raise SystemExit(2) from None
        click.echo(f"{digest}  {model}")


if __name__ == "__main__":
    main()

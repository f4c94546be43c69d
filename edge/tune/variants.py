"""The model variants ``edge-seg tune`` measures: discovery, the float reference, and the
accuracy each variant's metadata records (``edge-seg compare`` writes it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_seg import model_formats
from edge_seg.backends.metadata import REFERENCE_ACCURACY
from edge_seg.errors import UserError

# float variants, most precise first: the agreement reference when there is no fp32
FLOAT_PREFERENCE = model_formats.float_preference()


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Variant:
    path: Path
    meta: dict
    kind: str                       # tflite | onnx
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    quantized: bool
    input_type: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant") or "?")

    @property
    def format(self) -> model_formats.Format | None:
        """The edge_seg.model_formats row it was made by; None for a variant outside the table."""
        return model_formats.of_file(self.path, self.meta.get("variant"))

    @property
    def is_fp32(self) -> bool:
        return self.format is not None and self.format.full_precision and not self.quantized

    @property
    def size_text(self) -> str:
        return f"{self.input_size[0]}x{self.input_size[1]}"

    @property
    def source_sha(self) -> str | None:
        """The sha256 of the float model it was converted from, when its metadata says."""
        source = self.meta.get("source_model")
        sha = source.get("sha256") if isinstance(source, dict) else None
        return sha if isinstance(sha, str) and sha else None

    @property
    def recorded(self) -> dict | None:
        """The accuracy recorded against its own float model (the metadata's ``accuracy``
        entry): {"drop": mIoU(7) points lost vs that model, "pixels": pixel agreement with it
        (0..1, or None), "on": "camvid val, 101 frames, vs m.keras"}; None when nothing usable
        is recorded."""
        return _recorded(self.meta.get("accuracy"))

    def recorded_vs(self, float_sha: str | None) -> dict | None:
        """The accuracy recorded against the float model of sha256 ``float_sha``, the one
        ``tune``'s float reference was converted from, as ``recorded`` gives it: the
        ``accuracy`` entry when this variant was converted from that model too, else its
        ``reference_accuracy`` when that was measured against it ('edge-seg compare REF
        THIS.tflite'). A fast model's int8 is a few tenths below its own float model and
        points below the reference's; a drop measured against another float model is no
        drop on the reference's scale, so it is not returned (None). Where either hash is
        unknown, the ``accuracy`` entry."""
        if float_sha is None or self.source_sha is None:
            return self.recorded
        for entry, default in (("accuracy", self.source_sha), (REFERENCE_ACCURACY, None)):
            acc = self.meta.get(entry)
            if isinstance(acc, dict) and acc.get("float_model_sha256", default) == float_sha:
                return _recorded(acc)
        return None


def _recorded(acc) -> dict | None:
    """{"drop", "pixels", "on"} of an ``accuracy``-shaped metadata entry, None if unusable."""
    if not isinstance(acc, dict) or _number(acc.get("drop_miou7")) is None:
        return None
    agreement = acc.get("agreement") if isinstance(acc.get("agreement"), dict) else {}
    where = acc.get("labelled_set") if isinstance(acc.get("labelled_set"), dict) else {}
    on = " ".join(str(where[k]) for k in ("name", "split") if where.get(k))
    if where.get("frames"):
        on += f", {where['frames']} frames"
    on = on or "a labelled set"
    if isinstance(acc.get("float_model"), str) and acc["float_model"]:
        on += f", vs {acc['float_model']}"
    return {"drop": _number(acc["drop_miou7"]), "pixels": _number(agreement.get("pixels")), "on": on}


def variant_files() -> str:
    """The files discover() takes, for --help: "*.tflite (fp32, fp16, ...), *.onnx (onnx-fp32)"."""
    return ", ".join(f"*{ext} ({', '.join(names)})" for ext, names in model_formats.by_extension().items())


def discover(models_dir, trust_sidecar: bool = False) -> tuple[list[Variant], list[tuple[str, str]]]:
    """(usable variants, [(file, why skipped)]). UserError when nothing is usable."""
    import numpy as np

    from edge_seg.backends import onnxrt
    from edge_seg.segmenter import Segmenter, is_onnx

    root = Path(models_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"--models {models_dir}: no such folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in model_formats.extensions())
    variants, skipped = [], []
    onnx_ok = onnxrt.available()
    for path in files:
        if is_onnx(path) and not onnx_ok:
            skipped.append((path.name, "onnxruntime is not installed (pip install onnxruntime)"))
            continue
        try:
            seg = Segmenter(path, threads=1, delegate="cpu" if is_onnx(path) else "xnnpack",
                            log=lambda m: None, trust_sidecar=trust_sidecar)
        except UserError as e:
            skipped.append((path.name, str(e)))
            continue
        variants.append(Variant(path, seg.meta, path.suffix.lower().lstrip("."),
                                tuple(seg.input_size), tuple(seg.output_size), seg.quantized,
                                np.dtype(seg.input_dtype).name))
        del seg
    if not variants:
        why = "; ".join(f"{n}: {w}" for n, w in skipped[:3]) if skipped else \
            f"no {' or '.join('*' + ext for ext in model_formats.extensions())} files"
        raise UserError(f"--models {models_dir}: no usable model variant ({why}); convert one with "
                        "'edge-seg convert MODEL --fp32 --int8 -o DIR'")
    return variants, skipped


def choose_reference(variants: list[Variant]) -> Variant:
    """The fp32 variant (largest input size first, .tflite before .onnx), else the most
    precise float model; UserError when every variant is quantised."""
    def area(v):
        return v.input_size[0] * v.input_size[1]
    fp32 = [v for v in variants if v.is_fp32]
    if fp32:
        return sorted(fp32, key=lambda v: (-area(v), v.kind != "tflite", v.name))[0]
    # float input and output is not enough: an int8 model made with --io float32 has both
    floats = [v for v in variants if not v.quantized
              and not (v.format is not None and v.format.integer_activations)]
    if not floats:
        raise UserError("no float model among the variants to measure agreement against: add the "
                        "fp32 variant (edge-seg convert MODEL --fp32 -o DIR)")
    rank = {name: i for i, name in enumerate(FLOAT_PREFERENCE)}
    return sorted(floats, key=lambda v: (rank.get(v.variant, len(rank)), -area(v), v.name))[0]

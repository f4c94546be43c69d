"""The formats table (edge_seg.model_formats) and what is derived from it: convert's flags, checks and
file names, tune's discovery and float reference, the table in docs/quantisation.md; and that a
new format is one row plus one export function."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_seg import model_formats
from edge_seg.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"


def test_rows_are_distinct():
    for column in ("name", "flag", "suffix"):
        values = [getattr(fmt, column) for fmt in model_formats.FORMATS]
        assert len(values) == len(set(values)), column
    assert all(fmt.flag.startswith("--") for fmt in model_formats.FORMATS)
    assert all(fmt.extension in (".tflite", ".onnx") for fmt in model_formats.FORMATS)


def test_the_formats_the_converter_made_before_the_table():
    """The names, flags and file suffixes that models/, docs and scripts already use."""
    assert {fmt.name: (fmt.flag, fmt.suffix, fmt.calibration) for fmt in model_formats.FORMATS} == {
        "fp32": ("--fp32", "-fp32.tflite", False), "fp16": ("--fp16", "-fp16.tflite", False),
        "dynamic": ("--dynamic", "-dynamic.tflite", False), "int8": ("--int8", "-int8.tflite", True),
        "qat-int8": ("--qat", "-qat-int8.tflite", True), "onnx-fp32": ("--onnx", ".onnx", False)}
    assert model_formats.float_preference() == ("fp32", "onnx-fp32", "fp16", "dynamic")
    assert model_formats.io_choices() == ("int8", "uint8", "float32")
    assert model_formats.extensions() == (".tflite", ".onnx")


def test_a_file_is_known_by_its_recorded_variant_else_by_its_name():
    assert model_formats.of_file("m-int8.tflite", "qat-int8").name == "qat-int8"
    assert model_formats.of_file("m-qat-int8.tflite").name == "qat-int8"  # the longest suffix wins
    assert model_formats.of_file("m-384x192-int8.tflite").name == "int8"
    assert model_formats.of_file("M.ONNX").name == "onnx-fp32"
    assert model_formats.of_file("m-fp32.tflite", "randomised") is None  # a variant outside the table
    assert model_formats.of_file("m.tflite") is None
    with pytest.raises(UserError, match="unknown format 'int4'"):
        model_formats.select(["fp32", "int4"])
    assert [fmt.name for fmt in model_formats.select(["onnx-fp32", "int8", "fp32"])] == \
        ["fp32", "int8", "onnx-fp32"]  # the table's order


REFERENCE_STEM = "unet-mobilenetv2-camvid-idd"
FAST_STEM = "unet-mobilenetv2-fast-camvid-idd"


def test_bundled_models_are_named_and_recorded_by_their_rows():
    """Every bundled variant's file name is its row's file name for its float model's stem, its
    sidecar records that row's variant and quantisation mode and that float model's sha256;
    every .tflite belongs to a bundled float model."""
    from edge_seg.backends.metadata import file_sha256
    stems = sorted(p.stem for p in MODELS.glob("*.keras"))
    assert REFERENCE_STEM in stems
    # no stem is another's prefix, so each file has one owner
    owners = {}
    for stem in stems:
        for path in sorted(MODELS.glob(f"{stem}-*.tflite")):
            owners.setdefault(path, []).append(stem)
            meta = json.loads(path.with_suffix(".json").read_text())
            fmt = model_formats.of_file(path, meta["variant"])
            assert fmt is not None and fmt == model_formats.of_file(path), path.name
            assert path.name == fmt.file_name(stem)
            assert meta["quantization"]["mode"] == fmt.mode
            assert meta["source_model"]["sha256"] == file_sha256(MODELS / f"{stem}.keras"), path.name
    assert sorted(owners) == sorted(MODELS.glob("*.tflite")) and all(len(o) == 1 for o in owners.values())


def test_tune_discovers_the_bundled_variants():
    from edge_seg.tune.variants import choose_reference, discover
    variants = discover(MODELS)[0]
    expected = [(f"{REFERENCE_STEM}-{name}.tflite", "tflite", name) for name in ("fp16", "int8", "qat-int8")]
    if (MODELS / f"{FAST_STEM}.keras").is_file():
        expected += [(f"{FAST_STEM}-{name}.tflite", "tflite", name) for name in ("fp16", "int8")]
    assert sorted((v.name, v.kind, v.format.name) for v in variants) == sorted(expected)
    # no fp32 bundled: the most precise float, the reference's at its larger input size
    reference = choose_reference(variants)
    assert reference.name == f"{REFERENCE_STEM}-fp16.tflite"
    assert all(v.recorded_vs(reference.source_sha) is not None for v in variants), \
        "every bundled variant records its drop on the reference's scale (make fast-tier)"


def test_the_fast_tier_card_names_the_committed_files():
    """The card's files table is rewritten by `make fast-tier`: a model committed without
    re-running it leaves hashes or sizes behind."""
    import re

    from edge_seg.backends.metadata import file_sha256, model_sha256
    card = MODELS / f"{FAST_STEM}.md"
    if not (MODELS / f"{FAST_STEM}.keras").is_file():
        pytest.skip("the fast tier is not bundled in this checkout")
    block = card.read_text().split("<!-- fast-tier:files -->")[1].split("<!-- /fast-tier:files -->")[0]
    rows = re.findall(r"\| `([^`]+)` \| `([0-9a-f]{12})` \| ([\d,]+) \|", block)
    assert sorted(name for name, _, _ in rows) == sorted(
        p.name for p in MODELS.glob(f"{FAST_STEM}*") if p.suffix in (".keras", ".tflite"))
    for name, sha, size in rows:
        path = MODELS / name
        assert sha == (file_sha256(path) if path.suffix == ".keras" else model_sha256(path))[:12], name
        assert int(size.replace(",", "")) == path.stat().st_size, name


def _variant(name: str, variant: str, io: str = "float32"):
    from edge_seg.tune.variants import Variant
    return Variant(Path(name), {"variant": variant}, "tflite", (64, 32), (64, 32),
                   io != "float32", io)


def test_an_int8_model_with_float_io_is_no_float_reference():
    """Its input and output are float32 (convert --int8 --io float32), its activations are not:
    the table says so, where the tensors' types cannot."""
    from edge_seg.tune.variants import choose_reference
    int8 = _variant("m-int8.tflite", "int8")
    assert not int8.is_fp32 and not int8.quantized
    assert choose_reference([int8, _variant("m-dynamic.tflite", "dynamic")]).variant == "dynamic"
    with pytest.raises(UserError, match="no float model"):
        choose_reference([int8, _variant("m-qat-int8.tflite", "qat-int8", "uint8")])
    assert choose_reference([_variant("m-fp16.tflite", "fp16"), _variant("n-fp32.tflite", "fp32"),
                             int8]).variant == "fp32"


def test_docs_show_the_table():
    """docs/quantisation.md carries the table as `python -m edge_seg.model_formats` prints it."""
    assert model_formats.markdown_table() in (REPO / "docs" / "quantisation.md").read_text()


# ------------------------------------------------------------------ the converter side

def test_every_row_names_functions_and_options_that_exist():
    pytest.importorskip("tensorflow")
    from edge_seg.converters.cli import convert
    from edge_seg.converters.tflite_export import converter_function
    options = {opt for param in convert.params for opt in param.opts}
    for fmt in model_formats.FORMATS:
        assert callable(converter_function(fmt.exporter)), fmt.name
        assert fmt.check is None or callable(converter_function(fmt.check)), fmt.name
        assert fmt.flag in options and set(fmt.options) <= options, fmt.name


def export_int16x8(job, fmt, model, size, path):
    """A format the table does not have: 16-bit activations, int8 weights (TFLite's int16x8)."""
    import tensorflow as tf

    from edge_seg.converters import tflite_export as te
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = te.representative_dataset(job.calibration.samples, size)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    te.publish_tflite(job, fmt, size, path, te.run_converter(converter, model, fmt))


INT16X8 = model_formats.Format("int16x8", "--int16x8", "int16 activations, int8 weights",
                         "-int16x8.tflite", True, "int8 per channel", "int16", ("float32",),
                         "int16 activations, int8 weights", "tflite_export:export_int16x8")


@pytest.fixture
def with_int16x8(monkeypatch):
    from edge_seg.converters import tflite_export
    monkeypatch.setattr(model_formats, "FORMATS", model_formats.FORMATS + (INT16X8,))
    monkeypatch.setattr(tflite_export, "export_int16x8", export_int16x8, raising=False)


def test_a_new_format_is_one_row_and_one_function(with_int16x8, tmp_path):
    pytest.importorskip("tensorflow")
    import tf_keras as keras
    from click.testing import CliRunner

    from edge_seg.backends.metadata import read_meta
    from edge_seg.calibration.select import select, write_manifest
    from edge_seg.converters.cli import make_convert
    from edge_seg.segmenter import Segmenter
    from edge_seg.tune.variants import choose_reference, discover
    from test_convert import SIZE, tiny_model, write_scenes

    convert = make_convert()
    help_text = CliRunner().invoke(convert, ["--help"]).output
    assert "--int16x8" in help_text and "<model>-int16x8.tflite" in help_text
    assert "| int16x8 | `--int16x8` | `<model>-int16x8.tflite` | yes |" in model_formats.markdown_table()

    keras.utils.set_random_seed(0)
    model = tmp_path / "tiny.keras"
    tiny_model().save(model)
    no_data = CliRunner().invoke(convert, [str(model), "--int16x8", "-o", str(tmp_path)])
    assert no_data.exit_code != 0 and "--int16x8 needs data" in str(no_data.exception)

    manifest = write_manifest(tmp_path / "cal.json",
                              select(write_scenes(tmp_path / "scenes", 4, 1), n=2, size=SIZE))
    out = tmp_path / "out"
    res = CliRunner().invoke(convert, [str(model), "--int16x8", "--calibration", str(manifest),
                                       "-o", str(out)])
    assert res.exit_code == 0, res.output
    path = out / "tiny-int16x8.tflite"
    meta = read_meta(path)
    assert meta["variant"] == "int16x8" and meta["quantization"]["mode"] == INT16X8.mode
    assert meta["source_model"]["file"] == "tiny.keras"
    assert Segmenter(path, threads=1).input_size == SIZE

    (variant,), skipped = discover(out)
    assert skipped == [] and variant.path == path and variant.format == INT16X8
    assert not variant.quantized  # float input and output ...
    with pytest.raises(UserError, match="no float model"):  # ... yet no float reference
        choose_reference([variant])


def test_rows_keep_their_converter_settings(with_int16x8):
    """make_converter follows the weights and activations columns; a row it has no settings
    for must bring its own converter."""
    pytest.importorskip("tensorflow")
    from edge_seg.converters.tflite_export import make_converter
    from test_convert import tiny_model
    model = tiny_model()
    for name in ("fp32", "fp16", "dynamic"):
        c = make_converter(model, name)
        assert bool(c.optimizations) == (name != "fp32"), name
        assert bool(c.target_spec.supported_types) == (name == "fp16"), name
    int8 = make_converter(model, "int8")
    assert int8._experimental_disable_per_channel
    assert not make_converter(model, "int8", per_channel=True)._experimental_disable_per_channel
    assert not make_converter(model, "qat-int8")._experimental_disable_per_channel
    with pytest.raises(UserError, match="no TFLite converter settings for int8 per channel "
                                        "weights and int16 activations"):
        make_converter(model, "int16x8")

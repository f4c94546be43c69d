"""Model metadata: embedded in the model file (read back by independent readers), checked
against the sidecar, and a model copied alone runs. No TensorFlow needed."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_seg.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
REFERENCE = MODELS / "unet-mobilenetv2-camvid-idd-int8.tflite"
COMMITTED = sorted(p for p in MODELS.glob("unet-mobilenetv2-*.tflite"))


@pytest.fixture
def model(tmp_path) -> Path:
    """A copy of the reference int8 model and its sidecar, the sidecar embedded."""
    from edge_seg.backends.metadata import embed_sidecar
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is not in this checkout")
    path = tmp_path / "m.tflite"
    shutil.copyfile(REFERENCE, path)
    shutil.copyfile(REFERENCE.with_suffix(".json"), path.with_suffix(".json"))
    embed_sidecar(path)
    return path


def _schema_metadata(data: bytes) -> dict[str, bytes]:
    """Named metadata via the TFLite schema's generated reader (ai-edge-litert's copy)."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    m = schema.Model.GetRootAsModel(data, 0)
    out = {}
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        out[entry.Name().decode()] = m.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return out


def _logits(content: bytes) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=content)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    info = np.iinfo(inp["dtype"])  # the bundled int8 model takes int8 (uint8 before)
    x = np.random.default_rng(0).integers(info.min, info.max + 1, inp["shape"]).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def test_embedded_tflite_metadata_is_read_by_the_schema_and_runs_the_same(model):
    from edge_seg.backends import embedded
    data = model.read_bytes()
    sidecar = json.loads(model.with_suffix(".json").read_text())
    entries = _schema_metadata(data)
    assert json.loads(entries["edge_seg"]) == sidecar
    # the converter's own entries survive embedding
    assert {"min_runtime_version", "CONVERSION_METADATA"} <= set(entries)
    original = embedded.original_bytes(data)
    assert original == REFERENCE.read_bytes() or embedded.original_bytes(REFERENCE.read_bytes()) == original
    assert hashlib.sha256(original).hexdigest() == sidecar["model_sha256"]
    assert np.array_equal(_logits(data), _logits(original))


def test_embedding_keeps_the_model_hash_and_replaces_the_previous_copy(model):
    from edge_seg.backends import embedded
    from edge_seg.backends.metadata import file_sha256, model_sha256
    data = model.read_bytes()
    before = model_sha256(model)
    again = embedded.embed(data, {"format": "x", "note": "second"})
    assert hashlib.sha256(embedded.original_bytes(again)).hexdigest() == before
    assert list(_schema_metadata(again)).count("edge_seg") == 1
    assert json.loads(_schema_metadata(again)["edge_seg"])["note"] == "second"
    assert file_sha256(model) != before  # the file itself changed: the hash is of the model


def test_a_cut_model_is_refused_by_both_the_reader_and_the_embedder(model):
    """Both flatbuffer walks name a truncated file as such, instead of failing inside."""
    from edge_seg.backends import embedded
    cut = embedded.original_bytes(model.read_bytes())[:-1000]
    for walk in (embedded.read_embedded, lambda data: embedded.embed(data, {"format": "x"})):
        with pytest.raises(embedded.EmbedError, match="truncated or corrupt"):
            walk(cut)


def test_onnx_metadata_props_are_read_by_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edge_seg.backends import embedded
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    original = helper.make_model(graph).SerializeToString()
    meta = {"format": "edge-seg/1", "variant": "onnx-fp32", "n": [1, 2]}
    path = tmp_path / "m.onnx"
    path.write_bytes(embedded.embed(original, meta))
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["edge_seg"]) == meta
    onnx.checker.check_model(str(path))
    assert embedded.original_bytes(path.read_bytes()) == original
    assert json.loads(embedded.read_embedded(path.read_bytes())) == meta


def test_a_model_copied_alone_runs_with_the_same_metadata(model, tmp_path):
    from edge_seg.backends.metadata import read_meta
    from edge_seg.segmenter import Segmenter
    alone = tmp_path / "alone" / model.name
    alone.parent.mkdir()
    shutil.copyfile(model, alone)
    with_sidecar, without = Segmenter(model, threads=1), Segmenter(alone, threads=1)
    assert without.describe() == with_sidecar.describe()
    assert read_meta(alone) == read_meta(model)
    frame = np.random.default_rng(1).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    assert np.array_equal(without.predict_mask(frame)[1], with_sidecar.predict_mask(frame)[1])


@pytest.mark.parametrize("content, message", [
    ("[1, 2, 3]", "a JSON list, expected an object"),
    ('"str"', "a JSON str, expected an object"),
    ("input_size=512x256", "input_size '512x256', expected [width, height]"),
    ("categories=[]", "categories must be a list"),
    ("model_sha256=12", "model_sha256 12, expected 64 hex digits"),
    ("{not json", "unreadable metadata"),
])
def test_malformed_sidecar_is_one_line(model, content, message):
    from edge_seg.backends.metadata import read_meta
    side = model.with_suffix(".json")
    if "=" in content and not content.startswith("{"):
        key, value = content.split("=", 1)
        meta = json.loads(side.read_text())
        meta[key] = json.loads(value) if value in ("[]", "12") else value
        side.write_text(json.dumps(meta))
    else:
        side.write_text(content)
    with pytest.raises(UserError, match=r"m\.json") as e:
        read_meta(model)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sidecar_of_another_model_is_refused_or_trusted(model):
    from edge_seg.backends.metadata import read_meta
    other = MODELS / "unet-mobilenetv2-camvid-idd-fp16.json"
    if not other.is_file():
        pytest.skip("the fp16 variant is not in this checkout")
    shutil.copyfile(other, model.with_suffix(".json"))
    with pytest.raises(UserError, match="describes another model .*--trust-sidecar"):
        read_meta(model)
    warnings = []
    meta = read_meta(model, trust_sidecar=True, warn=warnings.append)
    assert meta["variant"] == "fp16"
    assert len(warnings) == 2  # another model's hash, and not the embedded copy
    assert "describes another model" in warnings[0] and "disagrees" in warnings[1]


def test_sidecar_disagreeing_with_the_embedded_copy_is_one_line(model):
    from edge_seg.backends.metadata import read_meta
    side = model.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["variant"] = "edited"
    side.write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"disagrees with the metadata embedded in m\.tflite \(variant\)"):
        read_meta(model)


def test_weights_changed_after_embedding_are_refused(model):
    from edge_seg.backends.metadata import read_meta
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF  # inside the original flatbuffer, after the prefix
    model.write_bytes(bytes(data))
    model.with_suffix(".json").unlink()
    with pytest.raises(UserError, match="embedded metadata.* describes another model"):
        read_meta(model)


@pytest.fixture
def bare(tmp_path) -> Path:
    """The reference model as the converter wrote it (no embedded metadata), no sidecar."""
    from edge_seg.backends import embedded
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} is not in this checkout")
    path = tmp_path / "x.tflite"
    path.write_bytes(embedded.original_bytes(REFERENCE.read_bytes()))
    return path


def test_no_metadata_anywhere_is_one_line(bare):
    from edge_seg.backends.metadata import read_meta
    with pytest.raises(UserError, match="no metadata .*none embedded"):
        read_meta(bare)


def test_embed_command_and_its_errors(bare):
    path = bare
    shutil.copyfile(REFERENCE.with_suffix(".json"), path.with_suffix(".json"))
    run = subprocess.run([sys.executable, "-m", "edge_seg.converters.embed", str(path)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(_schema_metadata(path.read_bytes())["edge_seg"]) == \
        json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").unlink()
    run = subprocess.run([sys.executable, "-m", "edge_seg.converters.embed", str(path)], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("error: ") and "no sidecar x.json" in run.stderr


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_models_carry_their_sidecar(path):
    """After editing a models/*.json, run: python -m edge_seg.converters.embed models/<name>.tflite"""
    from edge_seg.backends.metadata import read_embedded, read_meta
    assert read_embedded(path) is not None, f"run: python -m edge_seg.converters.embed {path.relative_to(REPO)}"
    assert read_meta(path) == read_embedded(path)


def test_the_hash_command_prints_the_recorded_model_hash_not_the_files(model):
    # the README's hashes: the one the sidecar records, unlike sha256sum's
    recorded = json.loads(model.with_suffix(".json").read_text())["model_sha256"]
    done = subprocess.run([sys.executable, "-m", "edge_seg.backends.metadata", str(model)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{recorded}  {model}\n"
    assert recorded != hashlib.sha256(model.read_bytes()).hexdigest()

"""Calibration sets, TFLite export (fp32/fp16/int8/dynamic), metadata, GPU check, bad input.

Runs on a tiny hand-built tf_keras model and a few synthetic scenes, so it needs neither
../shared nor the reference model.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_seg import labels
from edge_seg.errors import UserError

from conftest import camvid_with_drives, edge_seg

tf = pytest.importorskip("tensorflow")

SIZE = (64, 32)  # model input (W, H)


# ------------------------------------------------------------------ fixtures

def write_scenes(root: Path, n_train: int, n_val: int, size=(128, 64), seed: int = 0) -> Path:
    """Synthetic street scenes (scenes) in the folder layout, masks in catIds."""
    from edge_seg.scenes import render_scene

    for split, n, offset in (("train", n_train, 0), ("val", n_val, 10_000)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scene = render_scene(seed * 100_000 + offset + i, size)
            cv2.imwrite(str(root / "images" / split / f"s{i:04d}.png"), scene.image)
            cv2.imwrite(str(root / "masks" / split / f"s{i:04d}.png"), scene.categories)
    (root / "mapping.json").write_text(json.dumps({str(c.id): c.name for c in labels.CATEGORIES}))
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("scenes"), 10, 3, (128, 64), seed=1)


def tiny_model(size=SIZE, extra=None, head_at_stride2: bool = False):
    """A stride-2 conv, a depthwise conv, x2 bilinear upsampling and a 1x1 head; with
    ``head_at_stride2`` the reference U-Net's ending in small (train.models): the head at
    stride 2, the logits upsampled x2 to the input size, the float32 ``logits`` identity."""
    import tf_keras as keras
    L = keras.layers
    inp = keras.Input((size[1], size[0], 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(6.0, name="r1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU(6.0, name="r2")(x)
    if extra is not None:
        x = extra(x)
    if head_at_stride2:
        x = L.Conv2D(labels.NUM_CATEGORIES, 1, name="head")(x)
        x = L.UpSampling2D(2, interpolation="bilinear", name="head_up")(x)
        x = L.Activation("linear", dtype="float32", name="logits")(x)
        return keras.Model(inp, x, name="strided")
    x = L.UpSampling2D(2, interpolation="bilinear", name="up")(x)
    x = L.Conv2D(labels.NUM_CATEGORIES, 1, name="head")(x)
    return keras.Model(inp, x, name="tiny")


def saved_model(tmp_path_factory, name: str, seed: int, **options) -> Path:
    import tf_keras as keras
    keras.utils.set_random_seed(seed)
    path = tmp_path_factory.mktemp(name) / f"{name}.keras"
    tiny_model(**options).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory) -> Path:
    return saved_model(tmp_path_factory, "tiny", 0)


@pytest.fixture(scope="module")
def manifest(scenes, tmp_path_factory) -> Path:
    from edge_seg.calibration.select import select, write_manifest
    path = tmp_path_factory.mktemp("cal") / "edge_seg.scenes.json"
    write_manifest(path, select(scenes, n=6, size=SIZE))
    return path


@pytest.fixture(scope="module")
def exported(tiny_keras, manifest, tmp_path_factory):
    from edge_seg.converters.tflite_export import export
    out = tmp_path_factory.mktemp("out")
    paths = export(tiny_keras, ["fp32", "fp16", "int8", "dynamic"], out, str(manifest), log=lambda m: None)
    return {p.stem.split("tiny-")[1]: p for p in paths}


# ------------------------------------------------------------------ calibration

def _hist(n_frames=100, rare_frames=(3, 41, 77)):
    """Frame histograms where 'human' occurs in only three frames."""
    rng = np.random.default_rng(0)
    hist = np.zeros((n_frames, labels.NUM_CATEGORIES), np.int64)
    hist[:, 1:6] = rng.integers(1000, 5000, (n_frames, 5))
    hist[:, 7] = rng.integers(200, 800, n_frames)
    for i in rare_frames:
        hist[i, 6] = 300
    return hist


def test_stratified_selection_covers_rare_categories():
    from edge_seg.calibration.select import choose
    hist = _hist()
    strat = choose(hist, 42, "stratified", seed=0)  # 3 guaranteed frames per category
    assert len(strat) == 42 == len(set(strat))
    assert {3, 41, 77} <= set(strat)  # every frame with the rare category is in
    assert 3 in choose(hist, 10, "stratified", seed=0) or 41 in choose(hist, 10, "stratified", seed=0) \
        or 77 in choose(hist, 10, "stratified", seed=0)  # even a small set has one
    full = sum({3, 41, 77} <= set(choose(hist, 42, "random", seed=s)) for s in range(20))
    assert full <= 8  # a random draw rarely has them all: the difference is measurable
    assert choose(hist, 42, "stratified", seed=0) == strat  # deterministic under the seed
    assert choose(hist, 500, "stratified", seed=0) == list(range(100))


def test_manifest_records_selection_and_reads_back(scenes, manifest):
    from edge_seg.calibration.select import load_manifest_samples
    m = json.loads(manifest.read_text())
    assert m["n"] == 6 and m["strategy"] == "stratified" and m["seed"] == 0
    assert m["input_size"] == list(SIZE)
    assert len(m["dataset"]["fingerprint"]) == 64
    assert abs(sum(m["pixel_share"].values()) - 1) < 1e-6
    assert all(not Path(f["image"]).is_absolute() for f in m["files"])
    samples, root, _ = load_manifest_samples(manifest, SIZE)
    assert len(samples) == 6 and root == scenes.resolve()


def test_manifest_of_a_drive_split_reads_back(tmp_path):
    """A set drawn from a derived split (drive-train) is checked against that same split."""
    from edge_seg.calibration.select import load_manifest_samples, select, write_manifest
    from edge_seg.train.datasets import drive_of
    root = camvid_with_drives(tmp_path / "cv", {"train": {"A": 3, "B": 5}, "val": {"A": 2}})
    manifest = write_manifest(tmp_path / "m.json", select(root, n=4, size=(16, 8), split="drive-train"))
    samples, _, m = load_manifest_samples(manifest, (16, 8))
    assert m["dataset"]["split"] == "drive-train" and m["dataset"]["frames_in_split"] == 5
    assert {drive_of(s) for s in samples} == {"A"}  # drive B is drive-val's


def test_calibrate_cli(scenes, tmp_path):
    from click.testing import CliRunner

    from edge_seg.calibration.cli import calibrate
    out = tmp_path / "c.json"
    res = CliRunner().invoke(calibrate, ["--data", str(scenes), "--n", "4", "-o", str(out),
                                         "--strategy", "random", "--seed", "3", "--size", "64x32"])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert (m["n"], m["strategy"], m["seed"]) == (4, "random", 3)
    assert "human" in res.output


def test_bad_calibration_sets_fail_before_any_work(scenes, manifest, tiny_keras, tmp_path, monkeypatch):
    import edge_seg.converters.tflite_export as te

    def no_conversion(*a, **k):
        raise AssertionError("conversion started despite a bad calibration set")
    monkeypatch.setattr(te, "convert", no_conversion)

    def fails(calibration, match):
        with pytest.raises(UserError, match=match):
            te.export(tiny_keras, ["fp32", "int8"], tmp_path, calibration, log=lambda m: None)
        assert not list(tmp_path.glob("*.tflite"))

    fails(None, "needs data")
    fails(str(tmp_path / "nope.json"), "no such manifest")
    m = json.loads(manifest.read_text())
    m["dataset"]["root"] = str(scenes)
    other = dict(m, input_size=[512, 256])
    (tmp_path / "size.json").write_text(json.dumps(other))
    fails(str(tmp_path / "size.json"), "made for input 512x256")
    empty = dict(m, files=[])
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    fails(str(tmp_path / "empty.json"), "empty")
    missing = dict(m, files=m["files"] + [{"image": "images/train/gone.png", "mask": "masks/train/gone.png"}])
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    fails(str(tmp_path / "missing.json"), "not found")
    changed = json.loads(json.dumps(m))
    changed["dataset"]["fingerprint"] = "0" * 64
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    fails(str(tmp_path / "changed.json"), "fingerprint")


# ------------------------------------------------------------------ export

def test_every_variant_has_file_and_metadata(exported, tiny_keras, manifest):
    from edge_seg.backends.metadata import file_sha256, model_sha256, read_embedded, read_meta
    assert set(exported) == {"fp32", "fp16", "int8", "dynamic"}
    for variant, path in exported.items():
        meta = read_meta(path)
        assert meta["variant"] == variant
        assert meta["input_size"] == list(SIZE)
        assert meta["normalization"]["mean"] == 127.5
        assert [c["name"] for c in meta["categories"]] == list(labels.CATEGORY_NAMES)
        assert meta["source_model"]["sha256"] == file_sha256(tiny_keras)
        assert meta["model_sha256"] == model_sha256(path) != file_sha256(path)  # embedded
        assert read_embedded(path) == meta
        assert meta["converter"]["tensorflow"] == tf.__version__
        assert meta["gpu"]["verdict"] in ("compatible",) or meta["gpu"]["verdict"].startswith("incompatible")
        assert "CONV_2D" in meta["gpu"]["ops"]
        assert not list(path.parent.glob(".*.tmp"))
    int8 = read_meta(exported["int8"])
    assert int8["input"]["dtype"] == "int8" and int8["input"]["scale"] > 0  # convert's default I/O
    assert int8["output"]["dtype"] == "int8"
    assert int8["calibration"]["manifest_sha256"] == file_sha256(manifest)
    assert int8["calibration"]["frames"] == 6
    assert read_meta(exported["fp16"])["gpu"]["compatible"] is True
    assert read_meta(exported["fp32"])["input"]["dtype"] == "float32"
    assert exported["int8"].stat().st_size < exported["fp32"].stat().st_size


def test_int8_runs_through_the_runtime_and_matches_fp32(exported, scenes):
    from edge_seg.segmenter import Segmenter
    from edge_seg.train.datasets import load_split, read_pair
    frame = cv2.cvtColor(read_pair(load_split(scenes, split="val")[0], SIZE)[0], cv2.COLOR_RGB2BGR)
    ref = Segmenter(exported["fp32"], threads=1, delegate="xnnpack").predict_mask(frame)[0]
    for variant in ("fp16", "int8", "dynamic"):
        mask = Segmenter(exported[variant], threads=1, delegate="xnnpack").predict_mask(frame)[0]
        assert mask.shape == ref.shape
        assert (mask == ref).mean() > 0.9, variant


@pytest.mark.parametrize("io", ["uint8", "float32"])
def test_io_types(tiny_keras, manifest, tmp_path, io):
    from edge_seg.converters.tflite_export import export
    from edge_seg.backends.metadata import read_meta
    (path,) = export(tiny_keras, ["int8"], tmp_path, str(manifest), io=io, log=lambda m: None)
    meta = read_meta(path)
    assert meta["input"]["dtype"] == io and meta["output"]["dtype"] == io
    assert meta["quantization"]["io"] == io


# ------------------------------------------------------------------ int8 I/O, logits at stride 2

@pytest.fixture(scope="module")
def strided_keras(tmp_path_factory) -> Path:
    return saved_model(tmp_path_factory, "strided", 3, head_at_stride2=True)


@pytest.fixture(scope="module")
def strided(strided_keras, manifest, tmp_path_factory) -> dict:
    """The default int8 and fp32 exports, and the fp32 one with full-resolution logits."""
    from edge_seg.converters.tflite_export import export
    out = tmp_path_factory.mktemp("strided-out")
    paths = export(strided_keras, ["fp32", "int8"], out / "default", str(manifest), log=lambda m: None)
    (full,) = export(strided_keras, ["fp32"], out / "full", full_res_logits=True, log=lambda m: None)
    return {**{p.stem.split("strided-")[1]: p for p in paths}, "fp32-full": full}


def _val_frames_bgr(scenes, n=3):
    from edge_seg.train.datasets import load_split, read_image
    return [cv2.cvtColor(read_image(s.image), cv2.COLOR_RGB2BGR) for s in load_split(scenes, split="val")[:n]]


def test_int8_io_and_stride2_logits_are_the_default_and_match_the_float_model(strided, strided_keras,
                                                                               scenes):
    import tf_keras as keras

    from edge_seg.backends.metadata import read_meta
    from edge_seg.preprocess import normalize, resize_image
    from edge_seg.segmenter import Segmenter
    meta = read_meta(strided["int8"])
    assert meta["input"]["dtype"] == meta["output"]["dtype"] == meta["quantization"]["io"] == "int8"
    assert meta["output"]["shape"] == [1, SIZE[1] // 2, SIZE[0] // 2, labels.NUM_CATEGORIES]
    assert meta["output_stride"] == 2
    assert "RESIZE_BILINEAR" not in meta["gpu"]["ops"]
    # the float model with its in-graph bilinear upsampling: the runtime upsamples the int8
    # stride-2 logits to the input size before its argmax, so the masks compare there
    model = keras.models.load_model(strided_keras, compile=False)
    seg = Segmenter(strided["int8"], threads=1, delegate="xnnpack")
    assert seg.input_dtype == np.int8 and seg.output_size == (SIZE[0] // 2, SIZE[1] // 2)
    for frame in _val_frames_bgr(scenes):
        x = normalize(resize_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), SIZE))[None]
        expected = np.argmax(model.predict(x, verbose=0)[0], axis=-1)
        model_mask, mask = seg.predict_mask(frame)
        assert model_mask.shape == expected.shape and mask.shape == frame.shape[:2]
        agree = (model_mask == expected).mean()
        # an untrained net's logits are nearly tied everywhere; the trained model's gate is
        # models/compare-camvid-drive-val.md
        assert agree > 0.9, agree


def test_full_res_logits_keep_the_old_graph(strided, strided_keras, manifest, tmp_path):
    """--full-res-logits is the conversion from before the option: the same bytes."""
    from edge_seg.backends.embedded import original_bytes
    from edge_seg.backends.metadata import model_sha256, read_meta
    from edge_seg.converters.keras_model import load_keras_model
    from edge_seg.converters.tflite_export import (convert, export, representative_dataset,
                                                   resolve_calibration)
    (path,) = export(strided_keras, ["int8"], tmp_path, str(manifest), io="uint8", full_res_logits=True,
                     log=lambda m: None)
    meta = read_meta(path)
    assert meta["output"]["shape"] == [1, SIZE[1], SIZE[0], labels.NUM_CATEGORIES]
    assert meta["output_stride"] == 1 and meta["input"]["dtype"] == "uint8"
    assert "RESIZE_BILINEAR" in meta["gpu"]["ops"]
    cal = resolve_calibration(str(manifest), SIZE)
    old = convert(load_keras_model(strided_keras), "int8", representative_dataset(cal.samples, SIZE), io="uint8")
    assert model_sha256(path) == hashlib.sha256(original_bytes(old)).hexdigest()
    full = read_meta(strided["fp32-full"])
    assert full["output"]["shape"][1:3] == [SIZE[1], SIZE[0]] and full["output_stride"] == 1


def test_a_stride2_model_runs_through_segmenter_drift_and_eval(strided, scenes):
    from edge_seg.runner import open_model
    from edge_seg.run.drift import DriftCheck
    from edge_seg.segmenter import Segmenter
    from edge_seg.train.datasets import load_split
    from edge_seg.train.evaluate import score
    seg = Segmenter(strided["int8"], threads=1, delegate="xnnpack")
    frame = _val_frames_bgr(scenes, 1)[0]  # 128x64: twice the model's input, four times its output
    result = seg(frame)
    assert result.mask.shape == frame.shape[:2]
    assert result.model_mask.shape == (SIZE[1], SIZE[0])  # decoded at the input size
    # the float twin at full resolution: agreement at a common size
    drift = DriftCheck(strided["fp32-full"], seg.meta, threads=1)
    drift._check(0, frame, result.model_mask)
    summary = drift.summary()
    # the float mask brought to the int8 model's mask size: an untrained net's near ties and
    # the NEAREST resize against the float model's bilinear one leave about a tenth apart
    assert summary["checks"] == 1 and summary["pixel_agreement"] > 0.8
    runner = open_model(strided["int8"], threads=1)
    samples = load_split(scenes, split="val")
    assert runner.predict([np.zeros((SIZE[1], SIZE[0], 3), np.uint8)]).shape == (1, SIZE[1], SIZE[0])
    for at_label in (False, True):  # labels at 128x64, the model's mask at 32x16
        got = score(runner.predict, samples, SIZE, at_label_resolution=at_label)[0].result()
        ref = score(open_model(strided["fp32-full"], threads=1).predict, samples, SIZE,
                    at_label_resolution=at_label)[0].result()
        assert abs(got["miou7"] - ref["miou7"]) < 0.1 or np.isnan(ref["miou7"])


def test_qat_export_also_ends_at_stride_2(strided_keras, manifest, tmp_path):
    """The fine-tuned model's layers are tfmot wrappers: the upsampling is found inside them."""
    from edge_seg.backends.metadata import read_meta
    from edge_seg.converters.tflite_export import export
    (path,) = export(strided_keras, ["qat-int8"], tmp_path, str(manifest), qat_steps=2, log=lambda m: None)
    meta = read_meta(path)
    assert meta["output_stride"] == 2 and meta["input"]["dtype"] == "int8"
    assert meta["output"]["shape"] == [1, SIZE[1] // 2, SIZE[0] // 2, labels.NUM_CATEGORIES]


def test_full_res_logits_applies_to_tflite_formats_only(strided_keras):
    res = edge_seg("convert", str(strided_keras), "--onnx", "--full-res-logits")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "error: --full-res-logits applies to" in res.stderr


def _conv_weight_scales(path) -> list[int]:
    """Number of quantisation scales of each int8 conv weight tensor in a .tflite."""
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path))
    return [len(t["quantization_parameters"]["scales"]) for t in interp.get_tensor_details()
            if t["dtype"] == np.int8 and len(t["shape"]) == 4 and t["shape"][0] > 1]


def test_int8_weights_per_tensor_by_default_per_channel_on_request(tiny_keras, manifest, tmp_path):
    from edge_seg.converters.tflite_export import export
    from edge_seg.backends.metadata import read_meta
    (per_tensor,) = export(tiny_keras, ["int8"], tmp_path / "t", str(manifest), log=lambda m: None)
    (per_channel,) = export(tiny_keras, ["int8"], tmp_path / "c", str(manifest), per_channel=True,
                            log=lambda m: None)
    assert read_meta(per_tensor)["quantization"]["weights"] == "per-tensor"
    assert read_meta(per_channel)["quantization"]["weights"] == "per-channel"
    tensor_scales, channel_scales = _conv_weight_scales(per_tensor), _conv_weight_scales(per_channel)
    assert tensor_scales and set(tensor_scales) == {1}
    assert max(channel_scales) > 1
    assert per_tensor.stat().st_size < per_channel.stat().st_size


def test_qat_weights_are_per_channel(tiny_keras, manifest, tmp_path):
    from edge_seg.converters.tflite_export import export
    from edge_seg.backends.metadata import read_meta
    (path,) = export(tiny_keras, ["qat-int8"], tmp_path, str(manifest), qat_steps=2, log=lambda m: None)
    assert max(_conv_weight_scales(path)) > 1
    meta = read_meta(path)
    assert meta["quantization"]["weights"] == "per-channel"
    assert meta["qat"]["objective"].startswith("distillation")


def test_interrupted_conversion_leaves_no_partial_file(tiny_keras, tmp_path, monkeypatch):
    import edge_seg.backends.metadata as mm
    from edge_seg.converters.tflite_export import export

    def interrupted(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(mm.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(tiny_keras, ["fp32"], tmp_path, log=lambda m: None)
    assert not [p for p in tmp_path.iterdir()], list(tmp_path.iterdir())


def test_layer_the_int8_converter_cannot_handle_is_named():
    import tf_keras as keras

    from edge_seg.converters.qat import check_quantizable
    from edge_seg.converters.tflite_export import convert
    model = tiny_model(extra=lambda x: keras.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1),
                                                           name="running_prod")(x))

    def rep():
        for _ in range(2):
            yield [np.zeros((1, SIZE[1], SIZE[0], 3), np.float32)]
    with pytest.raises(UserError) as info:
        convert(model, "int8", rep)
    msg = str(info.value)
    assert "running_prod" in msg and "fix:" in msg and "\n" not in msg, msg
    with pytest.raises(UserError, match="running_prod.*fix:"):
        check_quantizable(model)


def test_qat_names_unsupported_layer():
    import tf_keras as keras

    from edge_seg.converters.qat import check_quantizable
    model = tiny_model(extra=lambda x: keras.layers.LayerNormalization(name="odd_norm")(x))
    with pytest.raises(UserError, match="odd_norm.*LayerNormalization.*fix:"):
        check_quantizable(model)
    check_quantizable(tiny_model())  # the plain model passes


# ------------------------------------------------------------------ GPU check

def test_gpu_report_parsing():
    from edge_seg.converters.gpu_check import parse_report
    ok = ("Subgraph#0 main(T#0) -> [T#9]\n  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#3]\n"
          "  Op#1 RESIZE_BILINEAR(T#3, T#4) -> [T#5]\n\n"
          "Your model looks compatible with GPU delegate on TFLite runtime version 2.21.0.\n")
    r = parse_report(ok)
    assert r["compatible"] and r["verdict"] == "compatible" and r["ops"] == ["CONV_2D", "RESIZE_BILINEAR"]
    bad = ("  Op#0 CONV_2D(T#0) -> [T#3]\n  Op#1 SEGMENT_SUM(T#3, T#4) -> [T#5]\n"
           "GPU COMPATIBILITY WARNING: Not supported op SEGMENT_SUM\n"
           "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1\n")
    r = parse_report(bad)
    assert not r["compatible"] and "SEGMENT_SUM" in r["verdict"] and r["unsupported_ops"] == ["SEGMENT_SUM"]
    # the analyzer saying "compatible" is not enough when an op is outside the delegate's list
    r = parse_report(ok.replace("RESIZE_BILINEAR", "TOPK_V2"))
    assert not r["compatible"] and r["analyzer_verdict"] == "compatible" and r["unsupported_ops"] == ["TOPK_V2"]


def test_gpu_check_captures_analyzer_output(exported, capfd):
    from edge_seg.converters.gpu_check import check_gpu
    result = check_gpu(exported["fp16"].read_bytes())
    assert result["analyzer_verdict"] == "compatible"
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(result["ops"])
    assert "ModelAnalyzer" not in capfd.readouterr().out  # captured, not printed


# ------------------------------------------------------------------ CLI

def test_convert_cli_errors_are_one_line(tiny_keras, tmp_path):
    for args, needle in (([str(tiny_keras)], "nothing to convert"),
                         ([str(tiny_keras), "--int8"], "needs data"),
                         ([str(tmp_path / "none.keras"), "--fp32"], "model not found")):
        out = edge_seg("convert", *args, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
        assert out.returncode == 2, out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], out.stderr
        assert "Traceback" not in out.stderr


# ------------------------------------------------------------------ input sizes and ONNX

BIG = (128, 64)  # a second input size of the tiny model (2x its native 64x32)


@pytest.fixture(scope="module")
def sized(tiny_keras, manifest, tmp_path_factory):
    from edge_seg.converters.tflite_export import export
    out = tmp_path_factory.mktemp("sized")
    paths = export(tiny_keras, ["fp32", "int8"], out, str(manifest), log=lambda m: None, sizes=[SIZE, BIG])
    return {p.name: p for p in paths}


def val_frames(scenes, n=3):
    from edge_seg.train.datasets import load_split, read_image
    return [cv2.cvtColor(read_image(s.image), cv2.COLOR_RGB2BGR) for s in load_split(scenes, split="val")[:n]]


def test_sizes_files_sidecars_and_tensors(sized):
    from ai_edge_litert.interpreter import Interpreter

    from edge_seg.backends.metadata import read_meta
    from edge_seg.segmenter import Segmenter
    assert set(sized) == {"tiny-64x32-fp32.tflite", "tiny-64x32-int8.tflite",
                          "tiny-128x64-fp32.tflite", "tiny-128x64-int8.tflite"}
    for name, path in sized.items():
        w, h = BIG if "128x64" in name else SIZE
        meta = read_meta(path)
        assert meta["input_size"] == [w, h] and meta["native_input_size"] == list(SIZE)
        assert meta["variant"] == name.rsplit("-", 1)[1].removesuffix(".tflite")
        interp = Interpreter(model_path=str(path))
        assert list(interp.get_input_details()[0]["shape"]) == [1, h, w, 3]
        assert list(interp.get_output_details()[0]["shape"]) == [1, h, w, labels.NUM_CATEGORIES]
        assert Segmenter(path, threads=1).input_size == (w, h)


def test_sizes_keep_the_weights(tiny_keras, exported, sized, scenes):
    """At the native size the rebuilt model's masks equal the plain export's; at another size
    it is the same network (same weights)."""
    import tf_keras as keras

    from edge_seg.converters.sizes import rebuild_at_size
    from edge_seg.segmenter import Segmenter
    model = keras.models.load_model(tiny_keras, compile=False)
    big = rebuild_at_size(model, BIG)
    assert big.input_shape == (None, BIG[1], BIG[0], 3) and big.output_shape[1:3] == (BIG[1], BIG[0])
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), big.get_weights()))
    assert rebuild_at_size(model, SIZE) is model
    for variant in ("fp32", "int8"):
        plain = Segmenter(exported[variant], threads=1)
        native = Segmenter(sized[f"tiny-64x32-{variant}.tflite"], threads=1)
        for frame in val_frames(scenes):
            assert np.array_equal(plain.predict_mask(frame)[0], native.predict_mask(frame)[0]), variant


def test_sizes_bad_input(tiny_keras, tmp_path):
    from edge_seg.converters.sizes import parse_sizes
    from edge_seg.converters.tflite_export import export
    assert parse_sizes("512x256, 384x192,512x256") == [(512, 256), (384, 192)]
    with pytest.raises(UserError, match="multiples of 32"):
        parse_sizes("100x50")
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        parse_sizes("big")
    with pytest.raises(UserError, match="nothing to convert"):
        export(tiny_keras, [], tmp_path, sizes=[BIG])


def test_compare_scores_sizes_at_the_label_resolution(tiny_keras, sized, scenes):
    from edge_seg.converters.compare import format_markdown, format_text, run_compare
    variants = [sized["tiny-64x32-fp32.tflite"], sized["tiny-128x64-fp32.tflite"],
                sized["tiny-128x64-int8.tflite"]]
    result = run_compare(tiny_keras, variants, scenes, "val", threads=1, latency_runs=1)
    assert result["scored_at"] == "label resolution"
    rows = result["rows"]
    assert [r["input_size"] for r in rows] == [list(SIZE), list(SIZE), list(BIG), list(BIG)]
    assert rows[1]["drop_points"] == pytest.approx(0, abs=1e-6)  # fp32 .tflite == Keras, same size
    assert rows[1]["pixel_agreement"] > 0.999
    assert 0 < rows[2]["pixel_agreement"] < 1  # another resolution: another mask
    text = format_text(result)
    assert "128x64" in text and "label resolution" in text
    assert "| int8 128x64 |" in format_markdown(result)  # per-category rows name the size
    # the label frames are 128x64, the models' masks 64x32 and 128x64: scored the same way as
    # the model-resolution path when every size is the model's own
    same = run_compare(tiny_keras, variants[:1], scenes, "val", threads=1, latency_runs=1)
    assert same["scored_at"] == "model resolution"
    with pytest.raises(UserError, match="--at-label-resolution"):
        run_compare(tiny_keras, variants, scenes, "val", threads=1, latency_runs=1, at_label_resolution=False)


def test_convert_onnx_cli(tiny_keras, exported, scenes, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from click.testing import CliRunner

    from edge_seg.converters.cli import convert
    from edge_seg.backends.metadata import read_meta
    from edge_seg.segmenter import Segmenter
    res = CliRunner().invoke(convert, [str(tiny_keras), "--onnx", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    onnx = tmp_path / "tiny.onnx"
    meta = read_meta(onnx)
    assert meta["variant"] == "onnx-fp32" and meta["input_size"] == list(SIZE)
    assert meta["onnx"]["layout"] == "NHWC" and meta["onnx"]["verified_max_abs_diff"] < 1e-4
    assert [p.name for p in tmp_path.glob("*.tflite")] == []  # --onnx alone converts only ONNX
    a, b = Segmenter(onnx, threads=1, delegate="cpu"), Segmenter(exported["fp32"], threads=1)
    for frame in val_frames(scenes):
        assert (a.predict_mask(frame)[0] == b.predict_mask(frame)[0]).mean() > 0.999
    res = CliRunner().invoke(convert, [str(tiny_keras), "--onnx", "--fp32", "--sizes", "128x64",
                                       "-o", str(tmp_path / "big")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == [
        "tiny-128x64-fp32.json", "tiny-128x64-fp32.tflite", "tiny-128x64.json", "tiny-128x64.onnx"]
    assert read_meta(tmp_path / "big" / "tiny-128x64.onnx")["input_size"] == list(BIG)
    bad = CliRunner().invoke(convert, [str(tiny_keras), "--nchw", "--fp32"])
    assert bad.exit_code != 0 and "--nchw applies" in str(bad.exception)

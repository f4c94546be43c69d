"""Runtime building blocks: Segmenter, interpreter/delegate loading, default model, overlay."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import RUNTIME_MODEL_SIZE, street_frames
from edge_seg.backends import bundled, litert
from edge_seg.errors import UserError
from edge_seg.labels import NUM_CATEGORIES, colors_bgr
from edge_seg.overlay import Overlay, colorize, hud_lines
from edge_seg.segmenter import Result, Segmenter
from edge_seg.timing import LatencyStats


@pytest.fixture(scope="module")
def frame():
    return street_frames(1, size=(300, 170), seed=4)[0]  # deliberately not the model size


@pytest.mark.parametrize("kind", ["fp32", "int8", "uint8"])
def test_segmenter_masks_overlay_timings(tiny_models, frame, kind):
    seg = Segmenter(tiny_models[kind], threads=1)
    assert seg.input_size == RUNTIME_MODEL_SIZE
    result = seg(frame)
    assert isinstance(result, Result)
    assert result.mask.shape == frame.shape[:2] and result.mask.dtype == np.uint8
    assert result.mask.max() < NUM_CATEGORIES
    assert result.overlay.shape == frame.shape and result.overlay.dtype == np.uint8
    assert set(result.timings) == {"pre", "infer", "post", "draw"}
    model_mask, frame_mask = seg.predict_mask(frame)
    assert model_mask.shape == (RUNTIME_MODEL_SIZE[1], RUNTIME_MODEL_SIZE[0])
    np.testing.assert_array_equal(frame_mask, result.mask)
    # every frame-size value comes from the model-size mask (NEAREST, no new values)
    assert set(np.unique(frame_mask)) <= set(np.unique(model_mask))


@pytest.mark.parametrize("kind", ["fp32", "int8", "uint8"])
def test_preprocess_is_the_shared_preprocessing(tiny_models, frame, kind):
    from edge_seg.preprocess import bgr_to_model_rgb, normalize, quantize_input
    seg = Segmenter(tiny_models[kind], threads=1)
    expected = normalize(bgr_to_model_rgb(frame, seg.input_size))
    if kind != "fp32":
        expected = quantize_input(expected, seg.input_scale, seg.input_zero_point, seg.input_dtype)
    got = seg.preprocess(frame)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got[0], expected)


def test_quantised_input_and_int8_argmax(tiny_models, frame):
    seg = Segmenter(tiny_models["int8"], threads=1)
    assert seg.input_dtype == np.int8 and seg.output_dtype == np.int8
    x = seg.preprocess(frame)
    assert x.dtype == np.int8 and x.shape == (1, RUNTIME_MODEL_SIZE[1], RUNTIME_MODEL_SIZE[0], 3)
    logits = seg.infer(x)
    scale, zero = seg.interpreter.get_output_details()[0]["quantization"]
    dequantised = (logits.astype(np.float32) - zero) * scale
    np.testing.assert_array_equal(seg.postprocess(logits), np.argmax(dequantised[0], -1))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float32])
def test_argmax_matches_numpy_including_ties(dtype):
    from edge_seg.segmenter import argmax_categories
    rng = np.random.default_rng(1)
    logits = rng.integers(0, 6, (33, 65, 8)).astype(dtype)  # many ties
    if dtype == np.int8:
        logits = (logits * 40 - 120).astype(np.int8)
    np.testing.assert_array_equal(argmax_categories(logits), np.argmax(logits, -1))
    assert argmax_categories(logits).dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float32])
def test_logits_upsample_bilinearly_in_their_own_type(dtype):
    """int8 logits go through uint8 (OpenCV has no int8 bilinear resize): the result is the
    float bilinear resize of the same values, to OpenCV's fixed-point rounding."""
    from edge_seg.preprocess import upsample_logits
    rng = np.random.default_rng(2)
    info = np.iinfo(dtype) if dtype != np.float32 else None
    logits = (rng.integers(info.min, info.max + 1, (16, 32, 8)) if info else rng.normal(0, 5, (16, 32, 8))).astype(dtype)
    up = upsample_logits(logits, (64, 32))
    assert up.dtype == dtype and up.shape == (32, 64, 8)
    reference = cv2.resize(logits.astype(np.float32), (64, 32), interpolation=cv2.INTER_LINEAR)
    assert np.abs(up.astype(np.float32) - reference).max() <= (1.0 if info else 1e-4)
    assert upsample_logits(logits, (32, 16)) is logits


def test_int8_mostly_agrees_with_its_float_model(tiny_models, frame):
    from edge_seg.iou import agreement
    f = Segmenter(tiny_models["fp32"], threads=1).predict_mask(frame)[0]
    q = Segmenter(tiny_models["int8"], threads=1).predict_mask(frame)[0]
    assert agreement(f, q)["pixel_agreement"] > 0.9


def test_onnx_model_runs_through_the_same_segmenter(tiny_onnx, tiny_models, frame):
    from edge_seg.iou import agreement
    onnx = Segmenter(tiny_onnx, threads=1, delegate="cpu")
    assert onnx.backend.backend.startswith("onnxruntime")
    tflite = Segmenter(tiny_models["fp32"], threads=1)
    a = agreement(tflite.predict_mask(frame)[0], onnx.predict_mask(frame)[0])
    assert a["pixel_agreement"] > 0.99
    assert onnx(frame).mask.shape == frame.shape[:2]


def test_bad_models_are_user_errors(tiny_models, tmp_path):
    good = tiny_models["int8"]
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    shutil.copy(good.with_suffix(".json"), truncated.with_suffix(".json"))
    text = tmp_path / "text.tflite"
    text.write_text("not a model\n")
    shutil.copy(good.with_suffix(".json"), text.with_suffix(".json"))
    unhashed = tmp_path / "unhashed.tflite"  # a sidecar without model_sha256 cannot tell either
    unhashed.write_bytes(truncated.read_bytes())
    meta = json.loads(good.with_suffix(".json").read_text())
    del meta["model_sha256"]
    unhashed.with_suffix(".json").write_text(json.dumps(meta))
    no_meta = tmp_path / "no-meta.tflite"
    shutil.copy(good, no_meta)
    # a cut file is said to be damaged before any sidecar is compared with it
    cases = {truncated: r"truncated.tflite: damaged \(truncated", unhashed: r"unhashed.tflite: damaged \(truncated",
             text: "not a TFLite model", no_meta: r"no metadata \(no no-meta.json beside it",
             tmp_path / "absent.tflite": "no such file"}
    for path, message in cases.items():
        with pytest.raises(UserError, match=message):
            Segmenter(path)


def test_metadata_must_match_the_tensor(tiny_models, tmp_path):
    import json
    model = tmp_path / "m.tflite"
    shutil.copy(tiny_models["int8"], model)
    meta = json.loads(tiny_models["int8"].with_suffix(".json").read_text())
    meta["input_size"] = [256, 128]
    model.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="metadata says 256x128"):
        Segmenter(model)


def test_delegates_fall_back_to_cpu_with_one_line(tiny_models, tmp_path, monkeypatch):
    lines = []
    model = tiny_models["int8"]
    # a library that does not exist
    _, info = litert.load_interpreter(model, 1, str(tmp_path / "libnothing.so"), log=lines.append)
    assert info.delegate == "xnnpack" and info.fallback and len(lines) == 1
    assert "running on the CPU" in lines[0]
    # --delegate gpu with $EDGE_SEG_GPU_DELEGATE naming a file that is no library
    fake = tmp_path / "libtensorflowlite_gpu_delegate.so"
    fake.write_text("not an ELF file")
    monkeypatch.setenv(litert.GPU_DELEGATE_ENV, str(fake))
    lines.clear()
    interpreter, info = litert.load_interpreter(model, 1, "gpu", log=lines.append)
    assert info.delegate_requested == "gpu" and info.delegate == "xnnpack" and len(lines) == 1
    interpreter.invoke()  # the fallback interpreter works
    # the Edge TPU library is not installed here
    lines.clear()
    _, info = litert.load_interpreter(model, 1, "edgetpu", log=lines.append)
    assert info.delegate == "xnnpack" and len(lines) == 1
    # cpu: built-in kernels without XNNPACK, no fallback needed
    lines.clear()
    _, info = litert.load_interpreter(model, 1, "cpu", log=lines.append)
    assert info.delegate.startswith("cpu") and not lines and info.fallback is None
    with pytest.raises(UserError, match="--delegate"):
        litert.check_delegate("tpu-please")


def test_gpu_delegate_search_order(tmp_path, monkeypatch):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    (lib_dir / litert.GPU_DELEGATE_LIBRARY).write_bytes(b"")
    monkeypatch.delenv(litert.GPU_DELEGATE_ENV, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib_dir))
    candidates = litert.gpu_delegate_candidates()
    assert candidates[0] == lib_dir / litert.GPU_DELEGATE_LIBRARY
    assert any(str(c).startswith("/usr/lib") for c in candidates)
    assert litert.find_gpu_delegate() == lib_dir / litert.GPU_DELEGATE_LIBRARY
    explicit = tmp_path / "mine.so"
    explicit.write_bytes(b"")
    monkeypatch.setenv(litert.GPU_DELEGATE_ENV, str(explicit))
    assert litert.gpu_delegate_candidates()[0] == explicit
    assert litert.find_gpu_delegate() == explicit
    monkeypatch.setenv(litert.GPU_DELEGATE_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(OSError, match="is not a file"):
        litert.find_gpu_delegate()


def test_default_model_prefers_the_reference(monkeypatch):
    path = bundled.default_model()
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert path.name in bundled.PREFERENCE
    # only the product's models ship: every bundled model is a variant of the reference or
    # of its fast tier, and the reference int8 stays the default
    models = bundled.bundled_models()
    assert path in models and path.name == "unet-mobilenetv2-camvid-idd-int8.tflite"
    assert all(p.name.startswith(("unet-mobilenetv2-camvid-idd-", "unet-mobilenetv2-fast-camvid-idd-"))
               for p in models)
    monkeypatch.setattr(bundled, "PREFERENCE", ("no-such-model.tflite", path.name))
    assert bundled.default_model() == path
    monkeypatch.setattr(bundled, "PREFERENCE", ("no-such-model.tflite",))
    with pytest.raises(UserError, match="no bundled model"):
        bundled.default_model()


def test_a_bundled_model_runs_by_its_name():
    """``--model NAME`` finds a bundled model by its file name, with or without .tflite."""
    fast = "unet-mobilenetv2-fast-camvid-idd-int8"
    if not any(p.stem == fast for p in bundled.bundled_models()):
        pytest.skip(f"{fast} is not bundled in this checkout")
    for name in (fast, f"{fast}.tflite"):
        path = bundled.resolve_model(name)
        assert path.name == f"{fast}.tflite" and path.with_suffix(".json").is_file()
    with pytest.raises(UserError, match="no such file"):
        bundled.resolve_model("unet-mobilenetv2-fast-camvid-idd-int4")


def test_overlay_views_colours_legend_hud():
    mask = np.tile(np.arange(NUM_CATEGORIES, dtype=np.uint8).repeat(8), (40, 1))  # 40 x 64
    frame = np.full((80, 128, 3), 200, np.uint8)  # twice the mask size
    color = colorize(mask, Overlay().lut)
    np.testing.assert_array_equal(color[0, ::8], colors_bgr())
    plain = Overlay(alpha=1.0, legend=False, hud=False)
    out = plain.render(frame, mask)
    assert out.shape == frame.shape
    np.testing.assert_array_equal(out[0, ::16], colors_bgr())  # mask upsampled NEAREST
    clear = Overlay(alpha=0.0, legend=False, hud=False).render(frame, mask)
    np.testing.assert_array_equal(clear, frame)
    side = Overlay(view="side-by-side", legend=False, hud=False).render(frame, mask)
    assert side.shape == (80, 256, 3) and (side[:, :128] == frame).all()
    only = Overlay(view="mask", legend=False, hud=False).render(frame, mask)
    np.testing.assert_array_equal(only, plain.render(frame, mask))
    big = np.full((512, 1024, 3), 200, np.uint8)
    drawn = Overlay(alpha=0.0).render(big, np.zeros((256, 512), np.uint8),
                                      hud_lines(25.0, {"capture": 1, "pre": 2, "infer": 30,
                                                       "post": 3, "draw": 1}))
    assert (drawn[:40, :200] != 200).any()      # HUD top-left
    assert (drawn[-150:, :150] != 200).any()    # legend bottom-left
    assert (drawn[200:300, 500:600] == 200).all()  # the rest untouched
    with pytest.raises(ValueError):
        Overlay(view="3d")
    assert hud_lines(float("nan"), {"infer": 30})[0] == "FPS --"  # before the rate is known
    assert hud_lines(25.04, {"infer": 30}) == ["FPS 25.0", "infer 30.0 ms"]


def test_latency_percentiles_constant_memory():
    stats = LatencyStats()
    values = np.random.default_rng(0).lognormal(3, 0.6, 5000)
    for v in values:
        stats.add(v)
    for q in (50, 99):
        assert stats.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.03)
    assert stats.counts.nbytes < 64 * 1024

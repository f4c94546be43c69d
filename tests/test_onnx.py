"""ONNX path: tf2onnx export of a product-like model, numerically checked
against Keras through ONNX Runtime, and the ONNX Runtime backend in edge/."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from edge_seg.errors import UserError

from conftest import python_without_tf

HAVE_TF2ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "tensorflow", "tf_keras"))
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_tf2onnx = pytest.mark.skipif(not HAVE_TF2ONNX, reason="tf2onnx/onnx/TensorFlow not installed "
                                   "(pip install 'edge-seg[train,onnx]')")
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime not installed (pip install onnxruntime)")

W, H = 128, 64
TOLERANCE = 1e-4


def _small_model(seed: int = 3):
    """Like the product's: MobileNetV2 encoder (alpha 0.35, no weights), bilinear
    UpSampling2D + Concatenate decoder, 8-logit head; BN statistics randomised so the logits
    are not all near zero as at initialisation."""
    import tf_keras as keras
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(input_shape=(H, W, 3), alpha=0.35, weights=None,
                                          include_top=False)
    skips = [base.get_layer(n).output for n in
             ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add")]
    x = base.get_layer("block_16_project_BN").output
    for i, skip in enumerate(reversed(skips)):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"up{i}")(x)
        x = keras.layers.Concatenate(name=f"cat{i}")([x, skip])
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = keras.layers.BatchNormalization(name=f"dw{i}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"dw{i}_relu")(x)
        x = keras.layers.Conv2D(16, 1, use_bias=False, name=f"pw{i}")(x)
        x = keras.layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"pw{i}_relu")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up_full")(x)
    logits = keras.layers.Conv2D(8, 1, name="logits")(x)
    model = keras.Model(base.input, logits, name="tiny_unet_mnv2")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0, 0.2, beta.shape).astype(np.float32),
                               rng.normal(0, 0.2, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 1.5, var.shape).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def keras_model():
    if not HAVE_TF2ONNX:
        pytest.skip("tf2onnx/onnx/TensorFlow not installed")
    return _small_model()


@pytest.fixture(scope="module")
def exported(keras_model, tmp_path_factory):
    from edge_seg.converters.onnx_export import export_onnx
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    report = export_onnx(keras_model, out, source="tests/test_onnx.py")
    return report


@pytest.mark.slow
@needs_tf2onnx
@needs_ort
def test_export_matches_keras(exported, keras_model):
    """The acceptance number: ONNX Runtime vs Keras on random input."""
    import onnxruntime as ort
    assert exported.path.is_file() and exported.meta_path.is_file()
    assert not list(exported.path.parent.glob(".*.tmp")), "atomic write left a temporary file"
    assert exported.max_abs_diff is not None and exported.max_abs_diff < TOLERANCE
    # an independent check here too, on a different seed, plus agreement of the argmax
    x = np.random.default_rng(11).uniform(-1, 1, (3, H, W, 3)).astype(np.float32)
    expected = keras_model(x, training=False).numpy()
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == expected.shape == (3, H, W, 8)
    diff = float(np.abs(got - expected).max())
    print(f"ONNX Runtime vs Keras: max abs diff {diff:.3g} (logits up to {np.abs(expected).max():.3g})")
    assert diff < TOLERANCE
    assert np.abs(expected).max() > 0.1, "logits too small for the comparison to mean anything"
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.999


@pytest.mark.slow
@needs_tf2onnx
def test_export_metadata(exported):
    import onnx

    from edge_seg.backends.metadata import file_sha256, model_sha256, read_meta
    meta = read_meta(exported.path)
    assert meta["variant"] == "onnx-fp32"
    assert meta["input_size"] == [W, H]
    # the metadata is embedded (onnx reads it back) and does not change the model's hash
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert json.loads(props["edge_seg"]) == meta
    assert meta["model_sha256"] == model_sha256(exported.path) != file_sha256(exported.path)
    assert meta["onnx"]["layout"] == "NHWC" and meta["onnx"]["opset"] == 17
    assert meta["normalization"]["mean"] == 127.5 and len(meta["categories"]) == 8
    assert meta["source"] == "tests/test_onnx.py"


@pytest.mark.slow
@needs_tf2onnx
@needs_ort
def test_export_nchw_and_saved_file(keras_model, tmp_path):
    """nchw=True gives an NCHW graph; a saved .keras file converts like the live model."""
    from edge_seg.converters.onnx_export import export_onnx
    from edge_seg.backends.onnxrt import load_onnx
    from edge_seg.backends.metadata import read_meta
    saved = tmp_path / "tiny.keras"
    keras_model.save(saved)
    report = export_onnx(saved, tmp_path / "tiny-nchw.onnx", nchw=True)
    assert report.layout == "NCHW" and report.max_abs_diff < TOLERANCE
    meta = read_meta(report.path)
    assert meta["source"] == str(saved) and len(meta["source_sha256"]) == 64
    model = load_onnx(report.path, threads=1, delegate="cpu", meta=meta)
    assert model.layout == "NCHW" and model.output_layout == "NCHW"
    x = np.random.default_rng(5).uniform(-1, 1, (1, H, W, 3)).astype(np.float32)
    np.testing.assert_allclose(model.run(x), keras_model(x, training=False).numpy(), atol=TOLERANCE)
    # the same input handed over already NCHW
    np.testing.assert_allclose(model.run(x.transpose(0, 3, 1, 2)), model.run(x), atol=0)


@pytest.mark.slow
@needs_tf2onnx
@needs_ort
def test_backend_interpreter_interface(exported, keras_model):
    """run() and the TFLite-interpreter slice the Segmenter uses give the Keras logits."""
    from edge_seg.backends.onnxrt import load_onnx
    from edge_seg.backends.metadata import read_meta
    from edge_seg.preprocess import bgr_to_model_rgb, normalize
    logs = []
    model = load_onnx(exported.path, threads=2, meta=read_meta(exported.path), log=logs.append)
    assert model.info.delegate in ("tensorrt", "cuda", "cpu") and model.info.threads == 2
    assert "onnxruntime" in model.info.describe()
    inp, out = model.get_input_details()[0], model.get_output_details()[0]
    assert list(inp["shape"]) == [1, H, W, 3] and inp["dtype"] == np.float32
    assert list(out["shape"]) == [1, H, W, 8]
    frame = np.random.default_rng(2).integers(0, 256, (240, 320, 3), np.uint8)
    x = normalize(bgr_to_model_rgb(frame, (W, H)))[None]
    model.set_tensor(inp["index"], x)
    model.invoke()
    logits = model.get_tensor(out["index"])
    np.testing.assert_allclose(logits, keras_model(x, training=False).numpy(), atol=TOLERANCE)
    np.testing.assert_array_equal(logits, model.run(x))
    assert not logs


@pytest.mark.slow
@needs_tf2onnx
@needs_ort
@pytest.mark.parametrize("arch", ["unet-mobilenetv2", "lraspp-mobilenetv2",
                                  "deeplabv3plus-mobilenetv2", "unet-small"])
def test_product_architectures_convert(arch, tmp_path):
    """Every architecture `edge-seg train` builds converts, and ONNX Runtime agrees with Keras."""
    import tf_keras as keras
    from edge_seg.converters.onnx_export import export_onnx
    from edge_seg.train.models import build_model
    model = build_model(arch, input_size=(W, H))
    rng = np.random.default_rng(1)
    for layer in model.layers:  # realistic logit magnitudes instead of the init's ~0
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0, 0.2, beta.shape).astype(np.float32),
                               rng.normal(0, 0.2, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 1.5, var.shape).astype(np.float32)])
    report = export_onnx(model, tmp_path / f"{arch}.onnx", arch=arch)
    print(f"{arch}: max abs diff {report.max_abs_diff:.3g}")
    assert report.max_abs_diff is not None and report.max_abs_diff < TOLERANCE
    assert not report.notes


def test_choose_providers():
    from edge_seg.backends.onnxrt import choose_providers
    cpu, cuda, trt = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
    assert choose_providers("auto", [cpu]) == ([cpu], None)
    assert choose_providers("auto", [trt, cuda, cpu]) == ([trt, cuda, cpu], None)
    assert choose_providers("auto", ["AzureExecutionProvider", cuda, cpu]) == ([cuda, cpu], None)
    assert choose_providers("gpu", [cuda, cpu]) == ([cuda, cpu], None)
    assert choose_providers("cpu", [trt, cuda, cpu]) == ([cpu], None)
    assert choose_providers("tensorrt", [trt, cuda, cpu]) == ([trt, cuda, cpu], None)
    assert choose_providers("tensorrt", [trt, cpu]) == ([trt, cpu], None)
    providers, why = choose_providers("tensorrt", [cpu])
    assert providers == [cpu] and "TensorrtExecutionProvider is not in this onnxruntime" in why
    with pytest.raises(UserError, match="choose one of"):
        choose_providers("edgetpu", [cpu])


class _FakeSession:
    """Stands in for onnxruntime.InferenceSession on machines without a GPU."""

    def __init__(self, path, options=None, providers=None, provider_options=None):
        if providers and providers[0] == "TensorrtExecutionProvider":
            raise RuntimeError("TensorRT EP could not be created: libnvinfer.so.10 not found")
        self.providers = list(providers or ["CPUExecutionProvider"])

    def get_providers(self):
        return self.providers

    def get_inputs(self):
        from types import SimpleNamespace
        return [SimpleNamespace(name="input", shape=["N", H, W, 3], type="tensor(float)")]

    def get_outputs(self):
        from types import SimpleNamespace
        return [SimpleNamespace(name="logits", shape=["N", H, W, 8], type="tensor(float)")]

    def run(self, names, feed):
        x = feed["input"]
        return [np.zeros(x.shape[:3] + (8,), np.float32)]


@needs_ort
def test_provider_fallback_is_reported(tmp_path, monkeypatch):
    """A GPU provider that is listed but cannot start falls back, with one log line."""
    import onnxruntime as ort
    from edge_seg.backends import onnxrt
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"not really")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                 "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _FakeSession)
    logs = []
    model = onnxrt.load_onnx(model_file, threads=1, delegate="auto", log=logs.append)
    assert model.info.delegate == "cuda"
    assert "libnvinfer" in model.info.fallback and len(logs) == 1
    assert model.run(np.zeros((1, H, W, 3), np.float32)).shape == (1, H, W, 8)
    logs.clear()
    model = onnxrt.load_onnx(model_file, threads=1, delegate="tensorrt", log=logs.append)
    assert model.info.delegate == "cuda" and "running on cuda" in logs[0]


@needs_ort
def test_backend_bad_files(tmp_path):
    from edge_seg.backends.onnxrt import load_onnx
    with pytest.raises(UserError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage, not a protobuf" * 10)
    with pytest.raises(UserError, match="ONNX Runtime cannot load it"):
        load_onnx(junk, log=lambda m: None)
    with pytest.raises(UserError, match="choose one of"):
        load_onnx(junk, delegate="edgetpu")


def test_missing_onnxruntime_is_a_user_error(tmp_path):
    """Without onnxruntime: a one-line UserError naming the package; importing the module
    itself needs neither onnxruntime nor TensorFlow."""
    code = (
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "from edge_seg.backends import onnxrt\n"
        "from edge_seg.errors import UserError\n"
        "open('m.onnx', 'wb').write(b'x')\n"
        "try:\n"
        "    onnxrt.load_onnx('m.onnx')\n"
        "except UserError as e:\n"
        "    print('USERERROR', e)\n"
        "print('TF', 'tensorflow' in sys.modules)\n")
    result = subprocess.run(python_without_tf(code), capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "USERERROR" in result.stdout and "pip install onnxruntime" in result.stdout
    assert "TF False" in result.stdout


def test_missing_tf2onnx_is_a_user_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in ("tf2onnx", "onnx"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from edge_seg.converters import onnx_export
    with pytest.raises(UserError, match=r"pip install 'edge-seg\[onnx\]'"):
        onnx_export.export_onnx("whatever.keras", "out.onnx")


def test_metadata_json_roundtrip_for_backend(tmp_path):
    """Metadata with a dynamic-size graph: the backend takes the size from it."""
    meta = {"input_size": [W, H], "categories": [{}] * 8, "onnx": {"layout": "NHWC"}}
    assert json.loads(json.dumps(meta))["onnx"]["layout"] == "NHWC"
    if not HAVE_ORT:
        pytest.skip("onnxruntime not installed")
    from edge_seg.backends.onnxrt import OnnxBackendInfo, OnnxModel
    session = _FakeSession("x", providers=["CPUExecutionProvider"])
    session.get_inputs = lambda: [type("I", (), {"name": "input", "shape": ["N", "h", "w", 3],
                                                  "type": "tensor(float)"})()]
    model = OnnxModel(session, OnnxBackendInfo("ort", "cpu", "cpu", 1), tmp_path / "m.onnx",
                      input_size=meta["input_size"], layout="NHWC", num_categories=8)
    assert model.input_size == (W, H)
    with pytest.raises(UserError, match="dynamic"):
        OnnxModel(session, OnnxBackendInfo("ort", "cpu", "cpu", 1), tmp_path / "m.onnx")

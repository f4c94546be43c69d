"""Shared fixtures. Datasets in ../shared are optional: tests needing them skip with a
reason; synthetic scenes (edge/scenes/) cover the same code paths everywhere."""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge_seg.train.tf_env import use_legacy_keras

use_legacy_keras()

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
MODEL_BUILDER = TESTS / "model_builder.py"
SHARED = REPO.parent / "shared" / "datasets"
CAMVID = SHARED / "camvid"
CITYSCAPES_SAMPLE = SHARED / "cityscapes-sample"

# A prelude that makes TensorFlow unimportable in a subprocess: python -c PRELUDE + code.
BLOCK_TF = """
import sys, importlib.abc
class _BlockTF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization', 'keras'):
            raise ImportError('TensorFlow is blocked in this test: ' + name)
sys.meta_path.insert(0, _BlockTF())
"""


def python_without_tf(code: str) -> list[str]:
    """argv running ``code`` in a fresh interpreter where TensorFlow cannot be imported."""
    return [sys.executable, "-c", BLOCK_TF + code]


# A CLI subprocess that hangs fails its test after this long instead of stalling the suite.
CLI_TIMEOUT_S = 600
# For commands that load TensorFlow: its C++ log and its GPU probing off.
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def edge_seg_argv(*args, block_tf: bool = False, prelude: str = "") -> list[str]:
    """argv running ``edge-seg ARGS`` in a fresh interpreter, as the console script runs it:
    the program name is edge-seg, so help and errors read as users see them, and the working
    folder is not on the import path, so a test's scratch files cannot shadow a module.
    ``prelude`` runs first (stand-ins, injected stalls)."""
    code = ("import sys\nsys.path[:] = [p for p in sys.path if p]\n"
            f"{prelude}\nfrom edge_seg.cli import main\n"
            f"sys.argv = ['edge-seg', *{[str(a) for a in args]!r}]\nmain()\n")
    return python_without_tf(code) if block_tf else [sys.executable, "-c", code]


def edge_seg(*args, block_tf: bool = False, prelude: str = "", env: dict | None = None,
             cwd: Path | str = REPO, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``edge-seg ARGS`` run to completion, output captured as text (undecodable bytes
    replaced: hostile input may be echoed); ``env`` adds to (and overrides) this process's
    environment."""
    return subprocess.run(edge_seg_argv(*args, block_tf=block_tf, prelude=prelude), cwd=cwd,
                          env=None if env is None else {**os.environ, **env}, capture_output=True,
                          text=True, errors="replace", timeout=timeout)


# ---------------------------------------------------------------------------------------
# Tests marked `network` install or resolve from the package index; without an index that
# answers they skip, all with the same one-line reason, instead of failing or hanging.
# ---------------------------------------------------------------------------------------
INDEX_TIMEOUT_S = 5
DEFAULT_INDEX = "https://pypi.org/simple"


def pip_index_url() -> str:
    """The index ``pip install`` reads, in pip's order: PIP_INDEX_URL (section ``:env:``),
    then its configuration's [install], then [global]."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                            text=True, timeout=60).stdout
    urls = dict(re.findall(r"^(\S+)\.index-url='(.*)'$", listed, re.MULTILINE))
    return next((urls[s] for s in (":env:", "install", "global") if s in urls), DEFAULT_INDEX)


@functools.cache
def index_unreachable() -> str | None:
    """None when the package index answers within INDEX_TIMEOUT_S, else why not (one line).
    Any HTTP status is an answer; only no answer at all is a reason to skip."""
    url = pip_index_url().rstrip("/") + "/click/"
    try:
        urllib.request.urlopen(url, timeout=INDEX_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as e:
        why = " ".join(str(getattr(e, "reason", e)).split())
        return f"the package index does not answer within {INDEX_TIMEOUT_S} s: {url}: {why}"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """The demo clip and other caches go to a folder of the test run's own (subprocesses
    inherit it), never to the user's ~/.cache."""
    import tempfile
    from edge_seg.io.publish import CACHE_ENV
    if CACHE_ENV not in os.environ:
        config._edge_seg_cache = tempfile.TemporaryDirectory(prefix="edge-seg-test-cache-")
        os.environ[CACHE_ENV] = config._edge_seg_cache.name


def pytest_unconfigure(config):
    cache = getattr(config, "_edge_seg_cache", None)
    if cache is not None:
        os.environ.pop("EDGE_SEG_CACHE", None)
        cache.cleanup()


def pytest_runtest_setup(item):
    # before the fixtures: a module-scoped venv or resolution would otherwise reach the index first
    if item.get_closest_marker("network") and (why := index_unreachable()):
        pytest.skip(why)


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not available at {CAMVID} (../shared is absent)")
    return CAMVID


@pytest.fixture(scope="session")
def cityscapes_sample() -> Path:
    if not (CITYSCAPES_SAMPLE / "gtFine").is_dir():
        pytest.skip(f"Cityscapes sample not available at {CITYSCAPES_SAMPLE} (../shared is absent)")
    return CITYSCAPES_SAMPLE


@pytest.fixture(scope="session")
def synthetic_cityscapes(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Cityscapes layout (train cities + val)."""
    from edge_seg.train.synthetic_dataset import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synth-cs"), "cityscapes", n_train=12, n_val=4,
                         size=(256, 128), seed=3)


@pytest.fixture(scope="session")
def synthetic_camvid(tmp_path_factory) -> Path:
    from edge_seg.train.synthetic_dataset import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synth-cv"), "camvid", n_train=16, n_val=6,
                         size=(256, 128), seed=5)


# ---------------------------------------------------------------------------------------
# Runtime (edge-seg run): tiny .tflite test models and short test videos.
# ---------------------------------------------------------------------------------------
RUNTIME_MODEL_SIZE = (128, 64)  # (W, H) of the tiny test models


def _runtime_models_key() -> str:
    import hashlib
    from importlib.metadata import PackageNotFoundError, version
    h = hashlib.sha256()
    # this file too: it names the cached files (the ONNX model's sidecar once clashed)
    for path in (MODEL_BUILDER, REPO / "edge" / "backends" / "metadata.py", Path(__file__)):
        h.update(path.read_bytes())
    try:
        h.update(version("tensorflow").encode())
    except PackageNotFoundError:
        return ""
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_models(request) -> dict:
    """Tiny U-Nets (128x64) as .tflite + sidecar: {'fp32', 'int8', 'uint8'} of one net and
    'other' (fp32, different random weights). Built once with TensorFlow in a subprocess by
    tests/model_builder.py, cached in .pytest_cache across runs."""
    key = _runtime_models_key()
    if not key:
        pytest.skip("building the test models needs TensorFlow (the [train] extra)")
    root = Path(request.config.cache.mkdir("edge-seg-runtime-models")) / key
    wanted = {"fp32": root / "tiny-fp32.tflite", "int8": root / "tiny-int8.tflite",
              "uint8": root / "tiny-uint8.tflite", "other": root / "other-fp32.tflite"}
    if not all(p.is_file() and p.with_suffix(".json").is_file() for p in wanted.values()):
        size = "x".join(map(str, RUNTIME_MODEL_SIZE))
        for name, seed, kinds in (("tiny", 1, "fp32,int8,uint8"), ("other", 2, "fp32")):
            cmd = [sys.executable, str(MODEL_BUILDER), "--out", str(root),
                   "--size", size, "--widths", "8,16,24", "--seed", str(seed), "--kinds", kinds,
                   "--name", name]
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr[-3000:]
    return wanted


@pytest.fixture(scope="session")
def tiny_onnx(request, tiny_models) -> Path:
    """The same tiny net as tiny_models['fp32'], exported to ONNX by converters.onnx_export."""
    import importlib.util
    if not all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime")):
        pytest.skip("the ONNX path needs tf2onnx and onnxruntime")
    # not tiny-fp32.onnx: its sidecar would be tiny-fp32.json, the .tflite's
    path = tiny_models["fp32"].parent / "tiny-onnx.onnx"
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        code = (f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                "from model_builder import build_unet\n"
                "from edge_seg.converters.onnx_export import export_onnx\n"
                f"export_onnx(build_unet({RUNTIME_MODEL_SIZE!r}, (8, 16, 24), seed=1), {str(path)!r})\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
    return path


def camvid_with_drives(root, drives):
    """A SegNet-layout dataset whose frame names carry drive prefixes: {split: {drive: n}}."""
    import cv2
    import numpy as np

    for split, by_drive in drives.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for drive, n in by_drive.items():
            for i in range(n):
                cv2.imwrite(str(root / split / f"{drive}_{i:05d}.png"), np.zeros((8, 16, 3), np.uint8))
                cv2.imwrite(str(root / f"{split}annot" / f"{drive}_{i:05d}.png"), np.full((8, 16), 3, np.uint8))
    return root


def write_video(path: Path, frames, fps: float = 15.0) -> Path:
    """BGR frames -> a video file OpenCV can read back (mp4v for .mp4, MJPG for .avi)."""
    import cv2
    frames = list(frames)
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if Path(path).suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(frame)
    writer.release()
    return Path(path)


def street_frames(n: int, size=(320, 160), seed: int = 0):
    """Synthetic street-coloured frames without the scenes package (see the model builder)."""
    from model_builder import street_images
    return list(street_images(size, n, seed))


@pytest.fixture(scope="session")
def street_video(tmp_path_factory) -> Path:
    """24 frames, 320x160, .mp4."""
    return write_video(tmp_path_factory.mktemp("video") / "street.mp4", street_frames(24))


@pytest.fixture(scope="session")
def camvid_video(camvid_root, tmp_path_factory) -> Path:
    """The CamVid val frames (480x360) as one .mp4 (skips when ../shared is absent)."""
    import cv2
    files = sorted((camvid_root / "val").glob("*.png"))
    if not files:
        pytest.skip(f"no CamVid val frames in {camvid_root / 'val'}")
    return write_video(tmp_path_factory.mktemp("camvid") / "camvid-val.mp4",
                       (cv2.imread(str(f)) for f in files), fps=15.0)


# ---------------------------------------------------------------------------------------
# Device profiles (edge-seg tune): `edge-seg run` reads
# $XDG_CONFIG_HOME/edge-seg/profile.json by default, so no user's real profile may steer a
# test: every test gets its own empty config folder (inherited by subprocesses).
# ---------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def isolated_config_home(tmp_path_factory, monkeypatch) -> Path:
    path = tmp_path_factory.mktemp("xdg-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(path))
    return path

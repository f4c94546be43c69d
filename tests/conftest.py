"""Shared fixtures. Datasets in ../shared are optional: tests needing them skip with a
reason; synthetic scenes (edge/synthetic.py) cover the same code paths everywhere."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
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
    from train.synthetic_dataset import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synth-cs"), "cityscapes", n_train=12, n_val=4,
                         size=(256, 128), seed=3)


@pytest.fixture(scope="session")
def synthetic_camvid(tmp_path_factory) -> Path:
    from train.synthetic_dataset import write_dataset
    return write_dataset(tmp_path_factory.mktemp("synth-cv"), "camvid", n_train=16, n_val=6,
                         size=(256, 128), seed=5)

"""Which Keras TensorFlow loads: the one place that chooses it.

tensorflow-model-optimization quantises only Keras 2 models, so training, conversion and
evaluation all use tf_keras. TensorFlow picks its Keras from ``TF_USE_LEGACY_KERAS`` when it
is first imported, so :func:`use_legacy_keras` must run before the first ``import
tensorflow``: the ``train`` and ``converters`` packages call it as they load (every module
that imports TensorFlow lives in one of them), and scripts or tests that import TensorFlow
on their own call it first.
"""
from __future__ import annotations

import os


def use_legacy_keras(log_level: str = "2") -> None:
    """Select tf_keras and quiet TensorFlow's C++ log (``log_level``: 0 all .. 3 errors only).
    Values already in the environment win."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", log_level)

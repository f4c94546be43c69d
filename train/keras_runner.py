"""Running a tf_keras model (``.keras``, ``.h5``) as an ``edge_seg.runner.ModelRunner``.

``edge_seg.runner.open_model`` finds ``open_keras`` by the file's suffix through the
``edge_seg.runners`` entry points (pyproject.toml), so the runtime never imports TensorFlow.
Training scores its model in memory through the same class
(``edge_seg.train.evaluate.keras_predictor``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_seg.backends.litert import BackendInfo
from edge_seg.converters.keras_model import load_keras_model
from edge_seg.errors import UserError
from edge_seg.preprocess import DEFAULT_SIZE, normalize, resize_image, resize_mask
from edge_seg.runner import ModelRunner


class KerasRunner(ModelRunner):
    """A float Keras model: ``predict`` runs fixed-size batches through one compiled graph
    (the last batch padded, so it is traced once); ``infer`` is one frame, as timed."""

    kind = "keras"
    variant = "float (keras)"

    def __init__(self, model, path=None, batch: int = 8, input_size=None, threads: int | None = None):
        import tensorflow as tf

        self.model = model
        self.path = Path(path) if path is not None else Path(f"{model.name}.keras")
        self.batch = max(1, int(batch))
        self.input_size = _input_size(model, input_size)
        self.meta = {}
        self.backend = BackendInfo(f"tensorflow {tf.__version__}", "cpu", "cpu", threads)
        self._logits = tf.function(lambda x: model(x, training=False))

        @tf.function(reduce_retracing=True)
        def classes(x):
            return tf.cast(tf.argmax(model(x, training=False), axis=-1), tf.uint8)
        self._classes = classes

    def describe(self) -> str:
        return f"{self.path.name} (Keras float)"

    def _fit(self, frame_rgb: np.ndarray) -> np.ndarray:
        return frame_rgb if self.input_size is None else resize_image(frame_rgb, self.input_size)

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        return normalize(self._fit(frame_rgb))[np.newaxis]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self._logits(tensor).numpy()

    def decode(self, logits: np.ndarray) -> np.ndarray:
        mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
        return mask if self.input_size is None else resize_mask(mask, self.input_size)

    def predict(self, frames_rgb) -> np.ndarray:
        import tensorflow as tf

        out = []
        for start in range(0, len(frames_rgb), self.batch):
            x = np.stack([normalize(self._fit(f)) for f in frames_rgb[start:start + self.batch]])
            n = len(x)
            if n < self.batch:
                x = np.concatenate([x, np.zeros((self.batch - n,) + x.shape[1:], x.dtype)])
            masks = self._classes(tf.constant(x)).numpy()[:n]
            out += [m if self.input_size is None else resize_mask(m, self.input_size) for m in masks]
        return np.stack(out)


def _input_size(model, wanted):
    """The model's fixed (width, height), else ``wanted``; None: frames as they come."""
    shape = model.input_shape
    if isinstance(shape, list):
        raise UserError(f"model {model.name} has {len(shape)} inputs; expected one image input")
    h, w = shape[1:3]
    if h is not None and w is not None:
        return int(w), int(h)
    return tuple(wanted) if wanted is not None else None


def set_tf_threads(threads: int) -> None:
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised in this process
        pass


def open_keras(path, threads: int | None = None, delegate: str = "auto", batch: int = 8,
               input_size=None, log=None) -> KerasRunner:
    """The ``edge_seg.runners`` entry point for .keras and .h5. TensorFlow runs on the CPU
    here whatever ``delegate`` says; a model whose input size is open runs at ``input_size``,
    else at the runtime's default size."""
    if threads:
        set_tf_threads(threads)
    model = load_keras_model(path)
    return KerasRunner(model, path, batch, input_size or DEFAULT_SIZE, threads)


"""Training side of edge-seg: dataset readers, tf.data pipeline, models, training loop.

Modules here may import the runtime (edge_seg: labels, preprocessing, IoU); it never imports them.
"""
from .tf_env import use_legacy_keras

# Before any module here imports TensorFlow (see tf_env).
use_legacy_keras()

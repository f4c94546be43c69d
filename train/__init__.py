"""Training side of edge-seg: dataset readers, tf.data pipeline, models, training loop.

Modules here may import edge/ (labels, preprocessing, metrics); edge/ never imports them.
"""
import os

# tfmot only quantises Keras 2 (tf_keras) models: select it before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

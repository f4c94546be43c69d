"""TFLite export (fp32/fp16/int8/QAT), GPU-delegate check, accuracy comparison."""
from edge_seg.train.tf_env import use_legacy_keras

# Before any module here imports TensorFlow (see train/tf_env.py).
use_legacy_keras()

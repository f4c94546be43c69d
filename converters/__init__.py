"""TFLite export (fp32/fp16/int8/QAT), GPU-delegate check, accuracy comparison."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

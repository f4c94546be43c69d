"""edge-seg runtime: 8-category street-scene segmentation on small devices.

Imports nothing heavier than numpy and OpenCV; TensorFlow is never needed here.
"""
__version__ = "0.1.0"

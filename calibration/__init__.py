"""Calibration sets for int8 quantisation: code, and the committed manifests (*.json)."""

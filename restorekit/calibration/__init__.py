"""Calibration image sets, tile feeds, INT8 scales and caches (numpy, onnx, onnxruntime; no torch)."""

"""restorekit: image-restoration networks to verified ONNX, TensorRT engines and a tiled runtime."""

from __future__ import annotations

__version__ = "0.1.0"

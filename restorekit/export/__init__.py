"""PyTorch -> verified ONNX: trace, simplify, check, verify, manifest (and, later, precision)."""

from __future__ import annotations

from restorekit.export.pipeline import ExportOptions, ExportResult, export_model
from restorekit.export.trace import onnx_from_model

__all__ = ["ExportOptions", "ExportResult", "export_model", "onnx_from_model"]

"""PyTorch -> verified ONNX: trace, simplify, check, verify, precision, manifest; engine building.

Names are imported lazily so that torch-free modules of this package (engine building, graph
comparison) can be used on a device without PyTorch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ExportOptions": "restorekit.export.pipeline",
    "ExportResult": "restorekit.export.pipeline",
    "export_model": "restorekit.export.pipeline",
    "onnx_from_model": "restorekit.export.trace",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'restorekit.export' has no attribute {name!r}")

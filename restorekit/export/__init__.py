"""PyTorch -> verified ONNX: trace, simplify, check, verify, manifest (and, later, precision).

The names below are imported on first use (PEP 562), so the torch-free engine builder
(``restorekit.export.engine``) can be imported on a device without PyTorch: importing a submodule
runs this file first, and an eager import of the pipeline here would pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ExportOptions": "restorekit.export.pipeline",
    "ExportResult": "restorekit.export.pipeline",
    "export_model": "restorekit.export.pipeline",
    "onnx_from_model": "restorekit.export.trace",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

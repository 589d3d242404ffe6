"""Skip ``gpu`` / ``trt`` tests where no CUDA device or TensorRT is present."""

from __future__ import annotations

import importlib.util

import pytest


def _has_trt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def _has_gpu() -> bool:
    try:
        from restorekit.runtime.cuda_memory import open_device_memory

        open_device_memory().close()
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    trt_ok = _has_trt()
    gpu_ok = None
    for item in items:
        if "trt" in item.keywords and not trt_ok:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not installed"))
        if "gpu" in item.keywords:
            gpu_ok = _has_gpu() if gpu_ok is None else gpu_ok
            if not gpu_ok:
                item.add_marker(pytest.mark.skip(reason="no CUDA device"))

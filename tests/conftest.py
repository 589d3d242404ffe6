"""Markers: ``gpu`` and ``trt`` tests are skipped where CUDA or TensorRT is absent. Modules that
need PyTorch skip themselves (``pytest.importorskip``), so a runtime-only install runs the rest."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _has_cuda() -> bool:
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return os.path.exists("/dev/nvidia0")


HAS_CUDA = _has_cuda()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def pytest_configure(config):
    if importlib.util.find_spec("torch") is not None:
        # Tracing our models warns about shape values frozen into the trace, on purpose.
        config.addinivalue_line("filterwarnings", "ignore::torch.jit.TracerWarning")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="no CUDA device here")
    skip_trt = pytest.mark.skip(reason="TensorRT is not installed here")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "trt" in item.keywords and not HAS_TRT:
            item.add_marker(skip_trt)

"""ONNX Runtime backend: provider options, lifecycle, validation, and artifact loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from restorekit.errors import InputError, ManifestError
from restorekit.runtime.artifact import backend_from_artifact, default_backend
from restorekit.runtime.backend import BackendStateError
from restorekit.runtime.ort_backend import OrtBackend, OrtOptions, ProviderError, ort_providers
from restorekit.runtime.restore import Restorer
from tests.runtime import tinynet


def test_provider_lists():
    assert ort_providers(OrtOptions()) == [("CPUExecutionProvider", {})]
    assert [p for p, _ in ort_providers(OrtOptions(provider="cuda", device_id=1))] == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    options = OrtOptions(
        provider="tensorrt",
        trt_fp16=True,
        trt_int8=True,
        trt_int8_calibration_table="calib.cache",
        trt_engine_cache=Path("/tmp/engines"),
        trt_timing_cache=Path("/tmp/timing"),
        trt_workspace=1 << 30,
    )
    name, trt = ort_providers(options)[0]
    assert name == "TensorrtExecutionProvider"
    # the option names ONNX Runtime's TensorRT provider documents
    assert trt == {
        "device_id": 0,
        "trt_fp16_enable": True,
        "trt_int8_enable": True,
        "trt_int8_calibration_table_name": "calib.cache",
        "trt_int8_use_native_calibration_table": False,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "/tmp/engines",
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": "/tmp/timing",
        "trt_max_workspace_size": 1 << 30,
    }
    assert [p for p, _ in ort_providers(options)[1:]] == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_bad_options_are_user_errors():
    with pytest.raises(ProviderError, match="choose one of cpu, cuda, tensorrt"):
        OrtOptions(provider="rocm")
    with pytest.raises(ProviderError, match="graph optimisation"):
        OrtOptions(graph_optimization="max")
    with pytest.raises(ProviderError, match="threads"):
        OrtOptions(threads=0)


def test_lifecycle_and_validation(tmp_path):
    path, _, manifest = tinynet.export_net(tmp_path, batch=2)
    backend = OrtBackend(path, OrtOptions(threads=1, graph_optimization="basic"))
    assert backend._session is None  # nothing happens at construction
    with pytest.raises(BackendStateError, match="inside `with backend:`"):
        backend.infer(np.zeros((2, 3, 32, 48), np.float32))
    with pytest.raises(BackendStateError, match="inside `with backend:`"):
        Restorer(backend, manifest)  # reads the engine's input, which exists only when open
    with backend:
        assert backend.providers == ["CPUExecutionProvider"]
        assert backend.input_spec.shape == (2, 3, 32, 48)
        assert backend.input_spec.dtype == np.float32
        out = backend.infer(np.zeros((2, 3, 32, 48), np.float32))
        assert out.shape == (2, 3, 32, 48) and out.dtype == np.float32
        with pytest.raises(InputError, match="expected 4 dimensions"):
            backend.infer(np.zeros((3, 32, 48), np.float32))
    assert not backend.is_open and backend._session is None


def test_gpu_provider_without_gpu_is_refused(tmp_path):
    """Where ONNX Runtime would silently fall back to CPU, the backend says so instead."""
    ort = pytest.importorskip("onnxruntime")
    path, _, _ = tinynet.export_net(tmp_path, batch=1)
    backend = OrtBackend(path, OrtOptions(provider="cuda"))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            with backend:
                if "CUDAExecutionProvider" in backend.providers:
                    pytest.skip("a working CUDA provider is present")
        except ProviderError as exc:
            assert "--provider cpu" in str(exc)
    else:
        with pytest.raises(ProviderError, match="--provider cpu"), backend:
            pass


def test_backend_from_artifact(tmp_path):
    path, _, manifest = tinynet.export_net(tmp_path)
    backend, m = backend_from_artifact(path)
    assert isinstance(backend, OrtBackend) and m == manifest
    assert default_backend("x.engine") == "trt" and default_backend("x.onnx") == "ort"
    with pytest.raises(InputError, match="expected an .onnx or .engine"):
        default_backend("x.pt")
    with pytest.raises(ManifestError, match="restore-build"):
        backend_from_artifact(path, "trt")
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"e")
    with pytest.raises(ManifestError, match="no manifest"):
        backend_from_artifact(engine)
    (tmp_path / "orphan.onnx").write_bytes(path.read_bytes())
    with pytest.raises(ManifestError, match="no manifest"):
        backend_from_artifact(tmp_path / "orphan.onnx")

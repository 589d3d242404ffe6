"""The device-memory layer: clear errors without CUDA, and a round trip on a real GPU."""

from __future__ import annotations

import types

import numpy as np
import pytest

from restorekit.errors import MissingDependencyError
from restorekit.tensorrt import cuda_memory


# -- device-memory layer without CUDA ----------------------------------------------------------------
def test_no_cuda_library_gives_install_hint(monkeypatch):
    monkeypatch.setattr(cuda_memory, "available_library", lambda: None)
    with pytest.raises(MissingDependencyError, match=r"restorekit\[tensorrt\]"):
        cuda_memory.open_device_memory()


def test_cuda_python_without_device_is_a_clear_error(monkeypatch):
    errors = types.SimpleNamespace(cudaSuccess=0, cudaErrorNoDevice=100)
    rt = types.SimpleNamespace(
        cudaError_t=errors, cudaGetDeviceCount=lambda: (errors.cudaErrorNoDevice, 0)
    )
    with pytest.raises(cuda_memory.CudaUnavailableError, match="no CUDA device"):
        cuda_memory.CudaPythonMemory(0, rt=rt)


def test_pycuda_without_device_is_a_clear_error():
    def init():
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    drv = types.SimpleNamespace(init=init)
    with pytest.raises(cuda_memory.CudaUnavailableError, match="no CUDA-capable device"):
        cuda_memory.PyCudaMemory(0, drv=drv)


def test_real_cuda_library_here_reports_no_device():
    """On this machine (no GPU) whatever is installed must fail clearly, never crash."""
    with pytest.raises((MissingDependencyError, cuda_memory.CudaUnavailableError)):
        cuda_memory.open_device_memory()


@pytest.mark.gpu
def test_device_memory_round_trip_on_a_real_gpu():
    mem = cuda_memory.open_device_memory()
    try:
        assert mem.compute_capability().count(".") == 1 and mem.device_name()
        host_in = mem.pinned((4, 5), np.float32)
        host_out = mem.pinned((4, 5), np.float32)
        host_in[...] = np.arange(20, dtype=np.float32).reshape(4, 5)
        ptr = mem.malloc(host_in.nbytes)
        stream, event = mem.create_stream(), mem.create_event()
        mem.copy_to_device(ptr, host_in, stream)
        mem.copy_to_host(host_out, ptr, stream)
        mem.record_event(event, stream)
        mem.wait_event(event)
        np.testing.assert_array_equal(host_out, host_in)
        mem.free(ptr)
        mem.free_pinned(host_in)
        mem.free_pinned(host_out)
        mem.destroy_event(event)
        mem.destroy_stream(stream)
    finally:
        mem.close()

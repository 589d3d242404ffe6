"""The small CUDA layer the TensorRT backend needs: device malloc/free, pinned host buffers, async
copies and one stream, with a cuda-python implementation (NVIDIA's samples use
``cuda.bindings.runtime``) and a PyCUDA one (what many JetPack images carry).

Nothing here runs at import: :func:`open_device_memory` picks the first installed library
(cuda-python preferred) and checks that a CUDA device exists, raising a clear error otherwise.
Device pointers are plain ``int`` addresses, which ``context.set_tensor_address`` takes.
"""

from __future__ import annotations

import abc
import ctypes
import importlib
from typing import Any

import numpy as np

from restorekit.errors import MissingDependencyError, RestoreKitError

LIBRARIES = ("cuda-python", "pycuda")


class CudaUnavailableError(RestoreKitError):
    """No usable CUDA device (no GPU, no driver, or a driver too old for the CUDA runtime)."""


class CudaCallError(RestoreKitError):
    """A CUDA call failed; the message names the call and CUDA's error."""


class DeviceMemory(abc.ABC):
    """Device memory, pinned host memory, async copies and streams on one CUDA device."""

    library: str = ""

    @abc.abstractmethod
    def device_name(self) -> str: ...

    @abc.abstractmethod
    def compute_capability(self) -> str:
        """``"8.7"`` for Orin, ``"8.9"`` for Ada."""

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int:
        """Allocate device memory; returns its address."""

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array (fast, truly asynchronous copies)."""

    @abc.abstractmethod
    def free_pinned(self, array: np.ndarray) -> None: ...

    @abc.abstractmethod
    def create_stream(self) -> Any: ...

    @abc.abstractmethod
    def destroy_stream(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` address ``execute_async_v3`` takes."""

    @abc.abstractmethod
    def synchronize(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None:
        """Enqueue a host-to-device copy of all of ``src`` (pinned, contiguous)."""

    @abc.abstractmethod
    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None:
        """Enqueue a device-to-host copy filling all of ``dst`` (pinned, contiguous)."""

    @abc.abstractmethod
    def create_event(self) -> Any: ...

    @abc.abstractmethod
    def record_event(self, event: Any, stream: Any) -> None:
        """Mark the point in ``stream`` that :meth:`wait_event` waits for."""

    @abc.abstractmethod
    def wait_event(self, event: Any) -> None:
        """Block the host until the work before the event's record has finished."""

    @abc.abstractmethod
    def destroy_event(self, event: Any) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release library state (contexts)."""


class CudaPythonMemory(DeviceMemory):
    """Implementation over ``cuda.bindings.runtime`` (cuda-python >= 12.6; older: ``cuda.cudart``)."""

    library = "cuda-python"

    def __init__(self, device: int = 0, rt: Any = None) -> None:
        self.rt = rt if rt is not None else _import_cudart()
        self.device = device
        err, count = self.rt.cudaGetDeviceCount()
        if not self._ok(err) or count < 1:
            raise CudaUnavailableError(
                f"no CUDA device available (cudaGetDeviceCount: {_name(err)}): the TensorRT "
                "backend needs an NVIDIA GPU and driver; use --backend ort elsewhere"
            )
        if device >= count:
            raise CudaUnavailableError(f"CUDA device {device} requested, {count} present")
        self._call("cudaSetDevice", device)
        self._props = self._call("cudaGetDeviceProperties", device)
        self._hosts: dict[int, int] = {}  # id(array) -> pinned address

    def _ok(self, err: Any) -> bool:
        return err == self.rt.cudaError_t.cudaSuccess

    def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self.rt, name)(*args)
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if not self._ok(err):
            raise CudaCallError(f"{name} failed: {_name(err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_name(self) -> str:
        name = self._props.name
        return name.decode(errors="replace").rstrip("\0") if isinstance(name, bytes) else str(name)

    def compute_capability(self) -> str:
        return f"{self._props.major}.{self._props.minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", max(nbytes, 1)))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = int(self._call("cudaMallocHost", nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(ptr)
        array = np.frombuffer(raw, dtype=np.uint8, count=nbytes)[
            : int(np.prod(shape)) * dtype.itemsize
        ]
        array = array.view(dtype).reshape(shape)
        self._hosts[id(array)] = ptr
        return array

    def free_pinned(self, array: np.ndarray) -> None:
        ptr = self._hosts.pop(id(array), None)
        if ptr is not None:
            self._call("cudaFreeHost", ptr)

    def create_stream(self) -> Any:
        return self._call("cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    def create_event(self) -> Any:
        return self._call("cudaEventCreate")

    def record_event(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def wait_event(self, event: Any) -> None:
        self._call("cudaEventSynchronize", event)

    def destroy_event(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)


class PyCudaMemory(DeviceMemory):
    """Implementation over PyCUDA's driver API (retains the device's primary context)."""

    library = "pycuda"

    def __init__(self, device: int = 0, drv: Any = None) -> None:
        self.drv = drv if drv is not None else importlib.import_module("pycuda.driver")
        try:
            self.drv.init()
            count = self.drv.Device.count()
        except Exception as exc:  # pycuda raises its own LogicError/RuntimeError
            raise CudaUnavailableError(
                f"no CUDA device available ({exc}): the TensorRT backend needs an NVIDIA GPU and "
                "driver; use --backend ort elsewhere"
            ) from exc
        if count < 1 or device >= count:
            raise CudaUnavailableError(f"CUDA device {device} requested, {count} present")
        self._dev = self.drv.Device(device)
        self._ctx = self._dev.retain_primary_context()
        self._ctx.push()
        self._allocs: dict[int, Any] = {}

    def device_name(self) -> str:
        return str(self._dev.name())

    def compute_capability(self) -> str:
        major, minor = self._dev.compute_capability()
        return f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(nbytes, 1))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def free_pinned(self, array: np.ndarray) -> None:
        base = getattr(array, "base", None)
        if base is not None and hasattr(base, "free"):
            base.free()

    def create_stream(self) -> Any:
        return self.drv.Stream()

    def destroy_stream(self, stream: Any) -> None:
        pass  # PyCUDA frees the stream with its Python object

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def copy_to_device(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dst, src, stream)

    def copy_to_host(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(dst, src, stream)

    def create_event(self) -> Any:
        return self.drv.Event()

    def record_event(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def wait_event(self, event: Any) -> None:
        event.synchronize()

    def destroy_event(self, event: Any) -> None:
        pass  # freed with the Python object

    def close(self) -> None:
        self._ctx.pop()


def _import_cudart() -> Any:
    # cuda-python moved the runtime bindings to cuda.bindings.runtime in 12.6; cuda.cudart is the
    # older spelling JetPack 6 images may still carry.
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("cuda.bindings.runtime")


def _name(err: Any) -> str:
    return getattr(err, "name", str(err))


def available_library() -> str | None:
    """The CUDA Python library that would be used (``cuda-python`` preferred), or ``None``."""
    for label, module in (
        ("cuda-python", "cuda.bindings.runtime"),
        ("cuda-python", "cuda.cudart"),
        ("pycuda", "pycuda.driver"),
    ):
        try:
            importlib.import_module(module)
            return label
        except ImportError:
            continue
    return None


def open_device_memory(device: int = 0, library: str | None = None) -> DeviceMemory:
    """The device-memory layer over whichever CUDA Python library is installed.

    Args:
        device: CUDA device index.
        library: ``cuda-python`` or ``pycuda`` to force one; ``None`` prefers cuda-python.

    Raises:
        MissingDependencyError: neither cuda-python nor PyCUDA is installed.
        CudaUnavailableError: no CUDA device or driver.
    """
    if library is not None and library not in LIBRARIES:
        raise RestoreKitError(f"unknown CUDA library {library!r}; use {' or '.join(LIBRARIES)}")
    chosen = library or available_library()
    if chosen is None:
        raise MissingDependencyError(
            "the TensorRT backend needs cuda-python (or PyCUDA) to manage GPU memory, and neither "
            "is installed. Install it with: pip install 'restorekit[tensorrt]' (on Jetson, "
            "PyCUDA from JetPack also works)"
        )
    try:
        if chosen == "cuda-python":
            return CudaPythonMemory(device)
        return PyCudaMemory(device)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{chosen} is not importable ({exc}); install it with: pip install 'restorekit[tensorrt]'"
        ) from exc

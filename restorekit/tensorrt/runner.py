"""TensorRT backend: runs a deserialised ``.engine`` (TensorRT 10.x, as on JetPack 6, and 11).

On ``__enter__`` it checks the engine's manifest against this TensorRT and GPU (and the ONNX hash
when the ONNX sits beside it), deserialises the engine, reads I/O names, dtypes and profile shapes
from the engine, allocates device buffers and pinned host buffers once (two slots, for the largest
batch), and creates one CUDA stream. Each batch is copied in, run with ``set_tensor_address`` +
``execute_async_v3`` and copied out on that stream; :meth:`infer_many` enqueues the next batch
before waiting for the current one, so the host prepares and the GPU copies and computes at the
same time. Buffer sizing lives in :mod:`restorekit.tensorrt.buffers` and the compatibility check
in :mod:`restorekit.tensorrt.compat`, both plain Python; device memory in
:mod:`restorekit.tensorrt.cuda_memory`.

It implements the runtime's :class:`~restorekit.runtime.backend.Backend` interface, so the tiler
drives it like the ONNX Runtime backend. Torch-free; ``tensorrt`` and the CUDA bindings are
imported when the backend is opened, never at import.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.errors import ManifestError, require
from restorekit.manifest import Manifest
from restorekit.runtime.backend import Backend, IOSpec
from restorekit.tensorrt.buffers import BufferPlan, EngineTensor, engine_tensors, plan_buffers
from restorekit.tensorrt.compat import check_engine_compat, rebuild_command
from restorekit.tensorrt.cuda_memory import DeviceMemory, open_device_memory
from restorekit.tensorrt.device import DeviceFacts

SLOTS = 2  # batches in flight: one computing while the next is copied in


class TrtBackend(Backend):
    """Runs a TensorRT engine built by ``restore-build``.

    Args:
        path: the ``.engine`` file.
        manifest: its manifest (``read_manifest(path)``).
        device: CUDA device index.
        batch: batch size to reserve buffers for on dynamic-batch engines (default: the
            manifest's ``batch.opt``).
        onnx_path: the source ONNX for the hash check (default: beside the engine, if present).
        memory: a device-memory layer (tests pass a fake); default opens cuda-python/PyCUDA.
        trt_module: the ``tensorrt`` module (tests pass a fake); default imports it.
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | Path,
        manifest: Manifest,
        *,
        device: int = 0,
        batch: int | None = None,
        onnx_path: Path | None = None,
        memory: DeviceMemory | None = None,
        trt_module: Any = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.manifest = manifest
        self.device = device
        self.batch = batch
        self.onnx_path = onnx_path
        self._memory_arg = memory
        self._trt_arg = trt_module
        self._reset()

    def _reset(self) -> None:
        self._mem: DeviceMemory | None = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._events: list[Any] = []
        self._dev: list[dict[str, int]] = []
        self._host: list[dict[str, np.ndarray]] = []
        self._in: IOSpec | None = None
        self._out: IOSpec | None = None
        self._tensors: list[EngineTensor] = []
        self.buffers: list[BufferPlan] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def _activate(self) -> None:
        trt = self._trt_arg or require("tensorrt", "tensorrt", "the TensorRT backend")
        if not self.path.is_file():
            raise ManifestError(f"engine not found: {self.path}")
        mem = self._memory_arg or open_device_memory(self.device)
        self._mem = mem
        try:
            device = DeviceFacts(mem.device_name(), mem.compute_capability())
            for warning in check_engine_compat(
                self.manifest, trt.__version__, device, self.path, self.onnx_path
            ):
                warnings.warn(warning, stacklevel=2)
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise ManifestError(
                    f"TensorRT {trt.__version__} could not deserialise {self.path.name} (see the "
                    f"TensorRT log above): run `{rebuild_command(self.manifest)}`"
                )
            self._engine = engine
            self._runtime = runtime
            self._tensors = engine_tensors(engine, trt)
            inputs = [t for t in self._tensors if t.is_input]
            outputs = [t for t in self._tensors if not t.is_input]
            if len(inputs) != 1 or not outputs:
                raise ManifestError(
                    f"{self.path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                    "restorekit runs single-image engines"
                )
            self._in = _io_spec(inputs[0])
            self._out = _io_spec(outputs[0])
            context = engine.create_execution_context()
            if context is None:
                raise ManifestError(
                    f"TensorRT could not create an execution context for {self.path.name} "
                    "(out of GPU memory?)"
                )
            self._context = context
            batch = self.batch
            if batch is None and inputs[0].shape[0] < 0:
                batch = self.manifest.batch.opt
            self.buffers = plan_buffers(self._tensors, batch, self._infer_output_shapes)
            if self._in.max_shape is not None:
                # The buffers hold the planned batch: larger batches are refused up front.
                planned = next(b for b in self.buffers if b.name == self._in.name).shape[0]
                self._in = IOSpec(
                    self._in.name,
                    self._in.shape,
                    self._in.dtype,
                    self._in.min_shape,
                    (planned, *self._in.max_shape[1:]),
                )
            for _ in range(SLOTS):
                self._dev.append({b.name: mem.malloc(b.nbytes) for b in self.buffers})
                self._host.append({b.name: mem.pinned(b.shape, b.dtype) for b in self.buffers})
                self._events.append(mem.create_event())
            self._stream = mem.create_stream()
        except BaseException:
            self._deactivate()
            raise

    def _infer_output_shapes(
        self, inputs: dict[str, tuple[int, ...]]
    ) -> dict[str, tuple[int, ...]]:
        for name, shape in inputs.items():
            self._context.set_input_shape(name, shape)
        return {
            t.name: tuple(int(d) for d in self._context.get_tensor_shape(t.name))
            for t in self._tensors
            if not t.is_input
        }

    def _deactivate(self) -> None:
        mem = self._mem
        if mem is not None:
            if self._stream is not None:
                mem.synchronize(self._stream)
            for slot in self._dev:
                for ptr in slot.values():
                    mem.free(ptr)
            for slot in self._host:
                for array in slot.values():
                    mem.free_pinned(array)
            for event in self._events:
                mem.destroy_event(event)
            if self._stream is not None:
                mem.destroy_stream(self._stream)
            if self._memory_arg is None:
                mem.close()
        self._reset()

    # -- inference -------------------------------------------------------------------------------
    def _enqueue(self, batch: np.ndarray, slot: int) -> tuple[int, ...]:
        """Copy in, run and copy out one batch on the stream; returns the output shape."""
        mem, ctx = self._mem, self._context
        assert mem is not None
        host, dev = self._host[slot], self._dev[slot]
        in_name, out_name = self.input_spec.name, self.output_spec.name
        # Buffers are sized for the largest shape; a smaller batch/tile uses their front part.
        staged = _front(host[in_name], batch.shape)
        staged[...] = batch
        ctx.set_input_shape(in_name, batch.shape)
        out_shape = tuple(int(d) for d in ctx.get_tensor_shape(out_name))
        mem.copy_to_device(dev[in_name], staged, self._stream)
        for b in self.buffers:
            ctx.set_tensor_address(b.name, dev[b.name])
        if not ctx.execute_async_v3(mem.stream_handle(self._stream)):
            raise ManifestError(f"TensorRT failed to run {self.path.name} (see its log above)")
        mem.copy_to_host(_front(host[out_name], out_shape), dev[out_name], self._stream)
        mem.record_event(self._events[slot], self._stream)
        return out_shape

    def _collect(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        assert self._mem is not None
        self._mem.wait_event(self._events[slot])
        return _front(self._host[slot][self.output_spec.name], shape).copy()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._collect(0, self._enqueue(batch, 0))

    def _infer_many(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        in_flight: deque[tuple[int, tuple[int, ...]]] = deque()
        for index, batch in enumerate(batches):
            slot = index % SLOTS
            in_flight.append((slot, self._enqueue(batch, slot)))
            # Pulling the next batch from the generator (tile gathering on the host) now overlaps
            # the copy and compute of this one; only then wait for the oldest.
            if len(in_flight) == SLOTS:
                yield self._collect(*in_flight.popleft())
        while in_flight:
            yield self._collect(*in_flight.popleft())


def _io_spec(t: EngineTensor) -> IOSpec:
    shape = tuple(None if d < 0 else d for d in t.shape)
    if t.profile is None:
        return IOSpec(t.name, shape, t.dtype)
    lo, _, hi = t.profile
    return IOSpec(t.name, shape, t.dtype, tuple(lo), tuple(hi))


def _front(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A contiguous view of the first ``prod(shape)`` elements of ``buffer`` with ``shape``."""
    count = int(np.prod(shape))
    if count > buffer.size:
        raise ManifestError(f"shape {shape} does not fit the buffer allocated for {buffer.shape}")
    return buffer.reshape(-1)[:count].reshape(shape)

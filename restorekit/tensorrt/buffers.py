"""An engine's I/O tensors and buffer sizes, in plain Python (CPU-tested).

The engine runner (:mod:`restorekit.tensorrt.runner`) reads the tensors from the engine and sizes
its device and pinned buffers here once, for the largest batch it will run. Whether an engine may
run here at all (TensorRT release, GPU, source ONNX) is decided by
:mod:`restorekit.tensorrt.compat`, shared with the engine builder.

Torch-free; takes the ``tensorrt`` module as an argument and never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from restorekit.errors import ManifestError


@dataclass(frozen=True)
class EngineTensor:
    """One I/O tensor as the engine declares it (-1 marks a dynamic dimension)."""

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None  # min/opt/max


def engine_tensors(engine: Any, trt: Any, profile: int = 0) -> list[EngineTensor]:
    """Read names, modes, dtypes, shapes and profile shapes from a deserialised engine.

    Dtypes always come from the engine (``get_tensor_dtype``), never from the manifest: a
    strongly typed engine may take FP16 I/O.

    Raises:
        ManifestError: a tensor has a type numpy cannot hold.
    """
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except TypeError as exc:
            raise ManifestError(f"engine tensor '{name}' has a type numpy cannot hold") from exc
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        prof = None
        if is_input and any(d < 0 for d in shape):
            lo, opt, hi = engine.get_tensor_profile_shape(name, profile)
            prof = (tuple(map(int, lo)), tuple(map(int, opt)), tuple(map(int, hi)))
        tensors.append(EngineTensor(name, is_input, dtype, shape, prof))
    return tensors


@dataclass(frozen=True)
class BufferPlan:
    """One device buffer, sized once for the largest batch the backend will run."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def plan_buffers(
    tensors: list[EngineTensor],
    batch: int | None,
    output_shape: Callable[[dict[str, tuple[int, ...]]], dict[str, tuple[int, ...]]],
) -> list[BufferPlan]:
    """Size every I/O buffer for the largest shape it will hold.

    Dynamic input dimensions take the profile's maximum, except the batch, which takes ``batch``
    (capped by the profile) so a dynamic-batch engine run at batch 4 does not reserve for 32.
    Output shapes come from ``output_shape`` (TensorRT's shape inference for those inputs).

    Raises:
        ManifestError: ``batch`` is outside the engine's profile, or a shape stays unresolved.
    """
    inputs: dict[str, tuple[int, ...]] = {}
    plans = []
    for t in tensors:
        if not t.is_input:
            continue
        shape = list(t.shape)
        if t.profile is not None:
            lo, _, hi = t.profile
            for d, size in enumerate(shape):
                if size < 0:
                    shape[d] = hi[d]
            if t.shape[0] < 0 and batch is not None:
                if not lo[0] <= batch <= hi[0]:
                    raise ManifestError(
                        f"batch {batch} is outside the engine's profile {lo[0]}..{hi[0]} for "
                        f"'{t.name}'; use --batch within it or rebuild the engine"
                    )
                shape[0] = batch
        elif batch is not None and shape[0] != batch:
            raise ManifestError(
                f"the engine runs batches of exactly {shape[0]} ('{t.name}'); use --batch {shape[0]}"
            )
        inputs[t.name] = tuple(shape)
        plans.append(BufferPlan(t.name, True, tuple(shape), t.dtype))
    outputs = output_shape(inputs)
    for t in tensors:
        if t.is_input:
            continue
        shape = tuple(outputs.get(t.name, t.shape))
        if any(d < 0 for d in shape):
            raise ManifestError(f"cannot resolve the shape of output '{t.name}' ({shape})")
        plans.append(BufferPlan(t.name, False, shape, t.dtype))
    return plans

"""Decisions around a TensorRT engine, in plain Python (CPU-tested): does it fit this TensorRT and
this GPU, was it built from the ONNX beside it, and how large are its I/O buffers.

TensorRT engines are tied to the TensorRT release and the GPU they were built on, unless built
version-compatible (same major, runtime at least as new) or hardware-compatible (any Ampere or
newer GPU). A mismatch gives the command that rebuilds the engine on this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from packaging.version import InvalidVersion, Version

from restorekit.errors import ManifestError
from restorekit.files import file_sha256
from restorekit.manifest import Manifest
from restorekit.naming import onnx_name

_AMPERE = (8, 0)


def _release(text: str) -> tuple[int, ...]:
    try:
        return Version(text).release
    except InvalidVersion as exc:
        raise ManifestError(f"unreadable TensorRT version {text!r} in the manifest") from exc


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError as exc:
        raise ManifestError(f"unreadable compute capability {text!r}") from exc


def _sm(cc: str) -> str:
    major, minor = _cc(cc)
    return f"sm_{major}{minor}"


def _short(version: str) -> str:
    return ".".join(str(p) for p in _release(version)[:2])


def source_onnx(engine_path: Path, manifest: Manifest) -> Path:
    """Where the ONNX the engine was built from would sit: beside the engine, under the name the
    engine record gives (else the exporter's naming)."""
    if manifest.engine is not None and manifest.engine.onnx_file:
        return engine_path.with_name(manifest.engine.onnx_file)
    precision = manifest.precision.precision
    return engine_path.with_name(onnx_name(manifest.model, precision, manifest.tile))


def rebuild_command(engine_path: Path, manifest: Manifest) -> str:
    return f"restore-build {source_onnx(engine_path, manifest).name}"


def check_engine_manifest(
    engine_path: Path,
    manifest: Manifest,
    trt_version: str,
    compute_capability: str,
    onnx_path: Path | None = None,
) -> None:
    """Refuse an engine that was built for another TensorRT, another GPU, or another ONNX.

    Args:
        engine_path: the ``.engine`` file (names the rebuild command).
        manifest: its manifest (must carry an engine record).
        trt_version: ``tensorrt.__version__`` here.
        compute_capability: this GPU's, e.g. ``"8.9"``.
        onnx_path: the source ONNX to compare hashes with; ``None`` looks beside the engine and
            skips the check when it is not there (a Jetson often gets only the engine).

    Raises:
        ManifestError: no engine record, or a mismatch; the message gives the rebuild command.
    """
    record = manifest.engine
    cmd = rebuild_command(engine_path, manifest)
    if record is None:
        raise ManifestError(
            f"{engine_path.name}: the manifest has no engine record (is it an ONNX manifest?); "
            f"run `{cmd}` to build an engine with its manifest"
        )
    built, here = _release(record.tensorrt_version), _release(trt_version)
    if record.version_compatible:
        version_ok = built[:1] == here[:1] and here >= built
    else:
        version_ok = built[:3] == here[:3]
    built_cc, here_cc = _cc(record.compute_capability), _cc(compute_capability)
    hardware_ok = here_cc >= _AMPERE if record.hardware_compatible else built_cc == here_cc
    if not (version_ok and hardware_ok):
        raise ManifestError(
            f"{engine_path.name} was built for {_sm(record.compute_capability)} / TensorRT "
            f"{_short(record.tensorrt_version)}, this GPU is {_sm(compute_capability)} / "
            f"{_short(trt_version)}: run `{cmd}`"
        )
    onnx = onnx_path or source_onnx(engine_path, manifest)
    if manifest.onnx_sha256 and onnx.is_file():
        actual = file_sha256(onnx)
        if actual != manifest.onnx_sha256:
            raise ManifestError(
                f"{engine_path.name} was built from another version of {onnx.name} (sha256 "
                f"{manifest.onnx_sha256[:12]}…, the file now has {actual[:12]}…): run `{cmd}`"
            )


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

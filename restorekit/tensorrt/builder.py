"""The only place that touches TensorRT to build: carry out a :class:`BuildPlan`.

No decisions are made here (they are in :mod:`restorekit.tensorrt.plan`); this module turns the
plan's names into TensorRT calls and reports what TensorRT said. Every attribute used exists in
the TensorRT 10.3 and 11.x Python APIs; version-specific ones are named by the plan only on the
versions that have them, and the progress monitor is also checked with ``hasattr``.
:func:`engine_from_onnx` ties it together: read and check the ONNX's manifest, plan, build, write
the engine, its manifest and the timing cache.

Progress display is not made here: callers pass any object with ``phase_start`` /
``step_complete`` / ``phase_finish`` and a ``cancelled`` attribute (the CLI's tqdm bars are
:class:`restorekit.cli.build.BuildProgress`).

Torch-free; ``tensorrt`` is imported lazily, and tests pass a fake module with the same names.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from restorekit.errors import MissingDependencyError
from restorekit.files import write_bytes_atomic
from restorekit.manifest import Manifest, write_manifest
from restorekit.tensorrt.device import DeviceFacts, query_device
from restorekit.tensorrt.plan import (
    BuildPlan,
    EngineBuildOptions,
    build_failure,
    load_onnx_manifest,
    parse_failure,
    plan_build,
)


class BuildMonitor(Protocol):
    """What :func:`engine_from_onnx` forwards TensorRT's build phases to (``trt.IProgressMonitor``
    calls). ``step_complete`` returning ``False`` asks TensorRT to stop; ``cancelled`` is set when
    Ctrl-C arrived inside a callback."""

    cancelled: bool

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None: ...

    def step_complete(self, phase_name: str, step: int) -> bool: ...

    def phase_finish(self, phase_name: str) -> None: ...


INSTALL_HINT = (
    "Install it with: pip install 'restorekit[tensorrt]' (desktop GPU), or on a Jetson use "
    "JetPack's TensorRT (sudo apt install python3-libnvinfer; in a venv, create it with "
    "--system-site-packages)."
)


def tensorrt_available() -> bool:
    """Whether ``import tensorrt`` can work here (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt() -> Any:
    """Import the ``tensorrt`` module.

    Raises:
        MissingDependencyError: TensorRT's Python package is not installed (desktop and Jetson
            instructions in the message).
    """
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise MissingDependencyError(
            f"building a TensorRT engine needs the Python package 'tensorrt', which is not "
            f"installed ({exc}). {INSTALL_HINT}"
        ) from exc


def tensorrt_version(trt: Any) -> str:
    """``trt.__version__`` as text."""
    return str(trt.__version__)


def network_flag_names(trt: Any) -> frozenset[str]:
    """Members of ``trt.NetworkDefinitionCreationFlag`` (pybind11 enums list ``__members__``)."""
    return frozenset(getattr(trt.NetworkDefinitionCreationFlag, "__members__", {}))


@dataclass
class TrtBuildOutcome:
    """What TensorRT produced: the serialized engine (``None`` on failure), the updated timing
    cache, the error/warning log lines, and the parser's errors if parsing failed."""

    engine: bytes | None
    timing_cache: bytes | None = None
    errors: list[str] = field(default_factory=list)
    parser_errors: list[str] | None = None
    log: list[str] = field(default_factory=list)


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity

    class CapturingLogger(trt.ILogger):
        """Keeps errors (for the failure message) and warnings; drops info/verbose chatter."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.lines: list[str] = []

        def log(self, sev: Any, msg: str) -> None:
            if sev in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(str(msg))
                self.lines.append(f"error: {msg}")
            elif sev == severity.WARNING:
                self.lines.append(f"warning: {msg}")

    return CapturingLogger()


def _make_monitor(trt: Any, progress: BuildMonitor) -> Any:
    class ForwardingMonitor(trt.IProgressMonitor):
        """Forwards TensorRT's build phases to a plain-Python progress object."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                return bool(progress.step_complete(phase_name, step))
            except KeyboardInterrupt:
                # TensorRT swallows exceptions raised in callbacks; Ctrl-C becomes a request to
                # stop the build, which the caller turns back into KeyboardInterrupt.
                progress.cancelled = True
                return False

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return ForwardingMonitor()


def _attach_timing_cache(config: Any, data: bytes, logger: Any) -> Any:
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, False):
                return cache
        except Exception:  # a corrupt file: TensorRT raises or returns nothing
            pass
        # A cache from another device/driver or a torn file: start afresh rather than fail.
        logger.lines.append("warning: the timing cache did not fit this device; starting a new one")
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def serialize_engine(
    trt: Any,
    plan: BuildPlan,
    onnx_bytes: bytes,
    timing_cache: bytes,
    progress: BuildMonitor | None = None,
) -> TrtBuildOutcome:
    """Parse the ONNX and build a serialized engine exactly as ``plan`` says.

    Args:
        trt: the ``tensorrt`` module (or a fake with the same names).
        plan: what to build (:func:`restorekit.tensorrt.plan.plan_build`).
        onnx_bytes: the ONNX file's content.
        timing_cache: serialized timing cache to start from (``b""``: a new one).
        progress: object with ``phase_start``/``step_complete``/``phase_finish``, or ``None``.
    """
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # The path lets the parser find external weight files next to the ONNX, if any.
    if not parser.parse(onnx_bytes, path=str(plan.onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        return TrtBuildOutcome(None, None, logger.errors, errors, logger.lines)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_compatibility:
        config.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, plan.hardware_compatibility
        )
    profile = builder.create_optimization_profile()
    p = plan.profile
    profile.set_shape(plan.input_name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)

    cache = _attach_timing_cache(config, timing_cache, logger)

    # TensorRT keeps raw pointers to the monitor, logger and timing cache: the locals here keep
    # the Python objects alive until the build has finished.
    monitor = None
    if progress is not None and plan.progress_monitor and hasattr(trt, "IProgressMonitor"):
        monitor = _make_monitor(trt, progress)
        config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        return TrtBuildOutcome(None, None, logger.errors, None, logger.lines)
    # The attached cache now holds this build's timings as well as the ones it started with.
    updated = config.get_timing_cache() or cache
    cache_bytes = bytes(updated.serialize())
    return TrtBuildOutcome(bytes(serialized), cache_bytes, logger.errors, None, logger.lines)


# --- the build ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineBuildResult:
    """A finished build: the files written, the plan carried out, how long it took and what
    TensorRT warned about."""

    engine_path: Path
    manifest_path: Path
    manifest: Manifest
    plan: BuildPlan
    seconds: float
    timing_cache_written: bool
    trt_warnings: tuple[str, ...] = ()


def engine_from_onnx(
    onnx_path: str | Path,
    options: EngineBuildOptions | None = None,
    *,
    trt: Any = None,
    device: DeviceFacts | None = None,
    progress: BuildMonitor | None = None,
) -> EngineBuildResult:
    """Build a TensorRT engine from a restorekit ONNX and write it with its manifest.

    Args:
        onnx_path: ONNX written by ``restore-export`` (its ``.onnx.json`` beside it).
        options: build options (``None``: defaults).
        trt: the ``tensorrt`` module (tests pass a fake); default: import it.
        device: the GPU (tests pass one); default:
            :func:`restorekit.tensorrt.device.query_device`.
        progress: receives TensorRT's build phases (TensorRT 10 and newer); ``None``: no
            progress. The caller owns it (and closes any bars it holds).

    Raises:
        MissingDependencyError: TensorRT (or a CUDA binding to describe the GPU) is not installed.
        ManifestError: the ONNX has no manifest or was modified after export.
        TileSizeError: impossible profile shapes.
        EngineBuildError: TensorRT rejected the graph or the build failed (out of memory says so).
        KeyboardInterrupt: Ctrl-C during the build (TensorRT was asked to stop; nothing written).
    """
    options = options or EngineBuildOptions()
    onnx_path = Path(onnx_path)
    manifest = load_onnx_manifest(onnx_path)
    if trt is None:
        trt = import_tensorrt()
    if device is None:
        device = query_device()
    plan = plan_build(
        onnx_path, manifest, tensorrt_version(trt), device, options, network_flag_names(trt)
    )
    cache = plan.timing_cache_path.read_bytes() if plan.timing_cache_path.is_file() else b""
    start = time.perf_counter()
    outcome = serialize_engine(trt, plan, onnx_path.read_bytes(), cache, progress)
    seconds = time.perf_counter() - start
    if progress is not None and progress.cancelled:
        raise KeyboardInterrupt
    if outcome.parser_errors is not None:
        raise parse_failure(onnx_path, outcome.parser_errors)
    if outcome.engine is None:
        raise build_failure(plan, outcome.errors, device)
    write_bytes_atomic(plan.engine_path, outcome.engine)
    manifest_path = write_manifest(plan.engine_path, plan.manifest)
    cache_written = False
    if outcome.timing_cache:
        # Written only after a successful build, atomically, so a crash never leaves a torn cache.
        write_bytes_atomic(plan.timing_cache_path, outcome.timing_cache)
        cache_written = True
    warnings = tuple(
        line.removeprefix("warning: ") for line in outcome.log if line.startswith("warning: ")
    )
    return EngineBuildResult(
        plan.engine_path, manifest_path, plan.manifest, plan, seconds, cache_written, warnings
    )

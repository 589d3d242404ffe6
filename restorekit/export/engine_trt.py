"""The only place the engine builder touches TensorRT: carry out a :class:`BuildPlan`.

No decisions are made here (they are in :mod:`restorekit.export.engine`); this module turns the
plan's names into TensorRT calls and reports what TensorRT said. Every attribute used exists in
the TensorRT 10.3 and 11.x Python APIs; version-specific ones are named by the plan only on the
versions that have them, and the progress monitor is also checked with ``hasattr``.

Torch-free; ``tensorrt`` is imported lazily, and tests pass a fake module with the same names.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from restorekit.errors import MissingDependencyError

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


def _make_monitor(trt: Any, progress: Any) -> Any:
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
    trt: Any, plan: Any, onnx_bytes: bytes, timing_cache: bytes, progress: Any = None
) -> TrtBuildOutcome:
    """Parse the ONNX and build a serialized engine exactly as ``plan`` says.

    Args:
        trt: the ``tensorrt`` module (or a fake with the same names).
        plan: a :class:`restorekit.export.engine.BuildPlan`.
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

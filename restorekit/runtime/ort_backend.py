"""ONNX Runtime: the one place sessions are made (:func:`ort_session`), and the backend over them,
the reference that runs everywhere (CPU, CUDA, TensorRT provider).

Export checks, calibration, the INT8 search and the runtime all open their sessions through
:func:`ort_session`, so provider fall-back checks, threads and optimisation levels are decided
once.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.errors import ManifestError, RestoreKitError, require
from restorekit.runtime.backend import Backend, IOSpec

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_ORDERS = ("default", "priority")

_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
}


class ProviderError(RestoreKitError):
    """The requested execution provider is not available or did not load."""


@dataclass(frozen=True)
class OrtOptions:
    """How to open an ONNX Runtime session. ``None`` fields take ONNX Runtime's defaults.

    Attributes:
        provider: ``cpu``, ``cuda`` or ``tensorrt``; GPU providers fall back to CPU for nodes they
            cannot run (ONNX Runtime's own rule), but the provider itself must load.
        device_id: CUDA device for the GPU providers.
        threads: intra-op threads (``None``: one per core).
        graph_optimization: ``disable``, ``basic``, ``extended`` or ``all``.
        execution_order: ``default`` or ``priority`` (nodes run in graph order; graphs that put
            reductions right after each measured tensor need it to free tensors early).
        quiet: log errors only (checks and calibration run many sessions).
        profile_prefix: write ONNX Runtime's JSON profile under this prefix (benchmarks).
        trt_fp16 / trt_int8: let the TensorRT provider pick FP16/INT8 kernels (legacy, weakly
            typed; restorekit's typed FP16/Q-DQ graphs do not need them).
        trt_engine_cache: folder where the TensorRT provider caches built engines.
        trt_timing_cache: folder for the TensorRT timing cache (speeds up rebuilds).
        trt_workspace: TensorRT builder workspace in bytes.
        trt_int8_calibration_table: legacy calibration cache file name (inside the engine cache
            folder) for weakly typed INT8.
    """

    provider: str = "cpu"
    device_id: int = 0
    threads: int | None = None
    graph_optimization: str | None = None
    execution_order: str | None = None
    quiet: bool = False
    profile_prefix: str | None = None
    trt_fp16: bool = False
    trt_int8: bool = False
    trt_engine_cache: Path | None = None
    trt_timing_cache: Path | None = None
    trt_workspace: int | None = None
    trt_int8_calibration_table: str | None = None

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ProviderError(
                f"unknown provider {self.provider!r}; choose one of {', '.join(PROVIDERS)}"
            )
        if self.graph_optimization is not None and self.graph_optimization not in GRAPH_OPT_LEVELS:
            raise ProviderError(
                f"unknown graph optimisation level {self.graph_optimization!r}; choose one of "
                f"{', '.join(GRAPH_OPT_LEVELS)}"
            )
        if self.execution_order is not None and self.execution_order not in EXECUTION_ORDERS:
            raise ProviderError(
                f"unknown execution order {self.execution_order!r}; choose one of "
                f"{', '.join(EXECUTION_ORDERS)}"
            )
        if self.threads is not None and self.threads < 1:
            raise ProviderError(f"threads must be >= 1, got {self.threads}")


def ort_providers(options: OrtOptions) -> list[tuple[str, dict[str, Any]]]:
    """The ``providers`` list for ``InferenceSession``: the chosen provider with its options, then
    the fallbacks ONNX Runtime uses for nodes the first one cannot run."""
    cuda = ("CUDAExecutionProvider", {"device_id": options.device_id})
    cpu = ("CPUExecutionProvider", {})
    if options.provider == "cpu":
        return [cpu]
    if options.provider == "cuda":
        return [cuda, cpu]
    trt: dict[str, Any] = {"device_id": options.device_id}
    if options.trt_fp16:
        trt["trt_fp16_enable"] = True
    if options.trt_int8:
        trt["trt_int8_enable"] = True
        if options.trt_int8_calibration_table:
            trt["trt_int8_calibration_table_name"] = options.trt_int8_calibration_table
            trt["trt_int8_use_native_calibration_table"] = False
    if options.trt_engine_cache is not None:
        trt["trt_engine_cache_enable"] = True
        trt["trt_engine_cache_path"] = str(options.trt_engine_cache)
    if options.trt_timing_cache is not None:
        trt["trt_timing_cache_enable"] = True
        trt["trt_timing_cache_path"] = str(options.trt_timing_cache)
    if options.trt_workspace is not None:
        trt["trt_max_workspace_size"] = int(options.trt_workspace)
    return [("TensorrtExecutionProvider", trt), cuda, cpu]


def ort_session(model: bytes | str | Path, options: OrtOptions | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` over a graph file or serialized graph, as ``options``
    say; the chosen provider must really load.

    Raises:
        MissingDependencyError: ONNX Runtime is not installed.
        ProviderError: the provider is not in this ONNX Runtime, or failed to load (ONNX Runtime
            would silently run on the CPU instead).
        ManifestError: ONNX Runtime cannot load the graph.
    """
    ort = require("onnxruntime", "ort", "ONNX Runtime")
    options = options or OrtOptions()
    wanted = PROVIDERS[options.provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(
            f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}); "
            "install onnxruntime-gpu with matching CUDA/TensorRT, or use --provider cpu"
        )
    so = ort.SessionOptions()
    if options.quiet:
        so.log_severity_level = 3
    if options.threads is not None:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    if options.graph_optimization is not None:
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[options.graph_optimization]
    if options.execution_order == "priority":
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if options.profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = options.profile_prefix
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=so, providers=ort_providers(options))
    except Exception as exc:  # ORT raises its own untyped errors for bad files
        what = "the graph" if isinstance(model, bytes) else str(model)
        raise ManifestError(f"ONNX Runtime cannot load {what}: {exc}") from exc
    if wanted not in session.get_providers():
        # ORT silently falls back to CPU when a GPU provider fails to initialise.
        raise ProviderError(
            f"{wanted} did not load (no GPU, or CUDA/TensorRT libraries missing); the session "
            f"would run on {', '.join(session.get_providers())}. Use --provider cpu or fix "
            "the GPU setup"
        )
    return session


class OrtBackend(Backend):
    """Runs an ``.onnx`` artifact with ONNX Runtime.

    Args:
        path: the ONNX file (single image input, the restored image as its first output).
        options: provider and session options.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, options: OrtOptions | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.options = options or OrtOptions()
        self._session: Any = None
        self._in: IOSpec | None = None
        self._out: IOSpec | None = None

    @property
    def providers(self) -> list[str]:
        """The providers the open session actually uses."""
        return list(self._session.get_providers()) if self._session is not None else []

    def _activate(self) -> None:
        if not self.path.is_file():
            raise ManifestError(f"ONNX file not found: {self.path}")
        session = ort_session(self.path, self.options)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ManifestError(
                f"{self.path.name} has {len(inputs)} inputs; restorekit runs single-image graphs"
            )
        self._in = _io_spec(inputs[0])
        self._out = _io_spec(outputs[0])
        self._session = session

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self.output_spec.name], {self.input_spec.name: batch})
        return out

    def _infer_many(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        # ONNX Runtime releases the GIL while it runs: one batch runs in a worker thread while
        # this thread blends the previous output and gathers the next tiles. One run at a time,
        # and a batch array is not touched again until its output is collected.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restorekit-ort") as worker:
            running: Future | None = None
            for batch in batches:
                submitted = worker.submit(self._infer, batch)
                if running is not None:
                    yield running.result()
                running = submitted
            if running is not None:
                yield running.result()


def _io_spec(arg: Any) -> IOSpec:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ManifestError(f"tensor '{arg.name}' has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return IOSpec(arg.name, shape, dtype)

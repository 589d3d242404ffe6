"""``--backend auto``: the fastest admitted backend and precision for an artifact on this CPU.

The candidates for an ``.onnx`` artifact: ONNX Runtime in the artifact's own precision (the
reference, verified against PyTorch at export), and OpenVINO in FP32, in BF16 where the CPU has
native bf16, and in INT8 where there is an INT8 it can run (a Q/DQ artifact with 7-bit weights, or
the OpenVINO INT8 model made once beside an FP32 artifact). Each OpenVINO candidate must first be
admitted (:mod:`restorekit.runtime.admission`: its output against ONNX Runtime FP32 on real
tiles); the admitted ones are timed on one real tile, in turns, and the fastest is chosen. The
choice and every figure are remembered beside the artifact (``<artifact>.cpu.json``), keyed by
CPU, library versions and the sha256 of the artifact (and of the OpenVINO INT8 model), so only the
first run on a machine pays for the timing. An ``.engine`` is TensorRT's; on a machine with an
NVIDIA GPU an ``.onnx`` runs on ONNX Runtime (no timing: the CPU backends are not candidates there).
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.errors import RestoreKitError
from restorekit.files import file_sha256
from restorekit.manifest import Manifest, read_manifest
from restorekit.runtime.admission import admission_tiles, load_record, save_record
from restorekit.runtime.artifact import backend_from_artifact, default_backend
from restorekit.runtime.backend import Backend
from restorekit.runtime.cpu_features import cpu_features
from restorekit.runtime.ort_backend import OrtOptions

TIMING_RUNS = 3


@dataclass(frozen=True)
class AutoChoice:
    """The backend and precision chosen, why, and the figures behind it.

    Attributes:
        backend: ``ort``, ``openvino`` or ``trt``.
        precision: ``fp32``, ``bf16`` or ``int8`` (``None``: the artifact's own).
        reason: one line for the user.
        timings_ms: median latency of one tile per admitted candidate (``backend/precision``).
        refused: candidates left out, with the reason.
        remembered: the choice came from the record beside the artifact (nothing was timed).
    """

    backend: str
    precision: str | None
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    remembered: bool = False


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU driver is present (the CPU backends are not the fast path then)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def candidates(artifact: Path, manifest: Manifest) -> tuple[list[str], dict[str, str]]:
    """``backend/precision`` names worth timing for ``artifact`` here, and those left out (why)."""
    own = manifest.precision.precision
    names, refused = [f"ort/{own}"], {}
    if own == "fp16":
        return names, {"openvino/*": "OpenVINO runs FP32 and INT8 ONNX, not FP16 graphs"}
    if importlib.util.find_spec("openvino") is None:
        refused["openvino/*"] = "OpenVINO is not installed (pip install 'restorekit[openvino]')"
        return names, refused
    from restorekit.runtime.openvino_backend import bf16_refusal, ov_int8_path

    if own == "int8":
        names.append("openvino/int8")
        return names, refused
    names.append("openvino/fp32")
    import openvino as ov

    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    reason = bf16_refusal(cpu_features(), capabilities)
    if reason is None:
        names.append("openvino/bf16")
    else:
        refused["openvino/bf16"] = f"this CPU has no native bf16 ({cpu_features().describe()})"
    if ov_int8_path(artifact).is_file():
        names.append("openvino/int8")
    else:
        refused["openvino/int8"] = (
            f"no OpenVINO INT8 model made yet ({ov_int8_path(artifact).name}; make it once with "
            "--backend openvino --precision int8)"
        )
    return names, refused


def _int8_sha(artifact: Path) -> str | None:
    from restorekit.runtime.openvino_backend import ov_int8_path

    xml = ov_int8_path(artifact)
    return file_sha256(xml.with_suffix(".bin")) if xml.with_suffix(".bin").is_file() else None


def open_candidate(
    artifact: Path, name: str, threads: int | None, batch: int | None
) -> tuple[Backend, Manifest]:
    """An unopened backend for a candidate name (``openvino/int8``...)."""
    backend, precision = name.split("/")
    if backend == "ort":
        return backend_from_artifact(artifact, "ort", OrtOptions(threads=threads), batch)
    from restorekit.runtime.openvino_backend import OpenVinoOptions

    options = OpenVinoOptions(precision=precision, threads=threads)
    return backend_from_artifact(artifact, "openvino", None, batch, options)


def choose_backend(
    artifact: str | Path, threads: int | None = None, batch: int | None = None
) -> AutoChoice:
    """The fastest admitted backend/precision for ``artifact`` on this machine (remembered).

    Raises:
        InputError: the artifact is missing.
        ManifestError: no readable manifest.
    """
    artifact = Path(artifact)
    if default_backend(artifact) == "trt":
        return AutoChoice("trt", None, "a TensorRT engine runs on TensorRT")
    manifest = read_manifest(artifact)
    if has_nvidia_gpu():
        return AutoChoice(
            "ort", None, "an NVIDIA GPU is present: ONNX Runtime (build an engine for TensorRT); "
            "--backend auto times CPU backends only on machines without one",
        )  # fmt: skip
    record = load_record(artifact)
    setting = {"threads": threads, "batch": batch, "int8_sha256": _int8_sha(artifact)}
    kept = record.get("auto")
    if kept and kept.get("setting") == setting:
        return AutoChoice(kept["backend"], kept["precision"], kept["reason"],
                          kept["timings_ms"], kept["refused"], remembered=True)  # fmt: skip
    names, refused = candidates(artifact, manifest)
    tile = admission_tiles(manifest, 1, pixels=1)[0]
    timings = _time_candidates(artifact, names, threads, batch, tile, refused)
    best = min(timings, key=timings.get)
    backend, precision = best.split("/")
    reference = timings.get(names[0])
    ratio = f", {timings[best] / reference:.2f}x {names[0]}" if reference else ""
    reason = (f"{best}: fastest admitted backend on {cpu_features().model} "
              f"({timings[best]:.1f} ms per batch{ratio}; timed: "
              + ", ".join(f"{n} {t:.1f} ms" for n, t in sorted(timings.items(), key=lambda x: x[1]))
              + ")")  # fmt: skip
    record = load_record(artifact)  # admissions made while timing are in the file now
    record["auto"] = {"setting": setting, "backend": backend, "precision": precision,
                      "reason": reason, "timings_ms": timings, "refused": refused}  # fmt: skip
    save_record(artifact, record)
    return AutoChoice(backend, precision, reason, timings, refused)


def _time_candidates(
    artifact: Path,
    names: list[str],
    threads: int | None,
    batch: int | None,
    tile: Any,
    refused: dict[str, str],
) -> dict[str, float]:
    """Median milliseconds per call of each admitted candidate, timed in turns (the same load
    on a shared machine falls on each); candidates refused on opening go to ``refused``."""
    import numpy as np

    with contextlib.ExitStack() as stack:
        opened: dict[str, Backend] = {}
        for name in names:
            backend, _ = open_candidate(artifact, name, threads, batch)
            try:
                opened[name] = stack.enter_context(backend)
            except RestoreKitError as exc:
                if name.startswith("ort/"):
                    raise  # the reference itself cannot run: nothing to choose from
                refused[name] = str(exc).split(". ")[0]
        inputs = {}
        for name, backend in opened.items():
            n = backend.input_spec.static_batch or 1
            inputs[name] = np.repeat(tile[None], n, axis=0).astype(backend.input_spec.dtype)
            backend.infer(inputs[name])  # warm-up: first runs allocate and pick kernels
        spent: dict[str, list[float]] = {name: [] for name in opened}
        for _ in range(TIMING_RUNS):
            for name, backend in opened.items():
                start = time.perf_counter()
                backend.infer(inputs[name])
                spent[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(t) * 1e3, 3) for name, t in spent.items()}

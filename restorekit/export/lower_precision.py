"""From a verified FP32 graph to its FP16 or INT8 form, with the plan that says what stayed higher.

Both paths are judged against the PyTorch FP32 outputs of the same real images the FP32 check used;
the caller verifies the result once more at batch 1 and batch N and decides pass/fail.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from restorekit.calibration.cache import CalibrationCache, cache_from_amax
from restorekit.calibration.feeds import CalibrationSet
from restorekit.calibration.qdq import (
    QdqResult,
    default_method,
    qdq_from_model,
    quantizable_nodes,
)
from restorekit.calibration.search import SearchResult, search_exclusions
from restorekit.errors import VerificationError
from restorekit.export.compare import SessionPool
from restorekit.export.fp16_plan import evaluator, plan_fp16
from restorekit.export.verify import ReferenceSet
from restorekit.manifest import CalibrationRecord, PrecisionPlan
from restorekit.onnx_graph import name_nodes


@dataclass
class LoweredGraph:
    """A reduced-precision graph and everything the manifest and report say about it."""

    precision: str
    model: onnx.ModelProto
    plan: PrecisionPlan
    calibration: CalibrationRecord | None = None
    cache: CalibrationCache | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the report and the export's summary


def fp16_from_fp32(
    fp32: onnx.ModelProto,
    calibration: CalibrationSet,
    refs: ReferenceSet,
    value_range: float,
    min_psnr: float,
    say: Callable[[str], None],
    sessions: SessionPool | None = None,
) -> LoweredGraph:
    """Mixed-precision FP16 graph; fragile and out-of-range nodes kept FP32 (see fp16_plan.py).

    ``sessions``: where the candidates' sessions and outputs stay for the final verification.
    """
    model = _named_copy(fp32)
    evaluate = evaluator(refs.inputs, refs.expected, value_range, sessions)
    plan, fp16 = plan_fp16(model, list(calibration.batches(1)), evaluate, min_psnr, say)
    if plan.overflow_risks:  # the plan keeps every out-of-range tensor FP32; this is its check
        raise VerificationError(
            f"FP16 plan left {len(plan.overflow_risks)} FP16 tensors whose measured range exceeds "
            f"65504 (e.g. {plan.overflow_risks[0]}); this is a bug, please report it"
        )
    return LoweredGraph(
        precision="fp16",
        model=fp16,
        plan=PrecisionPlan("fp16", tuple(plan.kept), dict(plan.kept)),
        calibration=CalibrationRecord(
            calibration.fingerprint, calibration.count, "ranges", calibration.source
        ),  # fmt: skip
        details={
            "released_to_fp16": plan.released,
            "release_trail": plan.trail,
            "calibration_skipped": list(calibration.skipped),
        },  # fmt: skip
    )


# Min-max ranges never clip: where the default method's clipping (entropy) costs more than the
# search can win back, they are the next try before the export gives up.
FALLBACK_METHOD = "minmax"


def int8_from_fp32(
    fp32: onnx.ModelProto,
    calibration: CalibrationSet,
    refs: ReferenceSet,
    value_range: float,
    min_psnr: float,
    method: str | None,
    max_fraction: float,
    tensorrt_version: str,
    say: Callable[[str], None],
    layout: str = "tensorrt",
    sessions: SessionPool | None = None,
) -> LoweredGraph:
    """Calibrated Q/DQ graph; the most sensitive layers are kept out of INT8 until ``min_psnr``.

    ``layout`` is ``tensorrt`` or ``ort-cpu`` (see :func:`qdq_from_model`); only the TensorRT
    layout has a TensorRT calibration cache. ``method`` ``None`` takes the layout's default and,
    if that misses ``min_psnr`` even after the search, min-max ranges (a named method is kept).
    ``sessions``: where the candidates' sessions and outputs stay for the final verification.
    """
    model = _named_copy(fp32)
    evaluate = evaluator(refs.inputs, refs.expected, value_range, sessions)
    methods = [method] if method else [default_method(layout)]
    if not method and methods[0] != FALLBACK_METHOD:
        methods.append(FALLBACK_METHOD)
    attempts: list[_Calibrated] = []
    for m in methods:
        if attempts:
            last = attempts[-1]
            say(f"{last.method} ranges reach {last.found.figures.psnr:.2f} dB with "
                f"{len(last.found.excluded)} layers kept float (target {min_psnr:g} dB); "
                f"trying {m} ranges, which never clip")  # fmt: skip
        attempts.append(_calibrate_and_search(model, calibration, refs.inputs, evaluate, min_psnr,
                                              m, max_fraction, layout, say))  # fmt: skip
        if attempts[-1].found.met:
            break
    # Every try missed: the closest one is returned, for the caller's report and error.
    chosen = attempts[-1] if attempts[-1].found.met else max(attempts, key=_score)
    found, qdq = chosen.found, chosen.qdq
    first = attempts[0]
    notes = [] if len(attempts) == 1 else [
        f"calibration: {first.method} ranges missed {min_psnr:g} dB ({first.found.figures.psnr:.2f} "
        f"dB with {len(first.found.excluded)} layers kept float); {chosen.method} ranges used"
    ]  # fmt: skip
    reasons = {
        n: f"INT8 adds noise at {found.sensitivity[n]:.1f} dB of its output's peak"
        for n in found.excluded
    }
    amax = {k: v for k, v in qdq.activation_amax.items() if _still_quantized(found.model, k)}
    return LoweredGraph(
        precision="int8",
        model=found.model,
        plan=PrecisionPlan("int8", tuple(found.excluded), reasons, layout=layout),
        calibration=CalibrationRecord(
            calibration.fingerprint, calibration.count, chosen.method, calibration.source
        ),  # fmt: skip
        cache=cache_from_amax(amax, tensorrt_version, chosen.method)
        if layout == "tensorrt"
        else None,
        details={
            "layout": layout,
            "calibration_method": chosen.method,
            "calibration_tries": [
                {"method": a.method, "target_met": a.found.met, "trail": a.found.trail}
                for a in attempts
            ],
            "quantized_layers": len(chosen.layers) - len(found.excluded),
            "layers": len(chosen.layers),
            "target_met": found.met,
            "exclusion_limit": found.limit,
            "search_trail": found.trail,
            "calibration_skipped": list(calibration.skipped),
        },
        notes=notes,
    )


@dataclass
class _Calibrated:
    """One calibration method's Q/DQ graph and the exclusion search run on it."""

    method: str
    qdq: QdqResult
    layers: list[str]
    found: SearchResult


def _calibrate_and_search(
    model: onnx.ModelProto,
    calibration: CalibrationSet,
    tiles: Any,
    evaluate: Callable[[onnx.ModelProto], Any],
    min_psnr: float,
    method: str,
    max_fraction: float,
    layout: str,
    say: Callable[[str], None],
) -> _Calibrated:
    say(f"calibrating ({method}, {calibration.count} tiles)")
    with tempfile.TemporaryDirectory(prefix="restorekit-ranges-") as tmp:
        # Only the CPU layout quantizes again (without the excluded nodes), reusing the ranges.
        ranges = Path(tmp) / "ranges.json" if layout == "ort-cpu" else None
        qdq = qdq_from_model(model, calibration, method, layout=layout, ranges_file=ranges)
        layers = quantizable_nodes(model, layout)

        def requantized(names):  # the CPU layout quantizes outputs too: quantize again without
            return qdq_from_model(model, calibration, method, names, layout, ranges).model

        found = search_exclusions(model, qdq.model, layers, tiles, evaluate, min_psnr,
                                  max_fraction, say, None if layout == "tensorrt" else requantized)  # fmt: skip
    return _Calibrated(method, qdq, list(layers), found)


def _score(attempt: _Calibrated) -> tuple[bool, float]:
    """Closer to the target: no NaN/Inf first, then PSNR."""
    figures = attempt.found.figures
    return figures.nonfinite == 0, figures.psnr


def _named_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    name_nodes(copy)
    return copy


def _still_quantized(model: onnx.ModelProto, tensor: str) -> bool:
    return any(n.op_type == "QuantizeLinear" and n.input[0] == tensor for n in model.graph.node)

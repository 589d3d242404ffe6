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
from restorekit.calibration.qdq import default_method, qdq_from_model, quantizable_nodes
from restorekit.calibration.search import search_exclusions
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
    layout has a TensorRT calibration cache. ``method`` ``None`` takes the layout's default.
    ``sessions``: where the candidates' sessions and outputs stay for the final verification.
    """
    method = method or default_method(layout)
    model = _named_copy(fp32)
    say(f"calibrating ({method}, {calibration.count} tiles)")
    with tempfile.TemporaryDirectory(prefix="restorekit-ranges-") as tmp:
        # Only the CPU layout quantizes again (without the excluded nodes), reusing the ranges.
        ranges = Path(tmp) / "ranges.json" if layout == "ort-cpu" else None
        qdq = qdq_from_model(model, calibration, method, layout=layout, ranges_file=ranges)
        layers = quantizable_nodes(model, layout)
        evaluate = evaluator(refs.inputs, refs.expected, value_range, sessions)

        def requantized(names):  # the CPU layout quantizes outputs too: quantize again without
            return qdq_from_model(model, calibration, method, names, layout, ranges).model

        found = search_exclusions(model, qdq.model, layers, refs.inputs, evaluate, min_psnr,
                                  max_fraction, say, None if layout == "tensorrt" else requantized)  # fmt: skip
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
            calibration.fingerprint, calibration.count, method, calibration.source
        ),  # fmt: skip
        cache=cache_from_amax(amax, tensorrt_version, method) if layout == "tensorrt" else None,
        details={
            "layout": layout,
            "quantized_layers": len(layers) - len(found.excluded),
            "layers": len(layers),
            "target_met": found.met,
            "exclusion_limit": found.limit,
            "search_trail": found.trail,
            "calibration_skipped": list(calibration.skipped),
        },
    )


def _named_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    name_nodes(copy)
    return copy


def _still_quantized(model: onnx.ModelProto, tensor: str) -> bool:
    return any(n.op_type == "QuantizeLinear" and n.input[0] == tensor for n in model.graph.node)

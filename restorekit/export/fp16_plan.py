"""FP16 in the graph: FP16 compute, FP32 inputs/outputs, fragile nodes kept FP32.

Which nodes stay FP32 is decided from measurements, not a fixed list alone:

1. **Range.** The FP32 graph runs on calibration tiles; a node whose output leaves the safe FP16
   range (``|x| > FP16_SAFE``: FP16's 65504 with 8x headroom for the next op) or is non-finite
   stays FP32.
2. **Fragile operators** (normalisations, reductions, softmax and its exponent, powers): kept FP32
   at first, then released to FP16 one operator type at a time, each release kept only if the
   output still meets the PSNR target against FP32 with margin and has no NaN/Inf.

The plan (kept nodes and the reason for each) goes into the manifest and the report
(docs/precision.md, "FP16"). Torch-free: the graph and ONNX Runtime are all it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from restorekit.calibration.ranges import TensorRange, activation_ranges
from restorekit.export.compare import SessionPool, score_graph
from restorekit.export.fp16_graph import convert_to_fp16
from restorekit.metrics import Agreement, rounded_db
from restorekit.onnx_graph import float_tensors, name_nodes

FP16_MAX = 65504.0
FP16_SAFE = FP16_MAX / 8
RELEASE_MARGIN_DB = 1.0

# Operators whose FP16 form is numerically fragile: sums over many elements, exponentials,
# squares and normalisations. They start in FP32 and are released only where measured safe.
FRAGILE_OPS = (
    "LayerNormalization", "Softmax", "Exp", "Pow", "Sqrt", "Reciprocal", "Log", "ReduceL2",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "GlobalAveragePool", "InstanceNormalization",
    "BatchNormalization", "Erf",
)  # fmt: skip


@dataclass
class Fp16Plan:
    """Nodes kept FP32 (by node name) with the reason for each, and the release trail."""

    kept: dict[str, str] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)  # fragile op types measured safe in FP16
    trail: list[dict] = field(default_factory=list)
    overflow_risks: list[str] = field(default_factory=list)  # must stay empty


def range_unsafe_nodes(model: onnx.ModelProto, ranges: dict[str, TensorRange]) -> dict[str, str]:
    """Nodes with an input or output beyond :data:`FP16_SAFE` or non-finite, with the figure.

    An input counts too: casting it to FP16 on the way in would already overflow.
    """
    unsafe: dict[str, str] = {}
    for node in model.graph.node:
        for out in list(node.output) + list(node.input):
            r = ranges.get(out)
            if r is None:
                continue
            if r.nonfinite:
                unsafe[node.name] = f"{r.nonfinite} non-finite values in FP32 already"
            elif r.max_abs > FP16_SAFE:
                unsafe[node.name] = (
                    f"max |x| {r.max_abs:.4g} > {FP16_SAFE:.0f} (FP16 max 65504 / 8)"
                )
    return unsafe


def fp16_overflow_risks(fp16: onnx.ModelProto, ranges: dict[str, TensorRange]) -> list[str]:
    """FP16-typed tensors of a converted graph whose measured FP32 range exceeds FP16's maximum.

    ONNX Runtime's CPU provider computes many FP16 operators in FP32 internally, so running the
    graph on a CPU does not show an overflow a GPU would hit; this check reads the types instead.
    """
    inferred = onnx.shape_inference.infer_shapes(fp16)
    half = {v.name for v in inferred.graph.value_info
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}  # fmt: skip
    source = {n.output[0]: n.input[0] for n in fp16.graph.node if n.op_type == "Cast"}

    def peak(name: str) -> float:
        seen = set()
        while name not in ranges and name in source and name not in seen:
            seen.add(name)
            name = source[name]
        r = ranges.get(name)
        return math.inf if r is not None and r.nonfinite else (r.max_abs if r else 0.0)

    return sorted(t for t in half if peak(t) > FP16_MAX)


def to_fp16(
    model: onnx.ModelProto,
    keep: Sequence[str],
    floats: dict[str, list[int | str]] | None = None,
) -> onnx.ModelProto:
    """FP16 copy of ``model`` with FP32 inputs/outputs and the ``keep`` nodes computing in FP32.

    ``floats``: ``float_tensors(model)`` if already known (it takes a shape inference).
    """
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_nodes(named)
    return convert_to_fp16(named, list(keep), floats)


def plan_fp16(
    model: onnx.ModelProto,
    calibration: Sequence[np.ndarray],
    evaluate: Callable[[onnx.ModelProto], Agreement],
    min_psnr: float,
    progress: Callable[[str], None] | None = None,
) -> tuple[Fp16Plan, onnx.ModelProto]:
    """Measure ranges, keep unsafe and fragile nodes FP32, release fragile types measured safe.

    ``evaluate`` runs a candidate graph and returns its agreement with the FP32 reference.
    Returns the plan and the final FP16 graph.
    """
    say = progress or (lambda _msg: None)
    name_nodes(model)
    ranges = activation_ranges(
        model, calibration, progress=lambda k, n: say(f"measuring activation ranges, tile {k}/{n}")
    )
    plan = Fp16Plan()
    floats = float_tensors(model)  # one shape inference for every trial's rewrite
    plan.kept.update(range_unsafe_nodes(model, ranges))
    fragile: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in FRAGILE_OPS and node.name not in plan.kept:
            fragile.setdefault(node.op_type, []).append(node.name)
    for op_type, names in fragile.items():
        for n in names:
            plan.kept[n] = f"{op_type}: fragile in FP16, not measured safe"
    accepted = None  # the last graph kept: the final one unless nothing was released
    order = sorted(fragile, key=lambda t: -len(fragile[t]))
    if len(order) > 1:
        # Every fragile type at once first: when that graph meets the bar there is nothing left
        # for the one-type trials to release, and one graph is scored instead of one per type
        # (five for GRL). When it misses, the one-type trials run and find which types are safe.
        say(f"trying {', '.join(order)} in FP16 together")
        everything = {n for names in fragile.values() for n in names}
        candidate = to_fp16(model, [n for n in plan.kept if n not in everything], floats)
        if _release_trial(plan, ", ".join(order), len(everything), evaluate(candidate), min_psnr):
            accepted = candidate
            plan.released.extend(order)
            for n in everything:
                del plan.kept[n]
            order = []
    for op_type in order:
        trial_keep = [n for n in plan.kept if n not in fragile[op_type]]
        say(f"trying {op_type} in FP16")
        candidate = to_fp16(model, trial_keep, floats)
        if _release_trial(plan, op_type, len(fragile[op_type]), evaluate(candidate), min_psnr):
            accepted = candidate
            plan.released.append(op_type)
            for n in fragile[op_type]:
                del plan.kept[n]
    # The rewrite depends only on which nodes are kept, so the last accepted trial is the final
    # graph (the same bytes: the export's session pool then finds its session and outputs).
    final = accepted if accepted is not None else to_fp16(model, list(plan.kept), floats)
    plan.overflow_risks = fp16_overflow_risks(final, ranges)
    return plan, final


def _release_trial(
    plan: Fp16Plan, release: str, nodes: int, fig: Agreement, min_psnr: float
) -> bool:
    """Record one release trial in ``plan.trail``; whether its graph is kept (target + margin)."""
    ok = fig.nonfinite == 0 and fig.psnr >= min_psnr + RELEASE_MARGIN_DB
    plan.trail.append({"release": release, "nodes": nodes, "psnr": rounded_db(fig.psnr),
                       "nonfinite": fig.nonfinite, "kept_in_fp16": ok})  # fmt: skip
    return ok


def evaluator(
    tiles: np.ndarray,
    reference: np.ndarray,
    value_range: float,
    sessions: SessionPool | None = None,
) -> Callable[[onnx.ModelProto], Agreement]:
    """A function scoring a candidate graph on ``tiles`` against ``reference`` outputs (worst case).

    With ``sessions``, each candidate's session and outputs stay in the pool, so verifying the
    chosen graph afterwards reuses them instead of loading and running it again.
    """
    if sessions is None:
        return lambda candidate: score_graph(
            candidate.SerializeToString(), tiles, reference, value_range
        )
    return lambda candidate: score_graph(sessions.session(candidate), tiles, reference, value_range)

"""Activation ranges of an ONNX graph, measured with ONNX Runtime on real tiles.

ONNX Runtime has no per-node hooks. Exposing every intermediate tensor as a graph output would hold
all activations of a tile at once (41 GiB for GRL-T at 256x256), so the statistics are computed
*inside* the graph instead: each measured tensor gets ``Abs -> ReduceMax`` and ``ReduceSum``
reductions whose scalar results are the outputs. One session, one run per batch, the memory of an
ordinary forward pass, and ONNX Runtime's optimisations stay on (they preserve what every output
computes). A sum that is not finite marks a tensor that holds NaN/Inf; only those few tensors are
then exposed whole, to count the bad values.

Operators that cannot make values larger (reshape, transpose, slice, concat, ReLU, clip, ...) and
those with a fixed output bound (softmax, sigmoid, erf, tanh) are not measured: their range is
derived from their inputs', an upper bound. That skips about half the tensors of GRL, among them
the attention probabilities, its largest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from restorekit.onnx_graph import after_producers, float_tensors
from restorekit.runtime.ort_backend import OrtOptions, ort_session

# |output| <= max |float input|: values moved, selected, or shrunk towards zero.
NOT_GROWING = {
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Slice",
    "Gather", "GatherElements", "GatherND", "Split", "Concat", "Tile", "DepthToSpace",
    "SpaceToDepth", "MaxPool", "Relu", "Clip", "LeakyRelu",
}  # fmt: skip
# |output| <= a constant whatever the (finite) input.
FIXED_BOUND = {"Softmax": 1.0, "Sigmoid": 1.0, "Tanh": 1.0, "Erf": 1.0, "HardSigmoid": 1.0}


@dataclass(frozen=True)
class TensorRange:
    """Statistics of one float tensor over the calibration tiles."""

    max_abs: float
    nonfinite: int


def activation_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Float32 node outputs of the main graph and their element count per sample (batch 1)."""
    produced = {o for n in model.graph.node for o in n.output}
    return {
        name: int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in dims]))
        for name, dims in float_tensors(model).items()
        if name in produced
    }


def chunk_by_budget(sizes: dict[str, int], batch: int, budget_bytes: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    used = 0
    for name, elems in sizes.items():
        nbytes = elems * 4 * batch
        if chunks[-1] and used + nbytes > budget_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += nbytes
    return chunks


def session_exposing(model: onnx.ModelProto, names: list[str], threads: int | None):
    """A session whose outputs are the named intermediate tensors, whole."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    for name in names:
        exposed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    # Keep every tensor as named: fusions would drop the ones we ask for.
    return graph_order_session(exposed, threads, optimize=False)


def measured_and_derived(
    model: onnx.ModelProto,
) -> tuple[list[str], dict[str, tuple[list[str], float | None]]]:
    """Float tensors to measure, and those whose range follows from their inputs (in graph order).

    A derived tensor maps to its sources and a fixed bound (``None``: the sources' largest range).
    A node's output is derived when every float input has a range: measured, derived earlier, or
    an initializer (graph inputs are not measured, so a node reading one is measured).
    """
    floats = activation_sizes(model)
    inits = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    inputs = {
        i.name for i in model.graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    known = set(inits)
    measured: list[str] = []
    derived: dict[str, tuple[list[str], float | None]] = {}
    for node in model.graph.node:
        outs = [o for o in node.output if o in floats]
        if not outs:
            continue
        sources = [i for i in node.input if i in floats or i in inits or i in inputs]
        derivable = node.op_type in NOT_GROWING or node.op_type in FIXED_BOUND
        if derivable and sources and all(s in known for s in sources):
            for o in outs:
                derived[o] = (sources, FIXED_BOUND.get(node.op_type))
        else:
            measured.extend(outs)
        known.update(outs)
    return measured, derived


# Per-tensor statistics the graph can compute: (reduction, of |x|?).
ABS_MAX_SUM = (("ReduceMax", True), ("ReduceSum", True))  # range and a non-finite probe
MIN_MAX = (("ReduceMin", False), ("ReduceMax", False))  # INT8 min-max calibration


def statistics_graph(
    model: onnx.ModelProto, names: list[str], stats: tuple = ABS_MAX_SUM
) -> onnx.ModelProto:
    """``model`` whose outputs are, per tensor in ``names``, one scalar per reduction in ``stats``.

    Outputs are ordered tensor by tensor. Each tensor's reductions sit right after the node
    producing it (graph inputs: first), so ONNX Runtime, run in priority-based (graph) order, frees
    the tensor as early as the original graph does.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.output[:]
    index = {name: i for i, name in enumerate(names)}

    def reductions(name: str) -> list[onnx.NodeProto]:
        i = index[name]
        made = []
        if any(absolute for _, absolute in stats):
            made.append(helper.make_node("Abs", [name], [f"__abs{i}"], name=f"__stat_abs{i}"))
        for k, (op, absolute) in enumerate(stats):
            source = f"__abs{i}" if absolute else name
            made.append(helper.make_node(op, [source], [f"__stat{i}_{k}"], name=f"__stat{i}_{k}",
                                         keepdims=0))  # fmt: skip
        return made

    nodes = after_producers([i.name for i in graph.input], model.graph.node, index, reductions)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.output.extend(helper.make_tensor_value_info(f"__stat{i}_{k}", TensorProto.FLOAT, [])
                        for i in range(len(names)) for k in range(len(stats)))  # fmt: skip
    return out


def _statistics_by_batch(
    model: onnx.ModelProto,
    names: list[str],
    stats: tuple,
    batches: Iterable[np.ndarray],
    threads: int | None,
) -> Iterator[list[tuple[float, ...]]]:
    """Per batch, per tensor in ``names``, its ``stats`` (:func:`statistics_graph`) as floats."""
    session = graph_order_session(statistics_graph(model, names, stats), threads, optimize=True)
    input_name = model.graph.input[0].name
    n = len(stats)
    for b in batches:
        values = [float(v) for v in session.run(None, {input_name: b})]
        yield [tuple(values[n * i : n * i + n]) for i in range(len(names))]


def tensor_min_max(
    model: onnx.ModelProto, batches: Iterable[np.ndarray], names: list[str] | None = None
) -> dict[str, tuple[float, float]]:
    """Smallest and largest value of each float tensor (default: node outputs and graph inputs)
    over ``batches``, computed inside the graph: one session, the memory of a forward pass."""
    if names is None:
        names = [i.name for i in model.graph.input
                 if i.type.tensor_type.elem_type == TensorProto.FLOAT] + list(activation_sizes(model))  # fmt: skip
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    for per_tensor in _statistics_by_batch(model, names, MIN_MAX, batches, None):
        for name, (low, high) in zip(names, per_tensor, strict=True):
            lo[name] = min(lo[name], low)
            hi[name] = max(hi[name], high)
    return {name: (lo[name], hi[name]) for name in names}


def activation_ranges(
    model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, TensorRange]:
    """Max |value| and non-finite count of every float node output over ``batches``.

    Derived tensors (:data:`NOT_GROWING`, :data:`FIXED_BOUND`) get an upper bound of their range and
    their inputs' non-finite count. ``progress(done, total)`` is called before the first batch and after each.
    """
    batch_list = list(batches)
    measured, derived = measured_and_derived(model)
    if progress:
        progress(0, len(batch_list))
    peak = dict.fromkeys(measured, 0.0)
    suspect: set[str] = set()
    statistics = _statistics_by_batch(model, measured, ABS_MAX_SUM, batch_list, threads)
    for k, per_tensor in enumerate(statistics):
        if progress:
            progress(k + 1, len(batch_list))
        for name, (mx, sm) in zip(measured, per_tensor, strict=True):
            if not (np.isfinite(mx) and np.isfinite(sm)):
                suspect.add(name)
            elif mx > peak[name]:
                peak[name] = mx
    ranges = {name: TensorRange(peak[name], 0) for name in measured}
    if suspect:
        ranges.update(_count_nonfinite(model, sorted(suspect), batch_list, threads))
    init_peak = {i.name: float(np.abs(numpy_helper.to_array(i)).max(initial=0.0))
                 for i in model.graph.initializer if i.name in {s for v, _ in derived.values()
                                                                for s in v}}  # fmt: skip
    for name, (sources, bound) in derived.items():  # in graph order: sources are settled first
        rs = [ranges.get(s, TensorRange(init_peak.get(s, 0.0), 0)) for s in sources]
        peak_abs = bound if bound is not None else max(r.max_abs for r in rs)
        ranges[name] = TensorRange(peak_abs, sum(r.nonfinite for r in rs))
    return ranges


def _count_nonfinite(
    model: onnx.ModelProto, names: list[str], batches: list[np.ndarray], threads: int | None
) -> dict[str, TensorRange]:
    """Exact max |finite value| and NaN/Inf count of a few tensors, exposed whole."""
    sizes = {k: v for k, v in activation_sizes(model).items() if k in set(names)}
    input_name = model.graph.input[0].name
    batch = max(b.shape[0] for b in batches)
    stats: dict[str, list[float]] = {}
    for chunk in chunk_by_budget(sizes, batch, 4 << 30):
        session = session_exposing(model, chunk, threads)
        for b in batches:
            for name, value in zip(chunk, session.run(chunk, {input_name: b}), strict=True):
                finite = np.isfinite(value)
                bad = int(value.size - np.count_nonzero(finite))
                top = float(np.abs(value[finite]).max()) if bad < value.size else 0.0
                prev = stats.setdefault(name, [0.0, 0])
                prev[0], prev[1] = max(prev[0], top), prev[1] + bad
    return {k: TensorRange(v[0], int(v[1])) for k, v in stats.items()}


def graph_order_session(model: onnx.ModelProto, threads: int | None, optimize: bool):
    """A quiet CPU session that runs nodes in graph order (full optimisation if asked).

    Graph order puts each reduction right after its tensor's producer. The default order may run
    all reductions last and hold every activation at once (10x the memory, measured).
    """
    options = OrtOptions(
        threads=threads,
        graph_optimization="all" if optimize else "disable",
        execution_order="priority",
        quiet=True,
    )
    return ort_session(model.SerializeToString(), options)

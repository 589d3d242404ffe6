"""Keep the most sensitive layers out of INT8 until the PSNR target holds.

Sensitivity is measured per layer on the calibrated Q/DQ graph: each quantized layer's output is
compared with the same tensor of the FP32 graph on real tiles, and the layer's *own* contribution is
the noise it adds between its input and its output, relative to each tensor's peak (errors made
upstream are not charged to it). Ranking by added noise, not by the PSNR a layer loses, matters:
a first convolution going from an exact input to 62 dB "loses" 138 dB but adds less noise than a
late layer going from 36 to 35 dB; ranked by dB lost, the search spent its first exclusions there.
Layers are then taken out of INT8 in that order — 1, 2, 4, 8, ... of them, up to a stated limit —
by graph surgery on the calibrated graph (no re-calibration; the TensorRT layout) or by quantizing
again without them, reusing the calibrated ranges (the CPU layout, whose outputs are quantized
too), until the output PSNR against FP32 meets the target. The whole procedure:
docs/precision.md, "The sensitivity search".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from restorekit.calibration.ranges import activation_sizes, graph_order_session
from restorekit.errors import ExportError
from restorekit.metrics import Agreement, rounded_db
from restorekit.onnx_graph import after_producers, prune


@dataclass
class SearchResult:
    model: onnx.ModelProto
    figures: Agreement
    excluded: list[str]
    met: bool
    limit: int
    trail: list[dict] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)


def comparison_graph(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, names: Sequence[str]
) -> onnx.ModelProto:
    """Both graphs on one input; per tensor in ``names``, the candidate's mean squared error
    against the reference and the reference's max |value|, as two scalar outputs.

    The nodes are interleaved: each statistic follows the candidate's producer, preceded by just
    the reference nodes its copy of the tensor needs (the two graphs may order their branches
    differently; placing the reference by index instead held 378 of its tensors at once for
    MPRNet-deblur). With ONNX Runtime's priority-based (graph) order both tensors are freed about
    as early as in one forward pass, so memory stays near that of the two forwards, not of every
    compared activation.
    """
    input_name = reference.graph.input[0].name
    ref = onnx.compose.add_prefix(reference, "ref/", rename_inputs=False, rename_outputs=True)
    ref_nodes = list(ref.graph.node)
    ref_producer = {o: k for k, n in enumerate(ref_nodes) for o in n.output}
    index = {name: i for i, name in enumerate(names)}
    emitted: set[int] = set()  # reference nodes placed so far

    def ancestry(tensor: str) -> list[onnx.NodeProto]:
        """The reference nodes ``tensor`` needs that are not placed yet, in a valid order."""
        made, stack = [], [(ref_producer[tensor], False)]
        while stack:
            k, inputs_done = stack.pop()
            if k in emitted:
                continue
            if inputs_done:
                emitted.add(k)
                made.append(ref_nodes[k])
                continue
            stack.append((k, True))
            stack += [(ref_producer[i], False) for i in ref_nodes[k].input if i in ref_producer]
        return made

    def statistics(name: str) -> list[onnx.NodeProto]:
        made = ancestry(f"ref/{name}") if name != input_name else []
        i, theirs = index[name], name if name == input_name else f"ref/{name}"
        make = helper.make_node
        return made + [
            make("Sub", [name, theirs], [f"__cmp{i}_d"], name=f"__cmp{i}_d"),
            make("Mul", [f"__cmp{i}_d", f"__cmp{i}_d"], [f"__cmp{i}_d2"], name=f"__cmp{i}_d2"),
            make(
                "ReduceMean", [f"__cmp{i}_d2"], [f"__cmp{i}_mse"], name=f"__cmp{i}_mse", keepdims=0
            ),
            make("Abs", [theirs], [f"__cmp{i}_a"], name=f"__cmp{i}_a"),
            make(
                "ReduceMax", [f"__cmp{i}_a"], [f"__cmp{i}_peak"], name=f"__cmp{i}_peak", keepdims=0
            ),
        ]

    out = onnx.ModelProto()
    out.CopyFrom(candidate)
    nodes = after_producers([i.name for i in out.graph.input],
                            _unique_dequantize(list(candidate.graph.node)), index, statistics)  # fmt: skip
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(ref.graph.initializer)
    have = {(o.domain, o.version) for o in out.opset_import}
    out.opset_import.extend(o for o in ref.opset_import if (o.domain, o.version) not in have)
    del out.graph.output[:]
    out.graph.output.extend(helper.make_tensor_value_info(f"__cmp{i}_{kind}", TensorProto.FLOAT, [])
                            for i in range(len(names)) for kind in ("mse", "peak"))  # fmt: skip
    prune(out)  # what follows the last compared tensor
    return out


def _unique_dequantize(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` with each DequantizeLinear feeding one node: copies go right before the others.

    ONNX Runtime makes these copies itself, even unoptimised, as new nodes that run last in
    graph order: a consumer waiting for one let the whole reference graph run ahead (7 GB of
    held tensors for MPRNet-deblur instead of 0.7 GB).
    """
    dq = {n.output[0]: n for n in nodes if n.op_type == "DequantizeLinear"}
    seen: set[str] = set()
    out = []
    for node in nodes:
        for k, name in enumerate(node.input):
            if name not in dq:
                continue
            if name in seen:  # a later consumer: give it its own copy
                copy = onnx.NodeProto()
                copy.CopyFrom(dq[name])
                copy.name = f"{dq[name].name}/for/{node.name}/{k}"
                copy.output[0] = f"{name}/for/{node.name}/{k}"
                out.append(copy)
                node = _with_input(node, k, copy.output[0])
            seen.add(name)
        out.append(node)
    return out


def _with_input(node: onnx.NodeProto, k: int, name: str) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[k] = name
    return copy


def tensor_psnr(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    names: Sequence[str],
    tiles: np.ndarray,
) -> dict[str, float]:
    """PSNR (dB) of each named tensor of ``candidate`` against the same tensor of ``reference``
    over ``tiles``, each tensor scaled by the reference's largest |value| (200 when equal).

    Computed inside one graph (:func:`comparison_graph`), a tile at a time: the memory of two
    forward passes, whatever the number of tensors.
    """
    # Unoptimised: fused nodes are new nodes that run last in graph order, so with fusions the
    # reference raced ahead and held its activations (19 GB for MPRNet-deblur, measured).
    session = graph_order_session(
        comparison_graph(reference, candidate, names), None, optimize=False
    )
    input_name = reference.graph.input[0].name
    mse = np.zeros(len(names))
    peak = np.zeros(len(names))
    for tile in tiles:
        values = session.run(None, {input_name: tile[None]})
        mse += np.asarray(values[0::2], dtype=np.float64)
        peak = np.maximum(peak, np.asarray(values[1::2], dtype=np.float64))
    mse /= len(tiles)  # every tile has the same shape: the mean of the means is the mean
    scores = {}
    for name, m, p in zip(names, mse, peak, strict=True):
        p = p or 1.0
        scores[name] = 200.0 if m == 0 else min(200.0, 10.0 * math.log10(p * p / m))
    return scores


def layer_sensitivity(
    fp32: onnx.ModelProto, qdq: onnx.ModelProto, layers: Sequence[str], tiles: np.ndarray
) -> dict[str, float]:
    """Noise each quantized layer adds (:func:`added_noise_db`; larger = worse)."""
    nodes = {n.name: n for n in fp32.graph.node}
    pairs = {
        name: (nodes[name].input[0], nodes[name].output[0]) for name in layers if name in nodes
    }
    graph_input = fp32.graph.input[0].name
    # A layer whose tensors the Q/DQ graph renamed (ONNX Runtime's CPU layout quantizes some
    # operators in place), or whose tensors are not float (a Concat of shape values: nothing
    # to quantize), cannot be compared: it is ranked last.
    in_qdq = {o for n in qdq.graph.node for o in n.output} | {graph_input}
    comparable = in_qdq & (set(activation_sizes(fp32)) | {graph_input})
    unknown = [name for name, pair in pairs.items() if not set(pair) <= comparable]
    pairs = {name: pair for name, pair in pairs.items() if name not in unknown}
    tensors = sorted({t for pair in pairs.values() for t in pair} - {graph_input})
    db = tensor_psnr(fp32, qdq, tensors, tiles)
    db[graph_input] = 200.0  # the same input reaches both graphs
    return {name: added_noise_db(db[i], db[o]) for name, (i, o) in pairs.items()} | dict.fromkeys(
        unknown, NO_NOISE_DB
    )


#: Sensitivity of a layer that adds no noise (or cannot be compared).
NO_NOISE_DB = -200.0


def added_noise_db(psnr_in: float, psnr_out: float) -> float:
    """The noise power a layer adds, in dB of its output's peak power (e.g. -40 dB).

    ``psnr_in`` and ``psnr_out``: its input's and output's PSNR against FP32, each relative to
    that tensor's peak. Relative noise powers add: output = input + added.
    """
    added = 10.0 ** (-psnr_out / 10.0) - 10.0 ** (-psnr_in / 10.0)
    return 10.0 * math.log10(added) if added > 0 else NO_NOISE_DB


def restore_float(
    qdq: onnx.ModelProto, fp32: onnx.ModelProto, names: Sequence[str]
) -> onnx.ModelProto:
    """Take ``names`` out of INT8: give them their FP32 inputs back and drop orphaned Q/DQ nodes.

    A weight the Q/DQ graph dequantizes under its original name (ONNX Runtime names a bias's
    DequantizeLinear output after the bias) is given back under a name of its own, so the result
    never defines a tensor twice.
    """
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    originals = {n.name: n for n in fp32.graph.node}
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in out.graph.initializer}
    produced = {o for n in out.graph.node for o in n.output}
    for node in out.graph.node:
        if node.name in names and node.name in originals:
            del node.input[:]
            for name in originals[node.name].input:
                if name in fp32_inits:
                    own = f"{name}/fp32" if name in produced else name
                    if own not in have:
                        init = onnx.TensorProto()
                        init.CopyFrom(fp32_inits[name])
                        init.name = own
                        out.graph.initializer.append(init)
                        have.add(own)
                    name = own
                node.input.append(name)
    prune(out)
    return out


def search_exclusions(
    fp32: onnx.ModelProto,
    qdq: onnx.ModelProto,
    layers: Sequence[str],
    tiles: np.ndarray,
    evaluate: Callable[[onnx.ModelProto], Agreement],
    min_psnr: float,
    max_fraction: float = 0.25,
    progress: Callable[[str], None] | None = None,
    without: Callable[[Sequence[str]], onnx.ModelProto] | None = None,
) -> SearchResult:
    """Evaluate ``qdq``; if it misses ``min_psnr``, exclude the most sensitive layers step by step.

    At most ``max_fraction`` of the quantized layers are excluded (the limit is in the result).
    ``without(names)`` makes the graph with ``names`` out of INT8; by default graph surgery on
    ``qdq`` (:func:`restore_float`), right for the TensorRT layout, where only the inputs of the
    layers are quantized.
    """
    say = progress or (lambda _msg: None)
    limit = max(1, int(len(layers) * max_fraction))
    figures = evaluate(qdq)
    result = SearchResult(qdq, figures, [], _meets(figures, min_psnr), limit)
    result.trail.append(
        {"excluded": 0, "psnr": rounded_db(figures.psnr), "nonfinite": figures.nonfinite}
    )
    if result.met:
        return result
    say("measuring per-layer sensitivity")
    result.sensitivity = layer_sensitivity(fp32, qdq, layers, tiles[:2])
    order = sorted(result.sensitivity, key=lambda n: -result.sensitivity[n])
    k = 1
    while True:
        k = min(k, limit)
        say(f"excluding the {k} most sensitive layers")
        candidate = without(order[:k]) if without else restore_float(qdq, fp32, order[:k])
        figures = _evaluate_candidate(evaluate, candidate, k)
        result.trail.append(
            {"excluded": k, "psnr": rounded_db(figures.psnr), "nonfinite": figures.nonfinite}
        )
        result.model, result.figures, result.excluded = candidate, figures, order[:k]
        result.met = _meets(figures, min_psnr)
        if result.met or k >= limit:
            return result
        k *= 2


def _evaluate_candidate(
    evaluate: Callable[[onnx.ModelProto], Agreement], candidate: onnx.ModelProto, kept: int
) -> Agreement:
    """Score a candidate; a graph ONNX Runtime refuses is restorekit's bug, said in one line."""
    try:
        return evaluate(candidate)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ExportError(
            f"the INT8 search built a graph ONNX Runtime cannot run ({kept} layers kept float): "
            f"{detail}. This is a bug in restorekit; please report it. Meanwhile: --fp16, or a "
            "lower --min-psnr so that no layer needs to be kept float."
        ) from exc


def _meets(figures: Agreement, min_psnr: float) -> bool:
    return figures.nonfinite == 0 and figures.psnr >= min_psnr

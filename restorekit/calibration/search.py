"""Keep the most sensitive layers out of INT8 until the PSNR target holds (DESIGN.md §4).

Sensitivity is measured per layer on the calibrated Q/DQ graph: each quantized layer's output is
compared with the same tensor of the FP32 graph on real tiles, and the layer's *own* contribution is
the PSNR it loses between its input and its output (errors made upstream are not charged to it).
Layers are then taken out of INT8 in that order — 1, 2, 4, 8, ... of them, up to a stated limit —
by graph surgery on the calibrated graph (no re-calibration), until the output PSNR against FP32
meets the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from restorekit.calibration.ranges import chunk_by_budget, session_exposing
from restorekit.metrics import Agreement, psnr
from restorekit.onnx_graph import prune


@dataclass
class SearchResult:
    model: onnx.ModelProto
    figures: Agreement
    excluded: list[str]
    met: bool
    limit: int
    trail: list[dict] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)


def _tensor_db(
    fp32: onnx.ModelProto, qdq: onnx.ModelProto, names: Sequence[str], tiles: np.ndarray
) -> dict[str, float]:
    """PSNR (dB) of each named tensor of ``qdq`` against the same tensor of ``fp32`` on ``tiles``.

    Tensors are exposed a chunk at a time and scored at once, so only one chunk of values from
    each graph is held (a few GB, not every activation of both graphs).
    """
    input_name = fp32.graph.input[0].name
    sizes = dict.fromkeys(names, int(np.prod(tiles.shape[1:])) * 64)  # rough per-tensor budget
    scores: dict[str, float] = {}
    for chunk in chunk_by_budget(sizes, tiles.shape[0], 1 << 30):
        ref = session_exposing(fp32, chunk, None).run(chunk, {input_name: tiles})
        got = session_exposing(qdq, chunk, None).run(chunk, {input_name: tiles})
        for name, r, g in zip(chunk, ref, got, strict=True):
            peak = float(np.abs(r).max()) or 1.0
            value = psnr(g / peak, r / peak)
            scores[name] = 200.0 if math.isinf(value) else value
    return scores


def layer_sensitivity(
    fp32: onnx.ModelProto, qdq: onnx.ModelProto, layers: Sequence[str], tiles: np.ndarray
) -> dict[str, float]:
    """dB each quantized layer loses between its activation input and its output (larger = worse)."""
    nodes = {n.name: n for n in fp32.graph.node}
    pairs = {
        name: (nodes[name].input[0], nodes[name].output[0]) for name in layers if name in nodes
    }
    graph_input = fp32.graph.input[0].name
    # A layer whose tensors the Q/DQ graph renamed (ONNX Runtime's CPU layout quantizes some
    # operators in place) cannot be compared: it is ranked last (sensitivity 0).
    in_qdq = {o for n in qdq.graph.node for o in n.output} | {graph_input}
    unknown = [name for name, pair in pairs.items() if not set(pair) <= in_qdq]
    pairs = {name: pair for name, pair in pairs.items() if name not in unknown}
    tensors = sorted({t for pair in pairs.values() for t in pair} - {graph_input})
    db = _tensor_db(fp32, qdq, tensors, tiles)
    db[graph_input] = 200.0  # the same input reaches both graphs
    return {name: db[i] - db[o] for name, (i, o) in pairs.items()} | dict.fromkeys(unknown, 0.0)


def restore_float(
    qdq: onnx.ModelProto, fp32: onnx.ModelProto, names: Sequence[str]
) -> onnx.ModelProto:
    """Take ``names`` out of INT8: give them their FP32 inputs back and drop orphaned Q/DQ nodes."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    originals = {n.name: n for n in fp32.graph.node}
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in out.graph.initializer}
    for node in out.graph.node:
        if node.name in names and node.name in originals:
            del node.input[:]
            node.input.extend(originals[node.name].input)
            for name in node.input:
                if name in fp32_inits and name not in have:
                    out.graph.initializer.append(fp32_inits[name])
                    have.add(name)
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
    result.trail.append({"excluded": 0, "psnr": _db(figures.psnr), "nonfinite": figures.nonfinite})
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
        figures = evaluate(candidate)
        result.trail.append(
            {"excluded": k, "psnr": _db(figures.psnr), "nonfinite": figures.nonfinite}
        )
        result.model, result.figures, result.excluded = candidate, figures, order[:k]
        result.met = _meets(figures, min_psnr)
        if result.met or k >= limit:
            return result
        k *= 2


def _meets(figures: Agreement, min_psnr: float) -> bool:
    return figures.nonfinite == 0 and figures.psnr >= min_psnr


def _db(value: float) -> float | str:
    return "inf" if math.isinf(value) else round(value, 3)

"""Graph simplification (onnxsim) and the structural check (``onnx.checker`` with full checks)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import onnx

from restorekit.errors import ExportError, require
from restorekit.onnx_graph import prune


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per operator type of the main graph, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


@dataclass(frozen=True)
class SimplifyResult:
    model: onnx.ModelProto
    nodes_before: int
    nodes_after: int
    error: str = ""  # why simplification was skipped, if it was

    @property
    def simplified(self) -> bool:
        return not self.error


def simplify_graph(model: onnx.ModelProto) -> SimplifyResult:
    """Constant-fold and clean the graph with onnxsim; returns the original on failure.

    onnxsim's own equivalence check runs the graph once on random input with ONNX Runtime.
    """
    onnxsim = require("onnxsim", "export", "Graph simplification")
    before = len(model.graph.node)
    # Folding a Mul into a Conv whose weight other Convs share (NLRN's recurrent states) would
    # give every state its own copy of the weight: skip that pass where weights are shared.
    skip = ["fuse_mul_into_conv"] if shared_conv_weights(model) else None
    try:
        simplified, ok = onnxsim.simplify(model, skipped_optimizers=skip)
    except Exception as exc:  # onnxsim raises RuntimeError/ValueError/protobuf errors
        return SimplifyResult(model, before, before, error=f"{type(exc).__name__}: {exc}"[:300])
    if not ok:
        return SimplifyResult(model, before, before, error="onnxsim's own output check failed")
    fold_load_time_zeros(simplified)
    return SimplifyResult(simplified, before, len(simplified.graph.node))


# Scope of the modules whose output is a zero that must survive simplification as computation
# and become a constant afterwards (restorekit.models.grl.positions.LoadTimeZero).
LOAD_TIME_ZERO_SCOPE = "load_time_zero"


def fold_load_time_zeros(model: onnx.ModelProto) -> int:
    """Replace the output of each ``load_time_zero`` module by a constant zero, in place.

    Such a zero is computed from the batch size while onnxsim runs, so that onnxsim keeps the
    small subgraph built from it (GRL's position indices and bias tables) instead of folding it
    into constants that would be hundreds of MB in the file. Once it is a constant, that subgraph
    depends on initializers only: ONNX Runtime folds it when a session is created and TensorRT
    when it builds the engine, so it costs nothing per run. Returns the number of zeros replaced.
    """
    scope = re.compile(rf"(^|/){LOAD_TIME_ZERO_SCOPE}(/|$)")
    inside = [n for n in model.graph.node if scope.search(n.name)]
    if not inside:
        return 0
    produced_inside = {o for n in inside for o in n.output}
    used_outside = {i for n in model.graph.node if not scope.search(n.name) for i in n.input}
    used_outside |= {o.name for o in model.graph.output}
    # The zero is integer shape arithmetic (Sub of two sizes): int64, as ONNX's Shape gives.
    zeros = sorted(produced_inside & used_outside)
    inits = {i.name for i in model.graph.initializer}
    for name in zeros:
        const = f"{name}_load_time_zero"
        if const not in inits:
            model.graph.initializer.append(
                onnx.helper.make_tensor(const, onnx.TensorProto.INT64, [], [0])
            )
        for node in model.graph.node:
            for k, i in enumerate(node.input):
                if i == name:
                    node.input[k] = const
    prune(model)
    return len(zeros)


def scalar_prelu_as_leaky_relu(model: onnx.ModelProto) -> int:
    """Rewrite PRelu nodes with a single slope as LeakyRelu (same function), in place.

    Returns the number rewritten. MPRNet and PANet use one-slope PReLUs. ONNX Runtime fuses
    LeakyRelu into the preceding convolution (FusedConv) and has an integer form of it
    (QLinearLeakyRelu) but neither for PRelu, which runs as a separate pass over every activation:
    20% of MPRNet's CPU time. Exact: the slope becomes the float32 ``alpha`` attribute unchanged.
    """
    inits = {i.name: i for i in model.graph.initializer}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            continue
        slope = onnx.numpy_helper.to_array(inits[node.input[1]])
        if slope.size != 1:
            continue
        node.op_type = "LeakyRelu"
        del node.input[1:]
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("alpha", float(slope.reshape(-1)[0])))
        rewritten += 1
    if rewritten:
        prune(model)  # the slopes
    return rewritten


def compact_graph(model: onnx.ModelProto) -> None:
    """Drop shape annotations and give intermediate tensors short names, in place.

    The exporter names every tensor after its module path (~70 bytes each, 3-4 per node) and
    onnxsim annotates every shape: for a small network with thousands of nodes (GRL-T) that is
    20% of the file on top of the weights. Node names (what precision plans refer to) are kept;
    graph inputs, outputs and initializers keep theirs.
    """
    del model.graph.value_info[:]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in model.graph.node for a in n.attribute):  # fmt: skip
        return  # subgraphs refer to outer names; leave them as they are
    keep = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    keep |= {i.name for i in model.graph.initializer}
    short: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in keep and name not in short:
                short[name] = f"t{len(short)}"
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = short.get(name, name)
        for k, name in enumerate(node.output):
            node.output[k] = short.get(name, name)


def shared_conv_weights(model: onnx.ModelProto) -> bool:
    """True when one initializer is the weight of several Conv nodes."""
    weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1]
    return len(weights) != len(set(weights))


def check_graph(model: onnx.ModelProto) -> None:
    """``onnx.checker.check_model(full_check=True)`` (includes strict shape inference).

    Raises:
        ExportError: the graph is structurally invalid.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX graph fails onnx.checker: {str(exc).splitlines()[0]}") from exc

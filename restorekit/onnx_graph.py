"""Small, torch-free edits of ONNX graphs shared by FP16 planning and INT8 calibration:
unique node names, topological order, removing orphaned nodes, nodes placed after producers,
inferred tensor shapes and the float tensors among them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (plans and block lists refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def topological_sort(model: onnx.ModelProto) -> None:
    """Order nodes so that every input is produced before it is used (stable where possible).

    Raises:
        ValueError: the graph has a cycle or uses a tensor nothing produces.
    """
    available = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    available.add("")  # an omitted optional input
    pending = list(model.graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            missing = sorted({i for n in rest for i in n.input if i not in available})[:3]
            raise ValueError(f"graph cannot be ordered: inputs never produced {missing}")
        pending = rest
    _replace_nodes(model, ordered)


def after_producers(
    graph_inputs: Iterable[str],
    nodes: Iterable[onnx.NodeProto],
    wanted: Iterable[str],
    extra: Callable[[str], list[onnx.NodeProto]],
) -> list[onnx.NodeProto]:
    """``nodes`` with ``extra(name)`` right after the producer of each ``wanted`` tensor (wanted
    graph inputs: first). Run in graph order, the extra nodes let each tensor go as early as the
    original graph does."""
    wanted = set(wanted)
    placed = [e for name in graph_inputs if name in wanted for e in extra(name)]
    for node in nodes:
        placed.append(node)
        placed += [e for name in node.output if name in wanted for e in extra(name)]
    return placed


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, list[int | str]]]:
    """Element type and shape of every tensor shape inference reaches (graph inputs, node
    outputs, graph outputs); an unknown dimension is its symbolic name ("" if unnamed)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    return {
        v.name: (
            v.type.tensor_type.elem_type,
            [
                d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in v.type.tensor_type.shape.dim
            ],  # fmt: skip
        )
        for v in [*inferred.input, *inferred.value_info, *inferred.output]
    }


def float_tensors(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every float32 tensor of the graph with its shape: graph inputs, node outputs, graph
    outputs (as shape inference reaches them), then float initializers."""
    floats = {
        name: dims
        for name, (elem_type, dims) in tensor_shapes(model).items()
        if elem_type == onnx.TensorProto.FLOAT
    }
    floats.update(
        (i.name, list(i.dims))
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT
    )
    return floats


def prune(model: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nobody uses, then initializers nobody uses."""
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        keep = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(keep) == len(model.graph.node):
            break
        _replace_nodes(model, keep)
    used = {i for n in model.graph.node for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def _replace_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> None:
    if len(nodes) == len(model.graph.node) and all(
        a is b for a, b in zip(nodes, model.graph.node, strict=True)
    ):
        return
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)

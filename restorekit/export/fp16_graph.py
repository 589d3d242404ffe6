"""Rewrite an FP32 ONNX graph to compute in FP16, except the nodes named in ``keep``.

Correct by construction, which general converters are not: a tensor is FP16 only when an FP16 node
produces it, every node kept in FP32 reads and writes FP32 (two kept nodes in a row never
round-trip through FP16), and Casts sit only where the two regions meet. Inputs and outputs of the
graph stay FP32. Inputs whose type the ONNX standard fixes to float32 (Resize ``scales``) are left
alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from restorekit.onnx_graph import float_tensors, topological_sort

# (op_type, input index) that must stay float32 whatever the node computes in.
FIXED_FP32_INPUTS = {("Resize", 2), ("Upsample", 1)}
# Operators that produce or consume no float data themselves, or must not change type.
NEVER_FP16 = {"Shape", "Size", "Cast", "Constant", "ConstantOfShape", "Range", "NonZero", "TopK"}


def convert_to_fp16(
    model: onnx.ModelProto,
    keep: set[str] | list[str],
    floats: Iterable[str] | None = None,
) -> onnx.ModelProto:
    """FP16 copy of ``model`` (nodes must be named); ``keep`` nodes compute in FP32.

    ``floats``: the float tensors of ``model`` (``float_tensors``) when the caller already has
    them; several rewrites of one graph then share one shape inference.
    """
    keep = set(keep)
    floats = set(float_tensors(model) if floats is None else floats)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    half_nodes = {n.name for n in graph.node if n.name not in keep and n.op_type not in NEVER_FP16}
    graph_outputs = {o.name for o in graph.output}

    # Which tensors end up FP16: float outputs of FP16 nodes (graph outputs get a cast back).
    half: set[str] = {
        o for n in graph.node if n.name in half_nodes for o in n.output if o in floats
    }
    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "__fp16" if to == TensorProto.FLOAT16 else "__fp32"
            casts[key] = name + suffix
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to,
                                              name=f"{name}{suffix}_cast"))  # fmt: skip
        return casts[key]

    def half_initializer(name: str) -> str:
        if name not in half_inits:
            half_inits[name] = name + "__fp16"
            value = numpy_helper.to_array(inits[name]).astype(np.float16)
            graph.initializer.append(numpy_helper.from_array(value, half_inits[name]))
        return half_inits[name]

    renamed_outputs: dict[str, str] = {}
    for node in graph.node:
        is_half = node.name in half_nodes
        for k, name in enumerate(node.input):
            if not name or name not in floats:
                continue
            wants_half = is_half and (node.op_type, k) not in FIXED_FP32_INPUTS
            if wants_half and name not in half:
                node.input[k] = (
                    half_initializer(name) if name in inits else cast(name, TensorProto.FLOAT16)
                )
            elif not wants_half and name in half:
                node.input[k] = cast(name, TensorProto.FLOAT)
        if is_half:
            _attributes_to_fp16(node)
            for k, name in enumerate(node.output):
                if name in graph_outputs and name in half:
                    node.output[k] = renamed_outputs[name] = name + "__fp16out"
        new_nodes.append(node)
    for name, inner in renamed_outputs.items():
        new_nodes.append(helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT,
                                          name=f"{name}__out_cast"))  # fmt: skip
    # consumers of a renamed graph output inside the graph read the FP16 tensor
    for node in new_nodes:
        for k, name in enumerate(node.input):
            if name in renamed_outputs and node.op_type != "Cast":
                node.input[k] = renamed_outputs[name]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    _drop_unused_initializers(out)
    topological_sort(out)
    return out


def _attributes_to_fp16(node: onnx.NodeProto) -> None:
    """Tensor-valued attributes (ConstantOfShape-like values) follow the node's precision."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            value = numpy_helper.to_array(attr.t).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)

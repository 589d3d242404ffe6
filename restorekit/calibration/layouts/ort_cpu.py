"""The ONNX Runtime CPU INT8 layout: integer from one convolution to the next.

uint8 asymmetric activations, and every operator with an integer kernel in ONNX Runtime's CPU
provider (:data:`INTEGER_OPS`) quantized, outputs included, so QLinearConv feeds QLinearLeakyRelu,
QLinearAdd... without float in between. What its integer kernels do worse stays float
(:func:`slow_in_integer`), and so do nodes whose results feed no integer computation
(:func:`float_islands`). TensorRT does not build this layout; it has no calibration cache.

Weights use 7 bits (``reduce_range``). On x86 CPUs without AVX-512 VNNI / AVX-VNNI, ONNX
Runtime's uint8 x int8 kernels multiply-add pairs of products into 16-bit sums (VPMADDUBSW),
which saturate for full 8-bit weights: the demo-width MPRNet test graph gave 16.5 dB against FP32
on an AVX2-only AMD EPYC (35.8 dB with the same graph unfused), while 7-bit weights cannot
saturate there (35.5 dB). A graph exported on a VNNI machine runs on whatever CPU it is copied
to, so every CPU layout graph uses 7-bit weights. The layout as a whole: docs/precision.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from restorekit.calibration.layouts import (
    WEIGHTED_OPS,
    Int8Layout,
    QuantizerSettings,
    weighted_nodes,
)
from restorekit.onnx_graph import tensor_shapes

# ONNX Runtime's CPU provider has integer kernels for these (QLinear*): a graph quantized on all of
# them runs integer from one convolution to the next instead of converting around each.
# Not Softmax: attention weights in uint8 (steps of 1/255 of the largest) wrecked the demo PANet
# (22.0 dB against FP32; 42.6 dB with Softmax in float) and gained no speed on NLRN or GRL. Its
# neighbours must stay float too (slow_in_integer), or ONNX Runtime fuses a QLinearSoftmax anyway.
# Not Resize: ONNX Runtime's integer Resize refused PANet's bicubic scales (PANet's pyramid is now
# exported as matrix products; MPRNet's bilinear upsampling is run on integers by ONNX Runtime's
# optimised graph anyway).
# fmt: off
INTEGER_OPS = WEIGHTED_OPS + (
    "LeakyRelu", "Relu", "Add", "Mul", "Sigmoid", "GlobalAveragePool", "AveragePool", "Concat",
    "MaxPool", "Transpose", "Reshape", "Split", "Squeeze", "Unsqueeze",
)
# fmt: on


def integer_nodes(model: onnx.ModelProto, exclude: Sequence[str] = ()) -> list[str]:
    """Weighted operators and every other operator with an integer kernel, except ``exclude``,
    the nodes whose integer kernel is slower (:func:`slow_in_integer`) and those whose results
    feed no integer computation (:func:`float_islands`; excluding a node can make more of them).
    """
    float_nodes = set(exclude) | set(slow_in_integer(model))
    weighted = set(weighted_nodes(model, float_nodes))
    names = [
        n.name
        for n in model.graph.node
        if n.name in weighted
        or (
            n.name not in float_nodes and n.op_type in INTEGER_OPS and n.op_type not in WEIGHTED_OPS
        )
    ]
    islands = set(float_islands(model, names))
    return [n for n in names if n not in islands]


def quantizer_settings(model: onnx.ModelProto, integer: list[str]) -> QuantizerSettings:
    # Outputs are quantized too, so the quantizer is told what stays float, not what to quantize.
    kept_float = sorted({n.name for n in model.graph.node} - set(integer))
    return QuantizerSettings(
        activation="uint8",
        op_types=INTEGER_OPS,
        nodes_to_exclude=kept_float,
        reduce_range=True,
        extra_options={
            "ActivationSymmetric": False,
            "CalibTensorRangeSymmetric": False,
            "DedicatedQDQPair": False,
            "OpTypesToExcludeOutputQuantization": [],
        },
    )


def finish(model: onnx.ModelProto) -> dict[str, float]:
    """Widen channel-attention factors (exact); no TensorRT calibration cache, so no amax."""
    widen_channel_broadcasts(model)
    return {}


def slow_in_integer(model: onnx.ModelProto) -> list[str]:
    """Nodes the ONNX Runtime CPU layout keeps in float because its integer kernels are slower.

    * MatMul of two activations (attention's ``q @ k^T`` and ``p @ v``): quantized, they also
      put a Q/DQ pair around the Softmax between them, which ONNX Runtime then fuses into a
      QLinearSoftmax about four times slower than the float Softmax (demo GRL);
    * grouped convolutions (PANet's patch extraction and pasting, constant 0/1 kernels): several
      times slower as QLinearConv than in float (demo PANet).

    Figures: benchmarks/README.md, ort_profile.py.
    """
    consts = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if (n.op_type == "MatMul" and n.input[1] not in consts)
        or (n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
    ]


def float_islands(model: onnx.ModelProto, quantized: Sequence[str]) -> list[str]:
    """Nodes of ``quantized`` that the ONNX Runtime CPU layout keeps float: no integer work after.

    In that layout every quantized node's output is quantized too. A node whose results feed only
    float computation (Softmax, LayerNormalization, an attention product, the graph output) then
    costs a QuantizeLinear in front and a DequantizeLinear behind, and its integer kernel saves
    less than that: the q scaling and the logit bias around the demo GRL's attention, PANet's
    patch reshapes. Weighted operators (Conv, Gemm...) are never dropped: their integer products
    are the point. Repeated until nothing more drops, so a Reshape -> Transpose chain that feeds
    only float nodes drops as a whole. On the demo models this made the GRL graph faster and
    every graph closer to FP32 (benchmarks/README.md, "INT8 CPU-layout experiments").
    """
    nodes = {n.name: n for n in model.graph.node}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for tensor in n.input:
            consumers.setdefault(tensor, []).append(n.name)
    integer = set(quantized)
    dropped: list[str] = []
    changed = True
    while changed:
        changed = False
        for name in [n for n in quantized if n in integer]:
            node = nodes[name]
            if node.op_type in WEIGHTED_OPS:
                continue
            if not any(c in integer for t in node.output for c in consumers.get(t, ())):
                integer.discard(name)
                dropped.append(name)
                changed = True
    return dropped


def widen_channel_broadcasts(model: onnx.ModelProto) -> int:
    """Widen the per-channel factor of each quantized ``x * a`` (``x`` (N, C, H, W), ``a``
    (N, C, 1, 1)) to a row, (N, C, 1, W); returns how many were widened.

    ONNX Runtime runs its integer graph channels-last, where a (1, 1, 1, C) factor makes
    QLinearMul broadcast over spans of only C values: the channel-attention products of the demo
    MPRNet took more time per node than its convolutions. With the factor one row wide the spans
    are W x C long, and the products took about a quarter of their time before (benchmarks/
    README.md, ort_profile.py). The widened factor is an ``Expand`` of the dequantized factor,
    quantized again with the same scale and zero point, so the integers the product reads, and so
    the output, are exactly the same.
    """
    shapes = {name: dims for name, (_, dims) in tensor_shapes(model).items()}
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    nodes, widened = [], 0
    for node in model.graph.node:
        if node.op_type == "Mul" and len(node.input) == 2:
            for k in (0, 1):
                x, a = shapes.get(node.input[1 - k]), shapes.get(node.input[k])
                dq = producers.get(node.input[k])
                if (
                    dq is None
                    or dq.op_type != "DequantizeLinear"
                    or dq.input[0] in inits  # a constant factor: not a channel attention
                    or not x
                    or len(x) != 4
                    or a != [x[0], x[1], 1, 1]  # the batch may be symbolic, C is not
                    or not isinstance(x[1], int)
                    or not isinstance(x[3], int)
                    or x[3] <= 1
                ):
                    continue
                # Expand broadcasts: a 1 keeps the factor's own batch.
                row = f"{node.name}/row_shape"
                model.graph.initializer.append(
                    onnx.numpy_helper.from_array(np.array([1, x[1], 1, x[3]], np.int64), row)
                )
                wide = f"{node.input[k]}/row"
                qdq_args = list(dq.input[1:])
                nodes += [
                    onnx.helper.make_node("Expand", [node.input[k], row], [wide], f"{wide}/Expand"),
                    onnx.helper.make_node(
                        "QuantizeLinear", [wide, *qdq_args], [f"{wide}/q"], f"{wide}/Q"
                    ),
                    onnx.helper.make_node(
                        "DequantizeLinear", [f"{wide}/q", *qdq_args], [f"{wide}/dq"], f"{wide}/DQ"
                    ),
                ]
                node.input[k] = f"{wide}/dq"
                widened += 1
                break
        nodes.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    return widened


LAYOUT = Int8Layout(
    name="ort-cpu",
    default_method="minmax",
    integer_nodes=integer_nodes,
    quantizer_settings=quantizer_settings,
    finish=finish,
)

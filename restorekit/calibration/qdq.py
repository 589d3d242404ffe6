"""INT8 as a Q/DQ graph following TensorRT's explicit-quantization rules (DESIGN.md §2).

Symmetric int8; per-channel weights; per-tensor activations; QuantizeLinear/DequantizeLinear on the
inputs of Conv / ConvTranspose / MatMul / Gemm; everything else stays in floating point. Scales come
from calibration on real tiles (entropy, min-max or percentile), done by ONNX Runtime's static
quantizer; min-max ranges are measured inside the graph first (``_write_min_max``). Nodes named
in ``exclude`` stay out of INT8 (the sensitivity search uses this).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from restorekit.calibration.feeds import CalibrationSet
from restorekit.calibration.ranges import tensor_min_max
from restorekit.errors import RestoreKitError, require
from restorekit.manifest import INPUT_NAME, INT8_LAYOUTS
from restorekit.onnx_graph import tensor_shapes

QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# ONNX Runtime's CPU provider has integer kernels for these (QLinear*): a graph quantized on all of
# them runs integer from one convolution to the next instead of converting around each.
# Not Softmax: attention weights in uint8 (steps of 1/255 of the largest) wrecked the demo PANet
# (22.0 dB against FP32; 42.6 dB with Softmax in float) and gained no speed on NLRN or GRL. Its
# neighbours must stay float too (slow_in_integer), or ONNX Runtime fuses a QLinearSoftmax anyway.
# Not Resize: ONNX Runtime's integer Resize refused PANet's bicubic scales (PANet's pyramid is now
# exported as matrix products; MPRNet's bilinear upsampling is run on integers by ONNX Runtime's
# optimised graph anyway).
# fmt: off
ORT_CPU_OPS = QUANTIZED_OPS + (
    "LeakyRelu", "Relu", "Add", "Mul", "Sigmoid", "GlobalAveragePool", "AveragePool", "Concat",
    "MaxPool", "Transpose", "Reshape", "Split", "Squeeze", "Unsqueeze",
)
# fmt: on
METHODS = ("entropy", "minmax", "percentile")
PERCENTILE = 99.99


@dataclass(frozen=True)
class QdqResult:
    model: onnx.ModelProto
    quantized_nodes: tuple[str, ...]  # nodes computing in INT8
    excluded: tuple[str, ...]  # quantizable nodes kept in floating point
    activation_amax: dict[str, float]  # tensor -> amax (scale * 127), for the calibration cache


def quantizable_nodes(
    model: onnx.ModelProto, layout: str = "tensorrt", exclude: Sequence[str] = ()
) -> list[str]:
    """Names of the nodes the layout computes in INT8 when the nodes in ``exclude`` stay float.

    TensorRT layout: Conv/ConvTranspose/MatMul/Gemm with a constant weight. ONNX Runtime CPU
    layout: also every operator with an integer kernel (:data:`ORT_CPU_OPS`), except the nodes
    whose integer kernel is slower (:func:`slow_in_integer`) and those whose results feed no
    integer computation (:func:`float_islands`; excluding a node can make more of them).
    """
    consts = {i.name for i in model.graph.initializer}
    float_nodes = set(exclude) | (set(slow_in_integer(model)) if layout == "ort-cpu" else set())
    names = [
        n.name
        for n in model.graph.node
        if n.name not in float_nodes
        and (
            (n.op_type in QUANTIZED_OPS and len(n.input) > 1 and n.input[1] in consts)
            or (layout == "ort-cpu" and n.op_type in ORT_CPU_OPS and n.op_type not in QUANTIZED_OPS)
        )
    ]
    if layout == "ort-cpu":
        islands = set(float_islands(model, names))
        names = [n for n in names if n not in islands]
    return names


def qdq_from_model(
    model: onnx.ModelProto,
    calibration: CalibrationSet,
    method: str = "entropy",
    exclude: Sequence[str] = (),
    layout: str = "tensorrt",
    ranges_file: Path | None = None,
) -> QdqResult:
    """Calibrate ``model`` (FP32, nodes named) on ``calibration`` and return its Q/DQ form.

    ``layout="tensorrt"`` (what ``--int8`` writes): symmetric int8, Q/DQ only on the inputs of the
    quantized operators, TensorRT's rule; it fuses the rest. ``layout="ort-cpu"``: the pattern
    ONNX Runtime's CPU provider runs fastest: uint8 asymmetric activations, and every operator
    with an integer kernel (:data:`ORT_CPU_OPS`) quantized, outputs included, so QLinearConv feeds
    QLinearLeakyRelu, QLinearAdd... without float in between. Its activation amax list is empty
    (TensorRT's calibration cache is symmetric int8 and does not describe it).

    ``ranges_file``: where ONNX Runtime keeps the calibrated ranges (ONNX Runtime >= 1.24); a
    second call with the same file skips calibration, e.g. to quantize again with ``exclude``.

    Raises:
        RestoreKitError: unknown method or layout.
    """
    if method not in METHODS:
        raise RestoreKitError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")
    if layout not in INT8_LAYOUTS:
        raise RestoreKitError(f"unknown INT8 layout {layout!r}; choose {', '.join(INT8_LAYOUTS)}")
    trt = layout == "tensorrt"
    q = require("onnxruntime.quantization", "calibration", "INT8 calibration")
    methods = {
        "entropy": q.CalibrationMethod.Entropy,
        "minmax": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
    }

    class Reader(q.CalibrationDataReader):
        """Calibration tiles, handed out one range at a time (see ``CalibStridedMinMax``)."""

        def __init__(self) -> None:
            self._tiles = list(calibration.batches(1))
            self._pending = iter(self._tiles)

        def __len__(self) -> int:
            return len(self._tiles)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._pending = iter(self._tiles[start_index:end_index])

        def get_next(self):
            batch = next(self._pending, None)
            return None if batch is None else {INPUT_NAME: batch}

    targets = quantizable_nodes(model, layout)
    integer = quantizable_nodes(model, layout, exclude)
    kept_float = sorted({n.name for n in model.graph.node} - set(integer))  # for the CPU layout
    with tempfile.TemporaryDirectory(prefix="restorekit-qdq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        cache = {}
        own_min_max = method == "minmax"  # see _write_min_max
        if (ranges_file or own_min_max) and "calibration_cache_path" in _parameters(
            q.quantize_static
        ):
            ranges_file = ranges_file or Path(tmp) / "ranges.json"
            if own_min_max and not ranges_file.exists():
                _write_min_max(ranges_file, model, calibration)
            cache["calibration_cache_path"] = str(ranges_file)
        with _quiet():
            q.quantize_static(
                str(src),
                str(dst),
                Reader(),
                quant_format=q.QuantFormat.QDQ,
                activation_type=q.QuantType.QInt8 if trt else q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=list(QUANTIZED_OPS if trt else ORT_CPU_OPS),
                nodes_to_quantize=integer if trt else None,
                nodes_to_exclude=None if trt else kept_float,
                calibrate_method=methods[method],
                extra_options={
                    "ActivationSymmetric": trt,
                    "WeightSymmetric": True,
                    "CalibPercentile": PERCENTILE,
                    # Despite its name, this makes every method collect one tile at a time and
                    # merge it into its statistics; otherwise ONNX Runtime holds the activations
                    # of every calibration tile at once (hundreds of GB for MPRNet-deblur).
                    "CalibStridedMinMax": 1,
                    "CalibTensorRangeSymmetric": trt,
                    "DedicatedQDQPair": trt,
                    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS) if trt else [],
                },
                **cache,
            )
        result = onnx.load(str(dst))
    if trt:
        keep_float_for_other_consumers(result)
    else:
        widen_channel_broadcasts(result)
    return QdqResult(
        model=result,
        quantized_nodes=tuple(integer),
        excluded=tuple(n for n in targets if n in set(exclude)),
        activation_amax=activation_amax(result) if trt else {},
    )


def slow_in_integer(model: onnx.ModelProto) -> list[str]:
    """Nodes the ONNX Runtime CPU layout keeps in float because its integer kernels are slower.

    * MatMul of two activations (attention's ``q @ k^T`` and ``p @ v``): quantized, they also
      put a Q/DQ pair around the Softmax between them, which ONNX Runtime then fuses into a
      QLinearSoftmax that took 98 ms of the demo GRL's 480 ms (float Softmax: 25 ms);
    * grouped convolutions (PANet's patch extraction and pasting, constant 0/1 kernels): 7 ms as
      QLinearConv in the demo PANet, against well under 1 ms in float.
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
    only float nodes drops as a whole. Measured on the demo models (INT8 CPU layout without and
    with, alternating runs in one process): the demo GRL went from 1.23x to 1.11x the FP32
    latency and from 45.0 to 46.1 dB against FP32; MPRNet, PANet and NLRN kept their speed within
    the noise and gained 0.26-0.35 dB.
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
            if node.op_type in QUANTIZED_OPS:
                continue
            if not any(c in integer for t in node.output for c in consumers.get(t, ())):
                integer.discard(name)
                dropped.append(name)
                changed = True
    return dropped


def _write_min_max(path: Path, model: onnx.ModelProto, calibration: CalibrationSet) -> None:
    """Min-max ranges of every float tensor, measured inside the graph, in ONNX Runtime's cache.

    ONNX Runtime's own min-max calibrator appends its reductions after the whole graph and so
    holds every activation of a tile at once: more than 24 GB for MPRNet-deblur at 256x256 in the
    CPU layout, which calibrates every tensor. Ours cost the memory of a forward pass.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        save_tensors_data,
    )

    ranges = tensor_min_max(model, calibration.batches(1))
    data = {name: (np.float32(lo), np.float32(hi)) for name, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def _parameters(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


@contextlib.contextmanager
def _quiet():
    """Silence ONNX Runtime's quantizer, which prints progress and a pre-processing hint that
    does not apply (our graphs are already simplified): the export shows its own stages."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def widen_channel_broadcasts(model: onnx.ModelProto) -> int:
    """Widen the per-channel factor of each quantized ``x * a`` (``x`` (N, C, H, W), ``a``
    (N, C, 1, 1)) to a row, (N, C, 1, W); returns how many were widened.

    ONNX Runtime runs its integer graph channels-last, where a (1, 1, 1, C) factor makes
    QLinearMul broadcast over spans of only C values: the channel-attention products of the demo
    MPRNet took 30 ms of 132 ms, more than its convolutions per node. With the factor one row wide
    the spans are W x C long (8 ms). The widened factor is an ``Expand`` of the dequantized factor,
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


def keep_float_for_other_consumers(model: onnx.ModelProto) -> None:
    """Give the float tensor back to every consumer of a Q/DQ'd activation that is not quantized.

    ONNX Runtime puts one Q/DQ pair on a tensor and routes *all* its consumers through it, so a
    residual skip next to a convolution would carry the quantization error too. TensorRT's rule is
    Q/DQ on the inputs of the quantized operators only; everything else reads the float value.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]


def activation_amax(model: onnx.ModelProto) -> dict[str, float]:
    """Per-tensor amax of the activations a Q/DQ graph quantizes (weights are not listed)."""
    inits = {i.name: i for i in model.graph.initializer}
    amax: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]]) if node.input[1] in inits else None
        if scale is not None and scale.size == 1:
            amax[node.input[0]] = float(np.asarray(scale).reshape(-1)[0]) * 127.0
    return amax

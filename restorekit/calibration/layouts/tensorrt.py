"""The TensorRT INT8 layout: TensorRT's explicit-quantization rules.

Symmetric int8; per-channel weights; per-tensor activations; QuantizeLinear/DequantizeLinear on
the inputs of Conv / ConvTranspose / MatMul / Gemm only; everything else reads float values, and
TensorRT fuses the Q/DQ pairs into its INT8 kernels. Biases stay float: ONNX-TensorRT's operator
matrix lists DequantizeLinear on INT8 (and FP8/INT4) only, an INT32 bias DQ is read as another type
with a warning, and TensorRT (like NVIDIA's ModelOpt) quantizes the bias itself from the input and
weight scales.
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


def integer_nodes(model: onnx.ModelProto, exclude: Sequence[str] = ()) -> list[str]:
    """The weighted operators with a constant weight, except ``exclude``."""
    return weighted_nodes(model, exclude)


def quantizer_settings(model: onnx.ModelProto, integer: list[str]) -> QuantizerSettings:
    chosen = set(integer)
    consts = {i.name for i in model.graph.initializer}
    # Only the activation inputs of the quantized operators get Q/DQ (outputs stay float): half
    # of what ONNX Runtime would calibrate (251 of 499 tensors in MPRNet-deblur).
    inputs = frozenset(
        t for n in model.graph.node if n.name in chosen for t in n.input if t and t not in consts
    )
    return QuantizerSettings(
        activation="int8",
        op_types=WEIGHTED_OPS,
        nodes_to_quantize=integer,
        calibrated=inputs,
        extra_options={
            "ActivationSymmetric": True,
            "CalibTensorRangeSymmetric": True,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
            "QuantizeBias": False,
        },
    )


def finish(model: onnx.ModelProto) -> dict[str, float]:
    """Give residual paths their float values back; returns the activations' amax."""
    keep_float_for_other_consumers(model)
    return activation_amax(model)


def keep_float_for_other_consumers(model: onnx.ModelProto) -> None:
    """Give the float tensor back to every consumer of a Q/DQ'd activation that is not quantized.

    ONNX Runtime puts one Q/DQ pair on a tensor and routes *all* its consumers through it, so a
    residual skip next to a convolution would carry the quantization error too. TensorRT's rule is
    Q/DQ on the inputs of the quantized operators only; everything else reads the float value.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
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


LAYOUT = Int8Layout(
    name="tensorrt",
    default_method="entropy",
    integer_nodes=integer_nodes,
    quantizer_settings=quantizer_settings,
    finish=finish,
)

"""INT8 graph layouts: what each one quantizes and how, one module per layout.

- ``tensorrt`` (what ``--int8`` writes): TensorRT's explicit-quantization rules. Symmetric int8,
  per-channel weights, per-tensor activations, Q/DQ on the inputs of Conv / ConvTranspose /
  MatMul / Gemm only, biases kept in float; TensorRT fuses the rest.
- ``ort_cpu`` (``--int8-layout ort-cpu``): the pattern ONNX Runtime's CPU provider runs fastest:
  uint8 activations, every operator with an integer kernel quantized, outputs included, so one
  integer kernel feeds the next without float in between.

The driver, :func:`restorekit.calibration.qdq.qdq_from_model`, calibrates with ONNX Runtime's
quantizer and asks the layout which nodes to quantize, with which quantizer options, and what to
do to the graph afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from restorekit.errors import RestoreKitError
from restorekit.manifest import INT8_LAYOUTS

# Operators with a weight: the ones whose integer products are the point of INT8.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def weighted_nodes(model: onnx.ModelProto, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the :data:`WEIGHTED_OPS` nodes with a constant weight, except ``exclude``."""
    consts = {i.name for i in model.graph.initializer}
    skip = set(exclude)
    return [
        n.name
        for n in model.graph.node
        if n.name not in skip
        and n.op_type in WEIGHTED_OPS
        and len(n.input) > 1
        and n.input[1] in consts
    ]


@dataclass(frozen=True)
class QuantizerSettings:
    """What a layout asks of ONNX Runtime's ``quantize_static``.

    Attributes:
        activation: ``int8`` (symmetric) or ``uint8`` (asymmetric) activations.
        op_types: operator types the quantizer may touch.
        nodes_to_quantize: only these nodes (``None``: every node of ``op_types``...).
        nodes_to_exclude: ...except these.
        reduce_range: 7-bit weights (see the CPU layout for why).
        extra_options: layout-specific ``extra_options`` of ``quantize_static``.
        calibrated: the only tensors whose ranges the layout reads (``None``: ONNX Runtime's
            choice, the inputs and outputs of every operator of ``op_types``). Each calibrated
            tensor is a graph output of ONNX Runtime's calibration model and a histogram per
            tile, so naming fewer makes calibration cheaper with the same ranges for the rest.
    """

    activation: str
    op_types: tuple[str, ...]
    nodes_to_quantize: list[str] | None = None
    nodes_to_exclude: list[str] | None = None
    reduce_range: bool = False
    extra_options: Mapping[str, Any] = field(default_factory=dict)
    calibrated: frozenset[str] | None = None


@dataclass(frozen=True)
class Int8Layout:
    """One INT8 layout, as the driver uses it.

    Attributes:
        name: as in the manifest (:data:`restorekit.manifest.INT8_LAYOUTS`).
        default_method: calibration method when the user names none.
        integer_nodes: ``(model, exclude) -> names`` of the nodes that compute in INT8 when the
            nodes in ``exclude`` stay float (the sensitivity search excludes layers this way).
        quantizer_settings: ``(model, integer nodes) ->`` :class:`QuantizerSettings`.
        finish: ``(quantized model) -> activation amax by tensor`` (for TensorRT's calibration
            cache; empty where the layout has none): the layout's graph edits after quantizing.
    """

    name: str
    default_method: str
    integer_nodes: Callable[[onnx.ModelProto, Sequence[str]], list[str]]
    quantizer_settings: Callable[[onnx.ModelProto, list[str]], QuantizerSettings]
    finish: Callable[[onnx.ModelProto], dict[str, float]]


def layout_named(name: str) -> Int8Layout:
    """The layout called ``name``.

    Raises:
        RestoreKitError: an unknown layout.
    """
    from restorekit.calibration.layouts import ort_cpu, tensorrt

    layouts = {layout.name: layout for layout in (tensorrt.LAYOUT, ort_cpu.LAYOUT)}
    assert tuple(layouts) == INT8_LAYOUTS, "the manifest's layout list and the modules differ"
    if name not in layouts:
        raise RestoreKitError(f"unknown INT8 layout {name!r}; choose {', '.join(INT8_LAYOUTS)}")
    return layouts[name]

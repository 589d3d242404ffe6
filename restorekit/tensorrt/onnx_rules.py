"""Will TensorRT's ONNX parser take this graph? Checked without TensorRT, against the rules ONNX-
TensorRT publishes, so a graph exported on a machine without TensorRT is judged before it reaches
the device.

:func:`check_graph_for_tensorrt` runs one small function per rule over an ``onnx.ModelProto`` and
returns every :class:`RuleViolation` found (an empty list: nothing the parser is known to refuse).

1. ``operator``: every node's type is in the release's support matrix, in the default domain
   (the parser ignores domains and would look for a plugin of that name).
2. ``opset``: the default-domain opset is within the release's range.
3. ``dtype``: tensors use types TensorRT has, operators get the types the matrix lists for them
   (tensor types from ONNX shape inference); ``DequantizeLinear`` reads, and ``QuantizeLinear``
   writes, a quantized type (INT8; FP8/INT4 from 10.x).
4. ``qdq``: zero points absent or all zero, of the quantized type (TensorRT's explicit quantization
   is symmetric); scales positive and finite, per tensor or per channel of constant weights along
   an explicit ``axis``.
5. ``resize``: the modes, coordinate transformations and rounding the importer maps to
   ``IResizeLayer``. Both importers map ``cubic`` to ``kCUBIC`` with ``cubic_coeff_a`` (though the
   matrices list only nearest and linear), and with constant scales resize only the innermost
   axes: two in cubic mode, three in linear mode.
6. ``restriction``: the other restrictions the matrix or importer states for operators these
   graphs use: constant ``axes`` inputs, 2D/3D pooling without dilation, one ``LayerNormalization``
   output, lowercase Einsum equations, ``Constant`` without string or sparse values.

Sources: the matrix ``docs/operators.md`` and the importers of github.com/onnx/onnx-tensorrt, at
8.6-GA (``builtin_op_importers.cpp``, ``onnx2trt_utils.cpp``) and 10.1-GA brought to 10.3 by the
changelog (``onnxOpImporters.cpp``, ``onnxOpCheckers.cpp``, ``importerUtils.cpp``); the tables are
in :mod:`restorekit.tensorrt.onnx_matrix`. What differs between the two that matters here:

- opsets: 8.6 takes up to 17, 10.x 9 to 20 (``Resize`` ``antialias``/``keep_aspect_ratio_policy``
  and ``Pad``/reduction ``axes`` inputs arrive with opset 18);
- quantization: 8.6 reads INT8 Q/DQ only, needs the zero-point input (it reads a third input
  unconditionally) and reads constant scales as float32; 10.x adds FP8 and INT4, makes the zero
  point optional (defaulting to INT8 where ONNX defaults to UINT8), accepts FP16/BF16 scales and
  blocked scales; a zero point of another type it takes for UINT8, warns and quantizes as INT8;
- types: 8.6 casts INT64 down to INT32 and lists INT8 for many layers; 10.x lists BF16 and INT64
  and admits INT8 only through Q/DQ, UINT8 only at network inputs and outputs;
- restrictions: 10.x refuses pooling dilations, a second ``LayerNormalization`` output and
  ``Constant`` string/sparse values; 8.6 refuses Einsum ellipsis and diagonals; ``Slice`` takes
  tensor ``axes`` from 10.3, ``Pad`` from 10.4, ``Squeeze`` from 10.7.

Only the top-level graph is checked (restorekit's graphs have no subgraphs). Torch-free; ``onnx``
is imported when a check runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from packaging.version import Version

from restorekit.tensorrt.onnx_matrix import (
    MATRIX_TYPE_NAMES,
    SupportMatrix,
    matrix_for,
)
from restorekit.tensorrt.versions import parse_trt_version

if TYPE_CHECKING:
    import onnx

DEFAULT_TARGET = "10.3"  # JetPack 6
DEFAULT_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
POOLING_OPS = ("AveragePool", "MaxPool")
RESIZE_MODES = ("nearest", "linear", "cubic")
COORDINATE_TRANSFORMATIONS = (
    "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners",
)  # fmt: skip
NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
# With constant scales, the importer resizes only the innermost axes: 3 for linear, 2 for cubic.
RESIZED_AXES = {"linear": 3, "cubic": 2}
# Inputs judged against the matrix's types: the data an operator computes on, not its shape,
# index or axes inputs (those are INT64 by the ONNX specification). ``None``: every input.
ALL_INPUTS = None
DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    **{
        op: ALL_INPUTS
        for op in (
            "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Equal", "Less",
            "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Concat", "MatMul",
            "Gemm", "Conv", "ConvTranspose", "Einsum", "PRelu", "LayerNormalization",
            "BatchNormalization", "InstanceNormalization", "GroupNormalization", "Range", "Clip",
        )
    },
    "Where": (1, 2),
}  # fmt: skip
# Operators whose output type is theirs to choose, judged against the matrix as well.
TYPED_OUTPUTS = ("Cast", "CastLike", "Constant", "ConstantOfShape")


@dataclass(frozen=True)
class RuleViolation:
    """One thing TensorRT's ONNX parser is documented to refuse (or to read differently).

    Attributes:
        rule: ``operator``, ``opset``, ``dtype``, ``qdq``, ``resize`` or ``restriction``.
        node: the node's name (``""`` for the model itself; the tensor for a graph input).
        op_type: the node's operator (``""`` for the model).
        message: what is wrong and what to do about it.
    """

    rule: str
    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        where = f"{self.node} ({self.op_type})" if self.op_type else self.node or "model"
        return f"[{self.rule}] {where}: {self.message}"


@dataclass
class GraphFacts:
    """What the rules read from a model: tensor types, shapes and constants, the producers of
    tensors, and the target's support matrix."""

    model: Any
    matrix: SupportMatrix
    version: Version
    opset: int | None
    types: dict[str, str]
    shapes: dict[str, tuple[int | None, ...]]
    constant_protos: dict[str, Any]
    producers: dict[str, Any]
    graph_io: frozenset[str]
    _constants: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nodes(self) -> Iterable[Any]:
        return self.model.graph.node

    def matrix_type(self, tensor: str) -> str | None:
        """The tensor's type as the matrix names it (``"FP32"``), ``None`` if unknown; types
        TensorRT lacks keep their ONNX name (``"INT16"``)."""
        onnx_name = self.types.get(tensor)
        if onnx_name is None:
            return None
        return MATRIX_TYPE_NAMES.get(onnx_name, onnx_name)

    def judged_type(self, tensor: str) -> str | None:
        """The matrix type after the parser's own down-casts (DOUBLE -> FP32; 8.6: INT64 ->
        INT32)."""
        name = self.matrix_type(tensor)
        return self.matrix.narrowed_types.get(name, name) if name is not None else None

    def is_constant(self, tensor: str) -> bool:
        """An initializer or a ``Constant`` node's output: what the parser imports as weights."""
        return tensor in self.constant_protos

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of a constant tensor (``None`` when it is computed at run time)."""
        if tensor not in self.constant_protos:
            return None
        if tensor not in self._constants:
            from onnx import numpy_helper

            self._constants[tensor] = numpy_helper.to_array(self.constant_protos[tensor])
        return self._constants[tensor]


def check_graph_for_tensorrt(
    model: onnx.ModelProto, trt_version: str = DEFAULT_TARGET
) -> list[RuleViolation]:
    """Check a graph against ONNX-TensorRT's published support for ``trt_version``.

    Args:
        model: the ONNX model (not modified).
        trt_version: the TensorRT release that will parse it (8.6 or 10.x; default 10.3, what
            JetPack 6 ships).

    Returns:
        Every violation found, rule by rule in node order; empty when the graph keeps the rules.

    Raises:
        MissingDependencyError: the ``onnx`` package is not installed.
        ExportError: no support matrix is encoded for ``trt_version``.
        EngineBuildError: ``trt_version`` is not a version.
    """
    facts = graph_facts(model, trt_version)
    return [violation for rule in RULES for violation in rule(facts)]


def graph_facts(model: onnx.ModelProto, trt_version: str = DEFAULT_TARGET) -> GraphFacts:
    """Read types (by ONNX shape inference), shapes and constants of ``model`` once.

    Raises:
        MissingDependencyError: the ``onnx`` package is not installed.
        ExportError: no support matrix is encoded for ``trt_version``.
        EngineBuildError: ``trt_version`` is not a version.
    """
    from restorekit.errors import require

    onnx = require("onnx", "calibration", "checking an ONNX graph for TensorRT")
    matrix = matrix_for(trt_version)
    version = parse_trt_version(trt_version)
    opset = next((int(o.version) for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an invalid graph: judge what the file itself declares
        inferred = model
    graph = inferred.graph
    types: dict[str, str] = {}
    shapes: dict[str, tuple[int | None, ...]] = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = info.type.tensor_type
        if tensor_type.elem_type:
            types[info.name] = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        if tensor_type.HasField("shape"):
            shapes[info.name] = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            )
    constant_protos: dict[str, Any] = {}
    for init in model.graph.initializer:
        constant_protos[init.name] = init
        types[init.name] = onnx.TensorProto.DataType.Name(init.data_type)
        shapes[init.name] = tuple(init.dims)
    producers = {}
    for node in model.graph.node:
        for out in node.output:
            if out:
                producers[out] = node
        value = _constant_value(node, onnx)
        if value is not None:
            constant_protos[node.output[0]] = value
            types[node.output[0]] = onnx.TensorProto.DataType.Name(value.data_type)
            shapes[node.output[0]] = tuple(value.dims)
    io = frozenset(i.name for i in (*model.graph.input, *model.graph.output))
    return GraphFacts(model, matrix, version, opset, types, shapes, constant_protos, producers, io)


def _constant_value(node: Any, onnx: Any) -> Any:
    """The ``TensorProto`` a ``Constant`` node holds (``value`` or a ``value_float(s)``/
    ``value_int(s)`` attribute), else ``None``."""
    if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or not node.output:
        return None
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = onnx.helper.get_attribute_value(attr)
            dtype = np.float32 if "float" in attr.name else np.int64
            return onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype))
    return None


# --- helpers ------------------------------------------------------------------------------------


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _violation(rule: str, node: Any, message: str) -> RuleViolation:
    # Unnamed nodes are named by their first output, which is unique in a graph.
    name = node.name or (node.output[0] if node.output else "")
    return RuleViolation(rule, name, node.op_type, message)


def _inputs(node: Any, indices: tuple[int, ...] | None) -> Iterator[tuple[int, str]]:
    for i, name in enumerate(node.input):
        if name and (indices is None or i in indices):
            yield i, name


def _listed(types: Iterable[str]) -> str:
    return ", ".join(sorted(types)) or "none"


def _target(facts: GraphFacts) -> str:
    return f"TensorRT {facts.matrix.release}"


# --- 1. operator types --------------------------------------------------------------------------


def check_operator_types(facts: GraphFacts) -> list[RuleViolation]:
    """Every node is a default-domain operator the release's matrix supports."""
    local_functions = {(f.domain, f.name) for f in facts.model.functions}
    found = []
    for node in facts.nodes:
        if (node.domain, node.op_type) in local_functions:
            continue  # imported as a model-local function
        if node.domain not in DEFAULT_DOMAINS:
            found.append(_violation("operator", node, (
                f"operator of domain '{node.domain}': TensorRT's parser ignores the domain and "
                f"looks for a plugin named {node.op_type}; express it with standard ONNX "
                "operators or register such a plugin on the target"
            )))  # fmt: skip
        elif node.op_type not in facts.matrix.operators:
            found.append(_violation("operator", node, (
                f"{node.op_type} is not supported by {_target(facts)}'s ONNX parser (not in its "
                "operator support matrix); rewrite it with supported operators or provide a "
                "plugin"
            )))  # fmt: skip
    return found


# --- 2. opset -----------------------------------------------------------------------------------


def check_opset(facts: GraphFacts) -> list[RuleViolation]:
    """The default-domain opset is within the range the release's parser supports."""
    lo, hi = facts.matrix.opset_min, facts.matrix.opset_max
    if facts.opset is None:
        message = "the model imports no default-domain opset; export it with an ai.onnx opset"
    elif not lo <= facts.opset <= hi:
        message = (
            f"opset {facts.opset} is outside {_target(facts)}'s range {lo}..{hi}; re-export with "
            f"--opset {min(max(facts.opset, lo), hi)}"
        )
    else:
        return []
    return [RuleViolation("opset", "", "", message)]


# --- 3. data types ------------------------------------------------------------------------------


def check_data_types(facts: GraphFacts) -> list[RuleViolation]:
    """Tensors have types TensorRT knows; operators get the types the matrix lists for them;
    Q/DQ go between a float type and a quantized type."""
    found = _unknown_types(facts)
    for node in facts.nodes:
        if node.domain not in DEFAULT_DOMAINS:
            continue
        if node.op_type == "DequantizeLinear":
            found += _dequantize_types(facts, node)
        elif node.op_type == "QuantizeLinear":
            found += _quantize_types(facts, node)
        elif node.op_type in facts.matrix.operators:
            found += _operator_types(facts, node)
    return found


def _unknown_types(facts: GraphFacts) -> list[RuleViolation]:
    found = []
    for node in facts.nodes:
        for out in node.output:
            name = facts.matrix_type(out) if out else None
            if name is not None and name not in facts.matrix.data_types:
                found.append(_violation("dtype", node, (
                    f"output '{out}' is {name}, a type {_target(facts)} does not have "
                    f"({_listed(facts.matrix.data_types)}); cast to one of those"
                )))  # fmt: skip
            elif name in facts.matrix.io_only_types and out not in facts.graph_io:
                found.append(_violation("dtype", node, (
                    f"output '{out}' is {name}, which {_target(facts)} supports only as a network "
                    "input or output; keep it inside the graph as INT32 or a float type"
                )))  # fmt: skip
    for graph_input in facts.model.graph.input:
        name = facts.matrix_type(graph_input.name)
        if name is not None and name not in facts.matrix.data_types:
            found.append(RuleViolation("dtype", graph_input.name, "", (
                f"graph input is {name}, a type {_target(facts)} does not have; feed "
                f"{_listed(facts.matrix.data_types)}"
            )))  # fmt: skip
    return found


def _operator_types(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    listed = facts.matrix.operators[node.op_type]
    checked = [(f"input '{t}'", t) for _, t in _inputs(node, DATA_INPUTS.get(node.op_type, (0,)))]
    if node.op_type in TYPED_OUTPUTS and node.output:
        checked.append((f"output '{node.output[0]}'", node.output[0]))
    found = []
    for what, tensor in checked:
        judged = facts.judged_type(tensor)
        if judged is None or judged not in facts.matrix.data_types or judged in listed:
            continue  # unknown, or already reported as a type TensorRT lacks
        found.append(_violation("dtype", node, (
            f"{what} is {facts.matrix_type(tensor)}; {_target(facts)}'s matrix lists "
            f"{node.op_type} for {_listed(listed)} only: cast it, or keep the node in a "
            "listed type"
        )))  # fmt: skip
    return found


def _dequantize_types(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    quantized = facts.matrix.quantized_types
    found = []
    x = node.input[0] if node.input else ""
    name = facts.matrix_type(x)
    if name is not None and name not in quantized:
        # INT32 Q/DQ data is how ONNX Runtime's quantizer stores biases.
        what = "INT32 (a quantized bias)" if name == "INT32" else name
        found.append(_violation("dtype", node, (
            f"DequantizeLinear reads {what} ('{x}'); {_target(facts)}'s matrix lists "
            f"{_listed(quantized)} only (a zero point of another type is taken for UINT8 and "
            "replaced by INT8 with a warning): keep this tensor float and drop its Q/DQ, "
            "e.g. leave Conv/Gemm biases unquantized"
        )))  # fmt: skip
    found += _scale_type(facts, node)
    return found


def _quantize_types(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    found = []
    listed = facts.matrix.operators.get("QuantizeLinear", frozenset())
    x = node.input[0] if node.input else ""
    judged = facts.judged_type(x)
    if judged is not None and judged not in listed:
        found.append(_violation("dtype", node, (
            f"QuantizeLinear reads {facts.matrix_type(x)} ('{x}'); {_target(facts)} quantizes "
            f"{_listed(listed)} only: quantize the float tensor"
        )))  # fmt: skip
    y = node.output[0] if node.output else ""
    name = facts.matrix_type(y)
    if name is not None and name not in facts.matrix.quantized_types:
        found.append(_violation("dtype", node, (
            f"QuantizeLinear writes {name} ('{y}'); {_target(facts)} quantizes to "
            f"{_listed(facts.matrix.quantized_types)} only (without an INT8 zero point ONNX "
            "means UINT8 while TensorRT uses INT8, so the two would disagree): give it an INT8 "
            "zero point of 0"
        )))  # fmt: skip
    found += _scale_type(facts, node)
    return found


def _scale_type(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    scale = node.input[1] if len(node.input) > 1 else ""
    name = facts.matrix_type(scale) if scale else None
    floats = {"FP32"} if facts.matrix.fp32_scales_only else {"FP32", "FP16", "BF16"}
    if name is None or name in floats:
        return []
    return [_violation("dtype", node, (
        f"scale '{scale}' is {name}; {_target(facts)} reads Q/DQ scales as "
        f"{_listed(floats)}: store the scale as float32"
    ))]  # fmt: skip


# --- 4. Q/DQ zero points, scales and axes -------------------------------------------------------


def check_quantization(facts: GraphFacts) -> list[RuleViolation]:
    """Symmetric Q/DQ: zero points absent (10.x) or all zero of the quantized type, scales
    positive and finite, per-channel only on constant weights along an explicit axis."""
    found = []
    for node in facts.nodes:
        if node.op_type in QDQ_OPS and node.domain in DEFAULT_DOMAINS:
            found += _zero_point(facts, node)
            found += _scale_values(facts, node)
            found += _quantization_axis(facts, node)
    return found


def _zero_point(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    zero_point = node.input[2] if len(node.input) > 2 else ""
    if not zero_point:
        if not facts.matrix.zero_point_required:
            return []
        return [_violation("qdq", node, (
            f"{node.op_type} has no zero point; {_target(facts)}'s importer needs the third "
            "input: add an INT8 zero point of 0 (same shape as the scale)"
        ))]  # fmt: skip
    found = []
    name = facts.matrix_type(zero_point)
    # A QuantizeLinear's zero point chooses what it writes; a DequantizeLinear's has the type of
    # its data by the ONNX specification, which the dtype rule judges already.
    if node.op_type == "QuantizeLinear" and name not in (None, *facts.matrix.quantized_types):
        found.append(_violation("qdq", node, (
            f"zero point '{zero_point}' is {name}; {_target(facts)} quantizes symmetrically to "
            f"{_listed(facts.matrix.quantized_types)}: use an INT8 zero point of 0"
        )))  # fmt: skip
    value = facts.constant(zero_point)
    if value is not None and np.any(value.astype(np.float64) != 0):
        found.append(_violation("qdq", node, (
            f"zero point '{zero_point}' is not all zero ({_sample(value)}); TensorRT's explicit "
            "quantization is symmetric: calibrate symmetric scales with zero points of 0"
        )))  # fmt: skip
    scale = node.input[1] if len(node.input) > 1 else ""
    zp_count = _volume(facts.shapes.get(zero_point))
    scale_count = _volume(facts.shapes.get(scale))
    if zp_count is not None and scale_count is not None and zp_count != scale_count:
        found.append(_violation("qdq", node, (
            f"zero point '{zero_point}' has {zp_count} values, the scale {scale_count}; the "
            "importer needs one zero point per scale"
        )))  # fmt: skip
    return found


def _scale_values(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    scale = node.input[1] if len(node.input) > 1 else ""
    value = facts.constant(scale) if scale else None
    if value is None:
        return []
    values = value.astype(np.float64).reshape(-1)
    found = []
    bad = values[~(np.isfinite(values) & (values > 0))]
    if values.size == 0:
        found.append(_violation("qdq", node, f"scale '{scale}' is empty; give it one value"))
    elif bad.size:
        found.append(_violation("qdq", node, (
            f"scale '{scale}' must be positive and finite ({bad.size} value(s) are not: "
            f"{_sample(bad)}); TensorRT refuses non-positive scales: recalibrate, or keep "
            "tensors with an empty range (constant zero) unquantized"
        )))  # fmt: skip
    return found


def _quantization_axis(facts: GraphFacts, node: Any) -> list[RuleViolation]:
    scale = node.input[1] if len(node.input) > 1 else ""
    data = node.input[0] if node.input else ""
    scale_shape = facts.shapes.get(scale)
    count = _volume(scale_shape)
    if scale_shape is None or count is None or count == 1:
        return []  # per tensor (or unknown): the axis is ignored
    data_shape = facts.shapes.get(data)
    rank = len(data_shape) if data_shape is not None else None
    attrs = _attrs(node)
    found = []
    if len(scale_shape) != 1:
        if not (facts.matrix.blocked_scales and rank is not None and len(scale_shape) == rank):
            found.append(_violation("qdq", node, (
                f"scale '{scale}' has rank {len(scale_shape)}; {_target(facts)} takes a scalar "
                "or a 1-D per-channel scale"
                + (" (or a blocked scale of the input's rank)" if facts.matrix.blocked_scales
                   else "")
            )))  # fmt: skip
        return found
    if "axis" not in attrs:
        found.append(_violation("qdq", node, (
            f"per-channel scale '{scale}' without an 'axis' attribute: ONNX then means axis 1, "
            "TensorRT's importer axis 0; set axis explicitly (0 for Conv weights)"
        )))  # fmt: skip
    elif data_shape is not None:
        axis = int(attrs["axis"])
        axis = axis + len(data_shape) if axis < 0 else axis
        size = data_shape[axis] if 0 <= axis < len(data_shape) else None
        if size is not None and size != count:
            found.append(_violation("qdq", node, (
                f"per-channel scale '{scale}' has {count} values but axis {attrs['axis']} of "
                f"'{data}' has {size}; the importer needs one scale per channel"
            )))  # fmt: skip
    if not _is_weight(facts, node):
        found.append(_violation("qdq", node, (
            f"per-channel scale on '{data}', which is computed at run time; TensorRT quantizes "
            "activations per tensor only (per channel is for constant weights): use one scale"
        )))  # fmt: skip
    return found


def _is_weight(facts: GraphFacts, node: Any) -> bool:
    """Whether a Q/DQ node's data is a constant, directly or through Q/DQ nodes."""
    tensor = node.input[0] if node.input else ""
    for _ in range(4):
        if facts.is_constant(tensor):
            return True
        producer = facts.producers.get(tensor)
        if producer is None or producer.op_type not in (*QDQ_OPS, "Identity"):
            return False
        tensor = producer.input[0]
    return False


def _volume(shape: tuple[int | None, ...] | None) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return math.prod(shape)


def _sample(values: np.ndarray, n: int = 4) -> str:
    flat = np.asarray(values).reshape(-1)
    shown = ", ".join(f"{v:g}" if isinstance(v, float | np.floating) else str(v)
                      for v in flat[:n].tolist())  # fmt: skip
    return shown + (", ..." if flat.size > n else "")


# --- 5. Resize ----------------------------------------------------------------------------------


def check_resize(facts: GraphFacts) -> list[RuleViolation]:
    """Resize attributes the importer maps to ``IResizeLayer``, and the axes it can resize."""
    found = []
    for node in facts.nodes:
        if node.op_type == "Resize" and node.domain in DEFAULT_DOMAINS:
            found += [_violation("resize", node, m) for m in _resize_problems(facts, node)]
    return found


def _resize_problems(facts: GraphFacts, node: Any) -> list[str]:
    attrs = {k: _text(v) if isinstance(v, bytes) else v for k, v in _attrs(node).items()}
    mode = attrs.get("mode", "nearest")
    problems = []
    if mode not in RESIZE_MODES:
        problems.append(f"mode '{mode}' is not one of {', '.join(RESIZE_MODES)}")
    if facts.opset is not None and facts.opset >= 11:
        transform = attrs.get("coordinate_transformation_mode", "half_pixel")
        nearest = attrs.get("nearest_mode", "round_prefer_floor")
        if transform not in COORDINATE_TRANSFORMATIONS:
            problems.append(
                f"coordinate_transformation_mode '{transform}' is not supported (TensorRT takes "
                f"{', '.join(COORDINATE_TRANSFORMATIONS)}); export the resize with one of those"
            )
        if transform == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
            problems.append(
                "tf_half_pixel_for_nn works only with nearest_mode 'round_prefer_floor' "
                f"(got '{nearest}')"
            )
        if nearest not in NEAREST_MODES:
            problems.append(f"nearest_mode '{nearest}' is not one of {', '.join(NEAREST_MODES)}")
    if int(attrs.get("antialias", 0)) != 0:
        problems.append("antialias is not supported: resize without antialiasing")
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        problems.append(f"keep_aspect_ratio_policy '{policy}' is not supported, only 'stretch'")
    axes = [int(a) for a in attrs.get("axes", [])]
    if len(set(axes)) != len(axes):
        problems.append(f"axes {axes} repeat an axis")
    problems += _resized_axes(facts, node, mode, axes)
    return problems


def _resized_axes(facts: GraphFacts, node: Any, mode: str, axes: list[int]) -> list[str]:
    scales_index = 2 if facts.opset is None or facts.opset >= 11 else 1
    scales_name = node.input[scales_index] if len(node.input) > scales_index else ""
    if not scales_name:
        return []
    scales = facts.constant(scales_name)
    if scales is None:
        rank = len(facts.shapes.get(node.input[0], ()))
        if axes and axes != list(range(rank)):
            return ["axes with a computed scales input must be all axes in order (the importer "
                    "cannot interlace them); fold the scales to a constant"]  # fmt: skip
        return []
    values = [float(v) for v in scales.reshape(-1)]
    if axes:
        rank = len(facts.shapes.get(node.input[0], ())) or max(axes) + 1
        full = [1.0] * rank
        for axis, value in zip(axes, values, strict=False):
            full[axis] = value
        values = full
    innermost = RESIZED_AXES.get(mode)
    if innermost is None or len(values) <= innermost:
        return []
    outer = values[: len(values) - innermost]
    if all(v == 1.0 for v in outer):
        return []
    return [
        f"{mode} resizing of the outer axes (scales {values}): TensorRT resizes only the "
        f"{innermost} innermost axes in {mode} mode; keep the scales of the others at 1"
    ]


# --- 6. other restrictions ----------------------------------------------------------------------

_EINSUM_CHARACTERS = re.compile(r"[^a-z\-\>\.\, ]")


def check_restrictions(facts: GraphFacts) -> list[RuleViolation]:
    """Constant ``axes`` inputs, pooling, LayerNormalization outputs, Einsum, Constant."""
    checks: dict[str, Callable[[GraphFacts, Any], list[str]]] = {
        "AveragePool": _pooling,
        "MaxPool": _pooling,
        "LayerNormalization": _layer_norm_outputs,
        "Einsum": _einsum,
        "Constant": _constant_values,
        "ConvTranspose": _deconvolution_rank,
    }
    found = []
    for node in facts.nodes:
        if node.domain not in DEFAULT_DOMAINS:
            continue
        problems = _constant_inputs(facts, node)
        check = checks.get(node.op_type)
        if check is not None:
            problems += check(facts, node)
        found += [_violation("restriction", node, p) for p in problems]
    return found


def _constant_inputs(facts: GraphFacts, node: Any) -> list[str]:
    problems = []
    for need in facts.matrix.constant_inputs.get(node.op_type, ()):
        if need.until is not None and facts.version >= need.until:
            continue
        tensor = node.input[need.index] if len(node.input) > need.index else ""
        if tensor and not facts.is_constant(tensor):
            since = f" (TensorRT {need.until} and newer accept a tensor)" if need.until else ""
            problems.append(
                f"'{need.name}' ('{tensor}') must be a constant (an initializer) for "
                f"{_target(facts)}{since}; fold it with onnxsim or compute it at export time"
            )
    return problems


def _pooling(facts: GraphFacts, node: Any) -> list[str]:
    attrs = _attrs(node)
    problems = []
    kernel = list(attrs.get("kernel_shape", []))
    if kernel and len(kernel) not in (2, 3):
        problems.append(f"{len(kernel)}D pooling: TensorRT pools in 2D or 3D only")
    dilations = list(attrs.get("dilations", []))
    if facts.matrix.pool_dilations_must_be_one and any(d != 1 for d in dilations):
        problems.append(f"dilations {dilations}: TensorRT pools without dilation (all ones)")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        problems.append("the Indices output is not supported; use the pooled values only")
    return problems


def _layer_norm_outputs(facts: GraphFacts, node: Any) -> list[str]:
    if facts.matrix.layer_norm_single_output and any(node.output[1:]):
        return ["only the first output (Y) is supported; drop Mean/InvStdDev outputs"]
    return []


def _einsum(facts: GraphFacts, node: Any) -> list[str]:
    equation = _text(_attrs(node).get("equation", ""))
    problems = []
    bad = sorted(set(_EINSUM_CHARACTERS.findall(equation)))
    if bad:
        problems.append(
            f"equation '{equation}' uses {''.join(bad)}: the importer takes lowercase letters "
            "only; rename the subscripts"
        )
    if not facts.matrix.einsum_ellipsis:
        if "..." in equation:
            problems.append(f"equation '{equation}': ellipsis is not supported; name the axes")
        operands = equation.split("->")[0].split(",")
        if any(len(set(op.replace(" ", ""))) != len(op.replace(" ", "")) for op in operands):
            problems.append(
                f"equation '{equation}': diagonal terms (a subscript repeated in one operand) "
                "are not supported"
            )
    return problems


def _constant_values(facts: GraphFacts, node: Any) -> list[str]:
    if not facts.matrix.constant_sparse_or_strings_refused:
        return []
    refused = [a.name for a in node.attribute
               if a.name in ("sparse_value", "value_string", "value_strings")]  # fmt: skip
    return [f"attribute '{name}' is not supported; store a dense tensor" for name in refused]


def _deconvolution_rank(facts: GraphFacts, node: Any) -> list[str]:
    shape = facts.shapes.get(node.input[0]) if node.input else None
    if shape is not None and not 3 <= len(shape) <= 5:
        return [f"input of rank {len(shape)}: TensorRT deconvolves in 1D, 2D or 3D only"]
    return []


RULES: tuple[Callable[[GraphFacts], list[RuleViolation]], ...] = (
    check_operator_types,
    check_opset,
    check_data_types,
    check_quantization,
    check_resize,
    check_restrictions,
)

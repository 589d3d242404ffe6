"""ONNX graphs judged against ONNX-TensorRT's published rules: for each rule a tiny graph that
breaks it and one that keeps it, on TensorRT 8.6 and 10.x where the two differ."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.errors import ExportError
from restorekit.tensorrt.onnx_rules import RuleViolation, check_graph_for_tensorrt

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F32, F16, I8, U8, I32, I64 = (
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8,
    TensorProto.INT32, TensorProto.INT64,
)  # fmt: skip


def tensor(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def const(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def found(model, rule, trt="10.3"):
    return [v for v in check_graph_for_tensorrt(model, trt) if v.rule == rule]


def single(op, *, opset=17, in_type=F32, out_type=None, shape=(1, 3, 8, 8), inits=(), **kw):
    """One node reading ``x`` (plus initializers) and writing ``y``."""
    node = helper.make_node(op, ["x", *(i.name for i in inits)], ["y"], name="n", **kw)
    return make_model(
        [node], [tensor("x", in_type, shape)], [tensor("y", out_type or in_type, None)],
        inits, opset,
    )  # fmt: skip


# --- the API ------------------------------------------------------------------------------------


def test_a_clean_qdq_convolution_keeps_every_rule_on_both_releases():
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="wdq", axis=0),
        helper.make_node("Conv", ["xd", "wd", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = [
        const("s", 0.02), const("zp", 0, np.int8),
        const("wq", np.clip(np.round(w / 0.01), -127, 127), np.int8),
        const("ws", [0.01] * 4), const("wzp", [0] * 4, np.int8), const("b", [0.1] * 4),
    ]  # fmt: skip
    model = make_model(nodes, [tensor("x", F32, [1, 3, 8, 8])], [tensor("y", F32, None)], inits)
    assert check_graph_for_tensorrt(model, "10.3") == []
    assert check_graph_for_tensorrt(model, "8.6.1.6") == []


def test_violations_name_node_operator_and_rule():
    (v,) = found(single("Unique"), "operator")
    assert isinstance(v, RuleViolation) and (v.node, v.op_type) == ("n", "Unique")
    assert str(v).startswith("[operator] n (Unique): Unique is not supported by TensorRT 10.3")


@pytest.mark.parametrize("version", ["9.2.0", "11.0", "8.5.3"])
def test_releases_without_an_encoded_matrix_are_refused(version):
    with pytest.raises(ExportError, match="8.6 or 10.x"):
        check_graph_for_tensorrt(single("Relu"), version)


# --- 1. operator types --------------------------------------------------------------------------


def test_operators_outside_the_matrix_or_the_default_domain_are_flagged():
    assert found(single("Relu"), "operator") == []
    # DFT is marked unsupported (N) in both matrices; Unique too.
    assert [v.op_type for v in found(single("DFT"), "operator", "8.6")] == ["DFT"]
    custom = make_model(
        [helper.make_node("FusedGelu", ["x"], ["y"], name="c", domain="com.microsoft")],
        [tensor("x", F32, [1, 4])], [tensor("y", F32, [1, 4])],
    )  # fmt: skip
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    (v,) = found(custom, "operator")
    assert "domain 'com.microsoft'" in v.message and "plugin" in v.message


def test_gelu_is_an_operator_of_10_x_not_of_8_6():
    gelu = single("Gelu", opset=20)
    assert found(gelu, "operator", "10.3") == []
    assert [v.op_type for v in found(gelu, "operator", "8.6")] == ["Gelu"]


# --- 2. opset -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opset", "trt", "ok"),
    [(17, "8.6", True), (18, "8.6", False), (17, "10.3", True), (20, "10.3", True),
     (21, "10.3", False), (8, "10.3", False)],
)  # fmt: skip
def test_default_opset_must_be_in_the_release_range(opset, trt, ok):
    violations = found(single("Relu", opset=opset), "opset", trt)
    assert (violations == []) is ok
    if not ok:
        assert f"opset {opset}" in violations[0].message and "--opset" in violations[0].message


# --- 3. data types ------------------------------------------------------------------------------


def _dq(x_type, zp_type, trt="10.3"):
    x = np.array([3, -2, 1], dtype=helper.tensor_dtype_to_np_dtype(x_type))
    model = make_model(
        [helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")],
        [], [tensor("y", F32, [3])],
        [numpy_helper.from_array(x, "q"), const("s", 0.5),
         numpy_helper.from_array(np.zeros((), helper.tensor_dtype_to_np_dtype(zp_type)), "zp")],
    )  # fmt: skip
    return found(model, "dtype", trt)


def test_dequantize_linear_must_read_int8_not_an_int32_bias():
    assert _dq(I8, I8) == []
    (v,) = _dq(I32, I32)
    assert "INT32 (a quantized bias)" in v.message and "lists FP8, INT4, INT8 only" in v.message
    assert "keep this tensor float" in v.message
    (v86,) = _dq(I32, I32, "8.6")
    assert "lists INT8 only" in v86.message


def test_quantize_linear_must_write_int8():
    def q(*zp):
        inits = [const("s", 0.1), *zp]
        names = ["x", *(i.name for i in inits)]
        node = helper.make_node("QuantizeLinear", names, ["y"], name="q")
        out_type = I8 if zp else U8  # ONNX: no zero point means UINT8
        return make_model([node], [tensor("x", F32, [4])], [tensor("y", out_type, [4])], inits)

    assert found(q(const("zp", 0, np.int8)), "dtype") == []
    (v,) = found(q(), "dtype")
    assert "writes UINT8" in v.message and "INT8 zero point of 0" in v.message


def test_operator_inputs_need_a_type_the_matrix_lists():
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")]
    ints = make_model(nodes, [tensor("a", I32, [2, 2]), tensor("b", I32, [2, 2])],
                      [tensor("y", I32, [2, 2])])  # fmt: skip
    floats = make_model(nodes, [tensor("a", F16, [2, 2]), tensor("b", F16, [2, 2])],
                        [tensor("y", F16, [2, 2])])  # fmt: skip
    assert found(floats, "dtype") == []
    violations = found(ints, "dtype")
    assert [v.node for v in violations] == ["mm", "mm"]  # both inputs
    assert "lists MatMul for BF16, FP16, FP32 only" in violations[0].message


def test_int64_counts_as_int32_on_8_6_and_as_itself_on_10_x():
    add = make_model(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        [tensor("a", I64, [3]), tensor("b", I64, [3])], [tensor("y", I64, [3])],
    )  # fmt: skip
    assert found(add, "dtype", "8.6") == [] and found(add, "dtype", "10.3") == []
    # Pow lists no integer type in either matrix.
    pow_ = make_model(
        [helper.make_node("Pow", ["a", "b"], ["y"], name="pow")],
        [tensor("a", I64, [3]), tensor("b", I64, [3])], [tensor("y", I64, [3])],
    )  # fmt: skip
    assert len(found(pow_, "dtype", "8.6")) == 1 and len(found(pow_, "dtype", "10.3")) == 1


def test_types_tensorrt_lacks_and_uint8_inside_the_graph_are_flagged():
    to16 = single("Cast", to=TensorProto.INT16, out_type=TensorProto.INT16)
    assert any("INT16, a type TensorRT 10.3 does not have" in v.message
               for v in found(to16, "dtype"))  # fmt: skip
    nodes = [
        helper.make_node("Cast", ["x"], ["u"], name="to_u8", to=U8),
        helper.make_node("Cast", ["u"], ["y"], name="to_f32", to=F32),
    ]
    inner = make_model(nodes, [tensor("x", F32, [4])], [tensor("y", F32, [4])])
    (v,) = found(inner, "dtype", "10.3")
    assert v.node == "to_u8" and "only as a network input or output" in v.message
    as_output = single("Cast", to=U8, out_type=U8, shape=(4,))
    assert found(as_output, "dtype", "10.3") == []


def test_8_6_reads_qdq_scales_as_float32_only():
    inits = [numpy_helper.from_array(np.array(0.1, np.float16), "s"), const("zp", 0, np.int8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], name="q")]
    model = make_model(nodes, [tensor("x", F16, [4])], [tensor("y", I8, [4])], inits, opset=19)
    assert found(model, "dtype", "10.3") == []
    (v,) = found(model, "dtype", "8.6")
    assert "scale 's' is FP16" in v.message and "float32" in v.message


# --- 4. Q/DQ zero points, scales, axes ----------------------------------------------------------


def _qdq_pair(scale, zp=None, axis=None, x_shape=(4, 3, 2, 2), weight=False, opset=17):
    inputs = [tensor("x", F32, list(x_shape))]
    inits = [const("s", scale)]
    if weight:
        inputs = []
        inits.append(const("x", np.ones(x_shape)))
    if zp is not None:
        inits.append(const("zp", zp, np.int8))
    names = ["x", "s"] + (["zp"] if zp is not None else [])
    kw = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("QuantizeLinear", names, ["q"], name="q", **kw),
        helper.make_node("DequantizeLinear", ["q", *names[1:]], ["y"], name="dq", **kw),
    ]
    return make_model(nodes, inputs, [tensor("y", F32, list(x_shape))], inits, opset)


def test_zero_points_must_be_zero():
    assert found(_qdq_pair(0.1, 0), "qdq") == []
    violations = found(_qdq_pair(0.1, 3), "qdq")
    assert [v.node for v in violations] == ["q", "dq"]
    assert "not all zero (3)" in violations[0].message and "symmetric" in violations[0].message


def test_zero_point_is_optional_on_10_x_and_required_on_8_6():
    no_zp = _qdq_pair(0.1, None, opset=17)
    assert found(no_zp, "qdq", "10.3") == []
    assert [v.node for v in found(no_zp, "qdq", "8.6")] == ["q", "dq"]


def test_quantize_zero_point_must_be_of_a_quantized_type():
    inits = [const("s", 0.1), const("zp", 0, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"], name="q")]
    model = make_model(nodes, [tensor("x", F32, [4])], [tensor("y", U8, [4])], inits)
    assert any("zero point 'zp' is UINT8" in v.message for v in found(model, "qdq"))


@pytest.mark.parametrize("bad", [0.0, -0.5, float("inf"), float("nan")])
def test_scales_must_be_positive_and_finite(bad):
    assert found(_qdq_pair(0.25, 0), "qdq") == []
    violations = found(_qdq_pair(bad, 0), "qdq")
    assert len(violations) == 2 and "positive and finite" in violations[0].message


def test_per_channel_scales_need_constant_weights_and_an_explicit_axis():
    scales, zps = [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]
    assert found(_qdq_pair(scales, zps, axis=0, weight=True), "qdq") == []
    no_axis = found(_qdq_pair(scales, zps, weight=True), "qdq")
    assert no_axis and all("without an 'axis'" in v.message for v in no_axis)
    wrong_axis = found(_qdq_pair(scales, zps, axis=1, weight=True), "qdq")
    assert wrong_axis and "axis 1 of 'x' has 3" in wrong_axis[0].message
    activation = found(_qdq_pair(scales, zps, axis=0), "qdq")
    assert activation and all("per tensor only" in v.message for v in activation)


# --- 5. Resize ----------------------------------------------------------------------------------


def _resize(scales, opset=17, **attrs):
    inits = [const("roi", [], np.float32), const("scales", scales)]
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], name="rs", **attrs)
    return make_model([node], [tensor("x", F32, [1, 3, 8, 8])], [tensor("y", F32, None)],
                      inits, opset)  # fmt: skip


def test_resize_coordinate_transformations_the_importer_maps():
    ok = _resize([1, 1, 2, 2], mode="linear", coordinate_transformation_mode="half_pixel")
    assert found(ok, "resize") == []
    crop = _resize([1, 1, 2, 2], coordinate_transformation_mode="tf_crop_and_resize")
    (v,) = found(crop, "resize")
    assert "coordinate_transformation_mode 'tf_crop_and_resize' is not supported" in v.message
    nn = _resize([1, 1, 2, 2], coordinate_transformation_mode="tf_half_pixel_for_nn",
                 nearest_mode="floor")  # fmt: skip
    assert "round_prefer_floor" in found(nn, "resize")[0].message


def test_resize_antialias_and_aspect_ratio_policy_are_refused():
    assert found(_resize([1, 1, 2, 2], opset=18, mode="linear", antialias=0), "resize") == []
    (v,) = found(_resize([1, 1, 2, 2], opset=18, mode="linear", antialias=1), "resize")
    assert "antialias" in v.message
    policy = _resize([1, 1, 2, 2], opset=18, keep_aspect_ratio_policy="not_larger")
    assert "keep_aspect_ratio_policy" in found(policy, "resize")[0].message


@pytest.mark.parametrize(
    ("mode", "scales", "ok"),
    [("cubic", [1, 1, 2, 2], True), ("cubic", [1, 2, 2, 2], False),
     ("linear", [1, 2, 2, 2], True), ("linear", [2, 1, 2, 2], False),
     ("nearest", [2, 2, 2, 2], True)],
)  # fmt: skip
def test_cubic_resizes_two_innermost_axes_and_linear_three(mode, scales, ok):
    violations = found(_resize(scales, mode=mode), "resize")
    assert (violations == []) is ok
    if not ok:
        assert "innermost" in violations[0].message


# --- 6. other restrictions ----------------------------------------------------------------------


def _axes_from_shape(op, opset=17):
    """``op(x, axes)`` where ``axes`` is computed at run time (from x's shape)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Slice", ["shape", "zero", "one"], ["axes"], name="first_dim"),
        helper.make_node("Sub", ["axes", "one"], ["axes0"], name="minus_one"),
    ]
    inputs = ["x", "starts", "ends", "axes0"] if op == "Slice" else ["x", "axes0"]
    nodes.append(helper.make_node(op, inputs, ["y"], name="op"))
    inits = [const("zero", [0], np.int64), const("one", [1], np.int64),
             const("starts", [0], np.int64), const("ends", [1], np.int64)]  # fmt: skip
    return make_model(nodes, [tensor("x", F32, [1, 3, 4])], [tensor("y", F32, None)], inits, opset)


def _axes_constant(op, opset=17):
    inputs = ["x", "starts", "ends", "axes"] if op == "Slice" else ["x", "axes"]
    inits = [const("axes", [0], np.int64), const("starts", [0], np.int64),
             const("ends", [1], np.int64)]  # fmt: skip
    nodes = [helper.make_node(op, inputs, ["y"], name="op")]
    return make_model(nodes, [tensor("x", F32, [1, 3, 4])], [tensor("y", F32, None)], inits, opset)


@pytest.mark.parametrize(
    ("op", "opset", "refused", "accepted"),
    [("Slice", 17, ["8.6", "10.2"], ["10.3"]), ("Squeeze", 17, ["8.6", "10.3"], ["10.7"]),
     ("Unsqueeze", 17, ["8.6", "10.3", "10.15"], []),
     ("ReduceMean", 18, ["10.3", "10.15"], [])],
)  # fmt: skip
def test_axes_inputs_must_be_constant_until_the_release_that_accepts_tensors(
    op, opset, refused, accepted
):
    for trt in refused + accepted:
        assert found(_axes_constant(op, opset), "restriction", trt) == []
    for trt in refused:
        (v,) = found(_axes_from_shape(op, opset), "restriction", trt)
        assert v.node == "op" and "'axes' ('axes0') must be a constant" in v.message
    for trt in accepted:
        assert found(_axes_from_shape(op, opset), "restriction", trt) == []


def test_pooling_is_2d_or_3d_without_dilation_and_without_indices():
    ok = single("MaxPool", kernel_shape=[2, 2])
    assert found(ok, "restriction") == []
    one_d = single("MaxPool", kernel_shape=[2], shape=(1, 3, 8))
    assert "2D or 3D" in found(one_d, "restriction")[0].message
    dilated = single("MaxPool", kernel_shape=[2, 2], dilations=[2, 2])
    assert "dilations" in found(dilated, "restriction", "10.3")[0].message
    assert found(dilated, "restriction", "8.6") == []
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="n", kernel_shape=[2, 2])
    indices = make_model([node], [tensor("x", F32, [1, 3, 8, 8])],
                         [tensor("y", F32, None), tensor("idx", I64, None)])  # fmt: skip
    assert "Indices" in found(indices, "restriction")[0].message


def test_layer_normalization_has_one_output_on_10_x():
    inits = [const("g", [1.0] * 8), const("b", [0.0] * 8)]
    one = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln")
    three = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean", "inv"], name="ln")
    x = [tensor("x", F32, [2, 8])]
    single_out = make_model([one], x, [tensor("y", F32, None)], inits)
    all_out = make_model([three], x, [tensor(n, F32, None) for n in ("y", "mean", "inv")], inits)
    assert found(single_out, "restriction") == []
    assert "only the first output" in found(all_out, "restriction", "10.3")[0].message
    assert found(all_out, "restriction", "8.6") == []


def _einsum(equation, shapes):
    names = [f"i{k}" for k in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], name="e", equation=equation)
    inputs = [tensor(n, F32, list(s)) for n, s in zip(names, shapes, strict=True)]
    return make_model([node], inputs, [tensor("y", F32, None)])


def test_einsum_equations_the_importers_accept():
    assert found(_einsum("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), "restriction") == []
    upper = found(_einsum("bIj,bjk->bIk", [(2, 3, 4), (2, 4, 5)]), "restriction")
    assert upper and "lowercase letters only" in upper[0].message
    ellipsis = _einsum("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)])
    assert found(ellipsis, "restriction", "10.3") == []
    assert "ellipsis" in found(ellipsis, "restriction", "8.6")[0].message
    diagonal = _einsum("ii->i", [(3, 3)])
    assert found(diagonal, "restriction", "10.3") == []
    assert "diagonal" in found(diagonal, "restriction", "8.6")[0].message


def test_constant_string_values_are_refused_on_10_x():
    dense = helper.make_node("Constant", [], ["y"], name="c", value=const("v", [1.0]))
    strings = helper.make_node("Constant", [], ["y"], name="c", value_strings=["a", "b"])
    assert found(make_model([dense], [], [tensor("y", F32, [1])]), "restriction") == []
    model = make_model([strings], [], [tensor("y", TensorProto.STRING, [2])])
    assert "'value_strings' is not supported" in found(model, "restriction")[0].message

"""The FP16 plan's range rule on a toy graph (no PyTorch)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from restorekit.calibration.ranges import activation_ranges
from restorekit.export.fp16_plan import FP16_SAFE, fp16_overflow_risks, range_unsafe_nodes, to_fp16
from tests.toy_graphs import run_graph as _run


def test_out_of_range_node_is_kept_fp32():
    """A node whose output exceeds FP16's safe range stays FP32; converting it anyway overflows."""
    big = numpy_helper.from_array(np.array(3e4, np.float32), "big")
    small = numpy_helper.from_array(np.array(1e-7, np.float32), "small")
    nodes = [helper.make_node("Mul", ["input", "big"], ["h"], name="scale_up"),
             helper.make_node("Mul", ["h", "h"], ["h2"], name="square"),
             helper.make_node("Mul", ["h2", "small"], ["output"], name="scale_down")]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 1, 4, 4])],
        [big, small],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = np.full((1, 1, 4, 4), 0.9, np.float32)
    unsafe = range_unsafe_nodes(model, activation_ranges(model, [x]))
    # scale_down's output is small, but its input is not: it must read it in FP32
    assert set(unsafe) == {"scale_up", "square", "scale_down"} and "65504" in unsafe["square"]
    ranges = activation_ranges(model, [x])
    # converted naively, FP16 tensors would hold values beyond 65504 (inf on a GPU; ONNX Runtime's
    # CPU provider computes such FP16 ops in FP32 and would not show it)
    assert fp16_overflow_risks(to_fp16(model, []), ranges) == ["h2"]  # h = 27000 still fits
    assert fp16_overflow_risks(to_fp16(model, list(unsafe)), ranges) == []
    planned = _run(to_fp16(model, list(unsafe)), x)
    assert np.allclose(planned, (0.9 * 3e4) ** 2 * 1e-7, rtol=1e-3)
    assert FP16_SAFE < 65504

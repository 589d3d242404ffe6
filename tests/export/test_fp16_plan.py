"""The FP16 plan on toy graphs (no PyTorch): the range rule and the release trials."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from restorekit.calibration.ranges import activation_ranges
from restorekit.export.compare import score_graph
from restorekit.export.fp16_plan import (
    FP16_SAFE,
    fp16_overflow_risks,
    plan_fp16,
    range_unsafe_nodes,
    to_fp16,
)
from restorekit.metrics import Agreement
from tests.toy_graphs import run_graph as _run
from tests.toy_graphs import toy_model


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


def _fragile_chain() -> onnx.ModelProto:
    """input -> Softmax -> Softmax -> ReduceL2 -> Mul: two fragile types, three fragile nodes."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Softmax", ["input"], ["s1"], name="soft1", axis=-1),
             helper.make_node("Softmax", ["s1"], ["s2"], name="soft2", axis=-1),
             helper.make_node("ReduceL2", ["s2"], ["r"], name="norm", axes=[-1], keepdims=1),
             helper.make_node("Mul", ["r", "two"], ["output"], name="double")]  # fmt: skip
    return toy_model(nodes, [two])


def _computes_in_fp16(candidate: onnx.ModelProto) -> set[str]:
    """Names of the candidate's nodes whose first output is FP16 (read off the types)."""
    inferred = onnx.shape_inference.infer_shapes(candidate)
    half = {v.name for v in inferred.graph.value_info
            if v.type.tensor_type.elem_type == TensorProto.FLOAT16}  # fmt: skip
    return {n.name for n in candidate.graph.node if n.output[0] in half}


def _tiles() -> np.ndarray:
    return np.random.default_rng(3).random((2, 3, 4, 4), dtype=np.float32)


def test_release_all_fragile_types_in_one_trial_when_it_meets_the_bar():
    """All fragile types pass together: one graph is scored, all are released, and the final
    graph computes them in FP16 and agrees with ONNX Runtime's FP32 output."""
    model, tiles = _fragile_chain(), _tiles()
    reference = np.concatenate([_run(model, t[None]) for t in tiles])
    scored = []

    def evaluate(candidate):
        scored.append(candidate)
        return score_graph(candidate.SerializeToString(), tiles, reference, 1.0)

    plan, final = plan_fp16(model, [tiles[:1]], evaluate, min_psnr=30.0)
    assert len(scored) == 1
    assert [t["release"] for t in plan.trail] == ["Softmax, ReduceL2"]
    assert plan.trail[0]["nodes"] == 3 and plan.trail[0]["kept_in_fp16"]
    assert plan.released == ["Softmax", "ReduceL2"] and plan.kept == {}
    assert {"soft1", "soft2", "norm"} <= _computes_in_fp16(final)
    out = np.concatenate([_run(final, t[None]) for t in tiles])
    assert np.allclose(out, reference, atol=2e-3)


def test_release_one_type_at_a_time_when_all_together_miss():
    """A type that fails in FP16 (here: the evaluator fails any graph whose ReduceL2 computes in
    FP16) sends the plan back to one trial per type: Softmax is released, ReduceL2 kept FP32."""
    model, tiles = _fragile_chain(), _tiles()
    reference = np.concatenate([_run(model, t[None]) for t in tiles])
    fine = score_graph(model.SerializeToString(), tiles, reference, 1.0)
    broken = Agreement(max_abs=1.0, psnr=0.0, ssim=0.0, nonfinite=0)

    def evaluate(candidate):
        return broken if "norm" in _computes_in_fp16(candidate) else fine

    plan, final = plan_fp16(model, [tiles[:1]], evaluate, min_psnr=30.0)
    assert [(t["release"], t["kept_in_fp16"]) for t in plan.trail] == [
        ("Softmax, ReduceL2", False), ("Softmax", True), ("ReduceL2", False)]  # fmt: skip
    assert plan.released == ["Softmax"] and set(plan.kept) == {"norm"}
    assert "ReduceL2" in plan.kept["norm"]
    fp16 = _computes_in_fp16(final)
    assert {"soft1", "soft2"} <= fp16 and "norm" not in fp16

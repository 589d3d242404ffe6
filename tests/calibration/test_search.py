"""Per-tensor PSNR of a quantized graph against its FP32 graph, computed inside one merged graph,
checked against the tensors themselves (exposed whole from each graph and compared with numpy)."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from restorekit.calibration.ranges import session_exposing
from restorekit.calibration.search import (
    NO_NOISE_DB,
    added_noise_db,
    comparison_graph,
    layer_sensitivity,
    tensor_psnr,
)
from restorekit.metrics import psnr


def _model(nodes, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2, 6, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Conv -> Relu -> Conv, and the same with int8 fake quantization of both convolutions' input."""
    rng = np.random.default_rng(1)
    inits = {
        "w1": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "w2": rng.standard_normal((2, 4, 3, 3)).astype(np.float32),
        "s": np.float32(0.02),
        "z": np.int8(0),
    }

    def chain(quantize: bool) -> list[onnx.NodeProto]:
        nodes, first, second = [], "input", "r"
        if quantize:
            nodes += [
                helper.make_node("QuantizeLinear", ["input", "s", "z"], ["iq"], name="q1"),
                helper.make_node("DequantizeLinear", ["iq", "s", "z"], ["idq"], name="dq1"),
                helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="q2"),
                helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rdq"], name="dq2"),
            ]
            first, second = "idq", "rdq"
        return [
            nodes[0] if quantize else None,
            nodes[1] if quantize else None,
            helper.make_node("Conv", [first, "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"], name="relu"),
            *(nodes[2:] if quantize else []),
            helper.make_node("Conv", [second, "w2"], ["output"], name="conv2", pads=[1, 1, 1, 1]),
        ]

    fp32 = _model([n for n in chain(False) if n is not None], inits)
    qdq = _model([n for n in chain(True) if n is not None], inits)
    return fp32, qdq


def test_in_graph_psnr_equals_the_exposed_tensors_compared_with_numpy():
    fp32, qdq = _pair()
    names = ["a", "r", "output"]
    rng = np.random.default_rng(0)
    tiles = rng.uniform(-1, 1, (3, 2, 6, 6)).astype(np.float32)
    got = tensor_psnr(fp32, qdq, names, tiles)
    ref = session_exposing(fp32, names, None).run(names, {"input": tiles})
    out = session_exposing(qdq, names, None).run(names, {"input": tiles})
    for name, r, q in zip(names, ref, out, strict=True):
        peak = float(np.abs(r).max())
        want = psnr(q / peak, r / peak)
        assert math.isfinite(want) and 10 < want < 80, (name, want)  # a real, finite difference
        assert abs(got[name] - want) < 1e-3, (name, got[name], want)


def test_identical_tensors_score_200_db():
    fp32, _ = _pair()
    tiles = np.random.default_rng(0).uniform(-1, 1, (2, 2, 6, 6)).astype(np.float32)
    assert tensor_psnr(fp32, fp32, ["a", "output"], tiles) == {"a": 200.0, "output": 200.0}


def test_a_shared_dequantize_is_copied_per_consumer_and_scores_stay_exact():
    # ONNX Runtime would add those copies itself, as nodes that run last (see _unique_dequantize).
    rng = np.random.default_rng(2)
    inits = {
        "wa": rng.standard_normal((2, 2, 3, 3)).astype(np.float32),
        "wb": rng.standard_normal((2, 2, 3, 3)).astype(np.float32),
        "s": np.float32(0.01),
        "z": np.int8(0),
    }

    def branches(source: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("Conv", [source, "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
            helper.make_node("Conv", [source, "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["a", "b"], ["output"], name="add"),
        ]

    fp32 = _model(branches("input"), inits)
    qdq = _model(
        [
            helper.make_node("QuantizeLinear", ["input", "s", "z"], ["iq"], name="q"),
            helper.make_node("DequantizeLinear", ["iq", "s", "z"], ["idq"], name="dq"),
            *branches("idq"),
        ],
        inits,
    )
    names = ["a", "b", "output"]
    merged = comparison_graph(fp32, qdq, names)
    dq_outputs = {n.output[0] for n in merged.graph.node if n.op_type == "DequantizeLinear"}
    consumers = [i for n in merged.graph.node for i in n.input if i in dq_outputs]
    assert len(dq_outputs) == 2 and sorted(consumers) == sorted(dq_outputs)
    tiles = rng.uniform(-1, 1, (2, 2, 6, 6)).astype(np.float32)
    got = tensor_psnr(fp32, qdq, names, tiles)
    ref = session_exposing(fp32, names, None).run(names, {"input": tiles})
    out = session_exposing(qdq, names, None).run(names, {"input": tiles})
    for name, r, q in zip(names, ref, out, strict=True):
        peak = float(np.abs(r).max())
        assert abs(got[name] - psnr(q / peak, r / peak)) < 1e-3, name


def test_layers_on_integer_tensors_rank_last_instead_of_failing():
    # ONNX Runtime's CPU layout lists Concat as quantizable; a Concat of shape values is int64.
    fp32, qdq = _pair()
    for model in (fp32, qdq):
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "m1"))
        model.graph.node.extend([
            helper.make_node("Shape", ["output"], ["shape"], name="shape"),
            helper.make_node("Concat", ["shape", "m1"], ["dims"], name="dims", axis=0),
        ])  # fmt: skip
        model.graph.output.append(helper.make_tensor_value_info("dims", TensorProto.INT64, None))
    tiles = np.random.default_rng(0).uniform(-1, 1, (2, 2, 6, 6)).astype(np.float32)
    scores = layer_sensitivity(fp32, qdq, ["conv2", "dims"], tiles)
    assert scores["dims"] == NO_NOISE_DB < scores["conv2"]


def test_layers_rank_by_the_noise_they_add_not_by_the_decibels_they_lose():
    # exact input -> 62 dB "loses" 138 dB but adds 6.3e-7 of the peak power; 36 -> 35 dB loses
    # 1 dB but adds 10**-3.5 - 10**-3.6 = 6.5e-5 of it: the late layer is the worse one.
    early, late = added_noise_db(200.0, 62.0), added_noise_db(36.0, 35.0)
    assert late > early
    assert abs(early - -62.0) < 1e-6
    assert abs(late - 10 * math.log10(10**-3.5 - 10**-3.6)) < 1e-9
    assert added_noise_db(40.0, 41.0) == NO_NOISE_DB  # a layer can shrink relative noise

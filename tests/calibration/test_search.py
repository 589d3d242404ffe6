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


def _weights(rng, *shapes, scale: float) -> dict:
    weights = {
        f"w{k}": rng.standard_normal(shape).astype(np.float32) for k, shape in enumerate(shapes)
    }
    return weights | {"s": np.float32(scale), "z": np.int8(0)}


def _fake_quant(tensor: str, tag: str) -> list[onnx.NodeProto]:
    """int8 Q/DQ of ``tensor`` into ``<tensor>dq``."""
    return [
        helper.make_node("QuantizeLinear", [tensor, "s", "z"], [f"{tensor}q"], name=f"q{tag}"),
        helper.make_node("DequantizeLinear", [f"{tensor}q", "s", "z"], [f"{tensor}dq"], name=f"dq{tag}"),
    ]  # fmt: skip


def _conv(source: str, weight: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [source, weight], [out], name=f"conv_{out}", pads=[1, 1, 1, 1])


def _pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Conv -> Relu -> Conv, and the same with int8 fake quantization of both convolutions' input."""
    inits = _weights(np.random.default_rng(1), (4, 2, 3, 3), (2, 4, 3, 3), scale=0.02)
    relu = helper.make_node("Relu", ["a"], ["r"], name="relu")
    fp32 = _model([_conv("input", "w0", "a"), relu, _conv("r", "w1", "output")], inits)
    qdq = _model(
        [*_fake_quant("input", "1"), _conv("inputdq", "w0", "a"), relu,
         *_fake_quant("r", "2"), _conv("rdq", "w1", "output")],
        inits,
    )  # fmt: skip
    return fp32, qdq


def _assert_equals_numpy(fp32, qdq, names, tiles, got) -> list[float]:
    """``got`` (in-graph PSNR per name) against both graphs' tensors exposed whole, in numpy."""
    ref = session_exposing(fp32, names, None).run(names, {"input": tiles})
    out = session_exposing(qdq, names, None).run(names, {"input": tiles})
    wanted = []
    for name, r, q in zip(names, ref, out, strict=True):
        peak = float(np.abs(r).max())
        wanted.append(psnr(q / peak, r / peak))
        assert abs(got[name] - wanted[-1]) < 1e-3, (name, got[name], wanted[-1])
    return wanted


def test_in_graph_psnr_equals_the_exposed_tensors_compared_with_numpy():
    fp32, qdq = _pair()
    names = ["a", "r", "output"]
    tiles = np.random.default_rng(0).uniform(-1, 1, (3, 2, 6, 6)).astype(np.float32)
    wanted = _assert_equals_numpy(fp32, qdq, names, tiles, tensor_psnr(fp32, qdq, names, tiles))
    assert all(math.isfinite(w) and 10 < w < 80 for w in wanted), wanted  # real differences


def test_identical_tensors_score_200_db():
    fp32, _ = _pair()
    tiles = np.random.default_rng(0).uniform(-1, 1, (2, 2, 6, 6)).astype(np.float32)
    assert tensor_psnr(fp32, fp32, ["a", "output"], tiles) == {"a": 200.0, "output": 200.0}


def test_a_shared_dequantize_is_copied_per_consumer_and_scores_stay_exact():
    # ONNX Runtime would add those copies itself, as nodes that run last (see _unique_dequantize).
    rng = np.random.default_rng(2)
    inits = _weights(rng, (2, 2, 3, 3), (2, 2, 3, 3), scale=0.01)

    def branches(source: str) -> list[onnx.NodeProto]:
        add = helper.make_node("Add", ["a", "b"], ["output"], name="add")
        return [_conv(source, "w0", "a"), _conv(source, "w1", "b"), add]

    fp32 = _model(branches("input"), inits)
    qdq = _model([*_fake_quant("input", ""), *branches("inputdq")], inits)
    names = ["a", "b", "output"]
    merged = comparison_graph(fp32, qdq, names)
    dq_outputs = {n.output[0] for n in merged.graph.node if n.op_type == "DequantizeLinear"}
    consumers = [i for n in merged.graph.node for i in n.input if i in dq_outputs]
    assert len(dq_outputs) == 2 and sorted(consumers) == sorted(dq_outputs)
    tiles = rng.uniform(-1, 1, (2, 2, 6, 6)).astype(np.float32)
    _assert_equals_numpy(fp32, qdq, names, tiles, tensor_psnr(fp32, qdq, names, tiles))


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
    scores = layer_sensitivity(fp32, qdq, ["conv_output", "dims"], tiles)
    assert scores["dims"] == NO_NOISE_DB < scores["conv_output"]


def test_layers_rank_by_the_noise_they_add_not_by_the_decibels_they_lose():
    # exact input -> 62 dB "loses" 138 dB but adds 6.3e-7 of the peak power; 36 -> 35 dB loses
    # 1 dB but adds 10**-3.5 - 10**-3.6 = 6.5e-5 of it: the late layer is the worse one.
    early, late = added_noise_db(200.0, 62.0), added_noise_db(36.0, 35.0)
    assert late > early
    assert abs(early - -62.0) < 1e-6
    assert abs(late - 10 * math.log10(10**-3.5 - 10**-3.6)) < 1e-9
    assert added_noise_db(40.0, 41.0) == NO_NOISE_DB  # a layer can shrink relative noise


def test_restore_float_gives_a_reused_bias_name_back_as_a_float_weight():
    """ONNX Runtime's quantizer names a bias's DequantizeLinear output after the bias itself; a
    layer taken out of INT8 must read the float bias under a name of its own (PANet's INT8 search
    once built a graph with ``model.tail.0.bias`` defined twice)."""
    from restorekit.calibration.search import restore_float

    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.3, (2, 2, 3, 3)).astype(np.float32)
    b = np.array([0.25, -0.5], np.float32)
    fp32 = _model(
        [helper.make_node("Conv", ["input", "w", "b"], ["output"], name="conv", pads=[1] * 4)],
        {"w": w, "b": b},
    )
    scale = np.float32(0.01)
    qdq = _model(
        [
            helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"], name="q"),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
            helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], ["b"], name="bias_dq"),
            helper.make_node("Conv", ["xd", "w", "b"], ["output"], name="conv", pads=[1] * 4),
        ],
        {"w": w, "s": scale, "z": np.int8(0), "bq": np.round(b / 0.001).astype(np.int32),
         "bs": np.float32(0.001), "bz": np.int32(0)},
    )  # fmt: skip
    restored = restore_float(qdq, fp32, ["conv"])
    defined = [i.name for i in restored.graph.initializer]
    defined += [o for n in restored.graph.node for o in n.output]
    assert len(defined) == len(set(defined)), defined  # ONNX Runtime refuses the graph otherwise
    assert not any(n.op_type == "DequantizeLinear" for n in restored.graph.node)
    x = np.random.default_rng(3).random((1, 2, 6, 6), dtype=np.float32)
    got = session_exposing(restored, ["output"], None).run(["output"], {"input": x})[0]
    want = session_exposing(fp32, ["output"], None).run(["output"], {"input": x})[0]
    assert np.array_equal(got, want)

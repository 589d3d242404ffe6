"""The INT8 layouts on toy graphs (no PyTorch): what each quantizes, and that the result runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from restorekit.calibration.qdq import quantizable_nodes
from restorekit.metrics import psnr
from tests.toy_graphs import run_graph as _run
from tests.toy_graphs import toy_model as _toy_model


def test_ort_cpu_layout_keeps_attention_products_and_grouped_convs_in_float(tmp_path):
    """Attention (q @ k^T, Softmax, p @ v) and grouped convolutions stay float in the CPU layout,
    so ONNX Runtime's optimiser finds no QLinearSoftmax / QLinearMatMul to fuse, while the
    ordinary convolution still runs as QLinearConv."""
    from restorekit.calibration.feeds import CalibrationSet
    from restorekit.calibration.qdq import qdq_from_model

    rng = np.random.default_rng(3)
    w = lambda *shape: numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32))  # noqa: E731
    inits = [w(8, 3, 3, 3), w(8, 1, 3, 3), numpy_helper.from_array(np.array([1, 8, 16], np.int64))]
    for init, name in zip(inits, ["w", "wg", "shape"], strict=True):
        init.name = name
    model = _toy_model(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node(
                "Conv", ["c", "wg"], ["g"], name="grouped", group=8, pads=[1, 1, 1, 1]
            ),
            helper.make_node("Reshape", ["g", "shape"], ["t"], name="tokens"),  # (1, 8, 16)
            helper.make_node("Transpose", ["t"], ["tt"], name="tt", perm=[0, 2, 1]),
            helper.make_node("MatMul", ["tt", "t"], ["logits"], name="qk"),  # (1, 16, 16)
            helper.make_node("Softmax", ["logits"], ["p"], name="softmax", axis=-1),
            helper.make_node("MatMul", ["t", "p"], ["output"], name="pv"),  # (1, 8, 16)
        ],
        inits,
    )
    # tokens/tt feed only the float attention products: float islands, not worth a Q/DQ pair
    assert quantizable_nodes(model, "ort-cpu") == ["conv"]
    tiles = rng.random((4, 3, 4, 4), dtype=np.float32)
    calibration = CalibrationSet(tiles=tiles, fingerprint="test", source="test", images=4)
    qdq = qdq_from_model(model, calibration, "minmax", layout="ort-cpu").model
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "QLinearConv" in ops
    assert not ops & {"QLinearSoftmax", "QLinearMatMul", "MatMulInteger"}, ops
    ref, got = _run(model, tiles[:1]), _run(qdq, tiles[:1])
    assert psnr(got, ref) > 30.0


def test_ort_cpu_layout_keeps_softmax_in_float():
    # uint8 attention weights cost the demo PANet 20 dB (see calibration/layouts/ort_cpu.py)
    model = _toy_model(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], name="conv"),
            helper.make_node("Softmax", ["c"], ["p"], name="softmax", axis=-1),
            helper.make_node("Mul", ["p", "c"], ["m"], name="mul"),
            helper.make_node("Conv", ["m", "w"], ["output"], name="conv2"),
        ],
        [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")],
        channels=2,
    )
    assert quantizable_nodes(model, "ort-cpu") == ["conv", "mul", "conv2"]


def test_ort_cpu_layout_keeps_float_islands_out_of_int8():
    """A node whose results feed no integer computation would only add a Q/DQ pair: kept float,
    through chains (Reshape -> Transpose before a Softmax), and again once the search has taken
    out the integer node after it. Convolutions are never dropped."""
    from restorekit.calibration.feeds import CalibrationSet
    from restorekit.calibration.layouts.ort_cpu import float_islands
    from restorekit.calibration.qdq import qdq_from_model

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in [("w1", (4, 3, 3, 3)), ("w2", (4, 4, 3, 3)), ("k", (1, 4, 1, 1))]]  # fmt: skip
    inits.append(numpy_helper.from_array(np.array([1, 4, 16], np.int64), "shape"))
    model = _toy_model(
        [
            helper.make_node("Conv", ["input", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["a", "k"], ["b"], name="m1"),
            helper.make_node("Conv", ["b", "w2"], ["c"], name="c2", pads=[1, 1, 1, 1]),
            helper.make_node("Reshape", ["c", "shape"], ["r"], name="r"),
            helper.make_node("Transpose", ["r"], ["t"], name="tr", perm=[0, 2, 1]),
            helper.make_node("Softmax", ["t"], ["p"], name="softmax", axis=-1),
            helper.make_node("Add", ["p", "p"], ["output"], name="add"),
        ],
        inits,
    )
    every = ["c1", "m1", "c2", "r", "tr", "add"]
    assert sorted(float_islands(model, every)) == ["add", "r", "tr"]
    assert quantizable_nodes(model, "ort-cpu") == ["c1", "m1", "c2"]
    assert sorted(float_islands(model, ["c1", "m1"])) == ["m1"]  # c2 taken out: m1 feeds float

    calibration = CalibrationSet(tiles=rng.random((4, 3, 4, 4), dtype=np.float32),
                                 fingerprint="test", source="test", images=4)  # fmt: skip

    def quantized_outputs(qdq: onnx.ModelProto) -> set[str]:
        """Tensors that go through a QuantizeLinear (inputs of Q nodes)."""
        return {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}

    plain = qdq_from_model(model, calibration, "minmax", layout="ort-cpu")
    assert plain.quantized_nodes == ("c1", "m1", "c2")
    assert {"a", "b", "c"} <= quantized_outputs(plain.model)
    assert not {"r", "t", "p", "output"} & quantized_outputs(plain.model)
    searched = qdq_from_model(model, calibration, "minmax", exclude=["c2"], layout="ort-cpu")
    assert searched.quantized_nodes == ("c1",)
    assert "b" not in quantized_outputs(searched.model)
    assert (
        psnr(_run(searched.model, calibration.tiles[:1]), _run(model, calibration.tiles[:1])) > 30
    )


def test_tensorrt_layout_keeps_biases_float_and_the_published_rules():
    """TensorRT's layout quantizes the inputs of a convolution, never its bias: ONNX-TensorRT
    lists DequantizeLinear on INT8 only, so an INT32 bias DQ would be read as another type."""
    from restorekit.calibration.feeds import CalibrationSet
    from restorekit.calibration.qdq import qdq_from_model
    from restorekit.tensorrt.onnx_rules import check_graph_for_tensorrt

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.3, 4).astype(np.float32), "b")]  # fmt: skip
    model = _toy_model(
        [helper.make_node("Conv", ["input", "w", "b"], ["output"], name="conv", pads=[1] * 4)],
        inits,
    )
    tiles = rng.random((4, 3, 4, 4), dtype=np.float32)
    calibration = CalibrationSet(tiles=tiles, fingerprint="test", source="test", images=4)
    qdq = qdq_from_model(model, calibration, "minmax").model
    inits_after = {i.name: i for i in qdq.graph.initializer}
    conv = next(n for n in qdq.graph.node if n.op_type == "Conv")
    assert conv.input[2] == "b" and inits_after["b"].data_type == onnx.TensorProto.FLOAT
    dq_inputs = [n.input[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"]
    assert {inits_after[i].data_type for i in dq_inputs if i in inits_after} == {
        onnx.TensorProto.INT8
    }
    assert check_graph_for_tensorrt(qdq, "10.3") == []
    assert psnr(_run(qdq, tiles[:1]), _run(model, tiles[:1])) > 30.0


def test_tensorrt_layout_calibrates_only_the_inputs_it_quantizes(monkeypatch):
    """ONNX Runtime calibrates the inputs *and outputs* of every operator it may quantize; the
    TensorRT layout reads only the inputs, so it calibrates only those (half the tensors of
    MPRNet-deblur, each a graph output and a histogram per tile). The Q/DQ graph must be the same
    byte for byte as with ONNX Runtime's own choice, for every method."""
    import contextlib

    from restorekit.calibration import qdq as qdq_module
    from restorekit.calibration.feeds import CalibrationSet
    from restorekit.calibration.layouts import layout_named

    rng = np.random.default_rng(5)
    w = lambda name, *shape: numpy_helper.from_array(  # noqa: E731
        rng.normal(0, 0.3, shape).astype(np.float32), name
    )
    model = _toy_model(
        [
            helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c2", "input"], ["s"], name="skip"),
            helper.make_node("Conv", ["s", "w3"], ["output"], name="conv3", pads=[1, 1, 1, 1]),
        ],
        [w("w1", 8, 3, 3, 3), w("w2", 3, 8, 3, 3), w("w3", 3, 3, 3, 3)],
    )
    settings = layout_named("tensorrt").quantizer_settings(model, ["conv1", "conv2", "conv3"])
    assert settings.calibrated == {"input", "r1", "s"}  # not c1, c2, output
    tiles = rng.random((6, 3, 4, 4), dtype=np.float32)
    calibration = CalibrationSet(tiles=tiles, fingerprint="test", source="test", images=6)
    for method in ("entropy", "minmax", "percentile"):
        ours = qdq_module.qdq_from_model(model, calibration, method, layout="tensorrt")
        with monkeypatch.context() as m:
            m.setattr(qdq_module, "_calibrating_only", lambda _t: contextlib.nullcontext())
            theirs = qdq_module.qdq_from_model(model, calibration, method, layout="tensorrt")
        assert ours.model.SerializeToString() == theirs.model.SerializeToString(), method
        assert ours.activation_amax == theirs.activation_amax

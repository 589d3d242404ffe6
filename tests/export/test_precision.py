"""FP16 and INT8 graphs: checked here with ONNX Runtime against FP32 on inputs the exporter never saw,
plus the structure TensorRT's explicit quantization needs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from restorekit.calibration.cache import read_cache
from restorekit.calibration.search import restore_float
from restorekit.errors import RestoreKitError, VerificationError
from restorekit.metrics import psnr
from tests.toy_graphs import run_graph as _run

pytest.importorskip("torch")

from restorekit.export import ExportOptions, export_model  # noqa: E402
from restorekit.models import resolve  # noqa: E402

TINY = resolve("mprnet").spec.tiny


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    return export_model(ExportOptions(model="mprnet.derain", tile=(32, 32), batch=2, output_dir=out,
                                      build_overrides=TINY, precision="fp16", calib_count=4))  # fmt: skip


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    return export_model(ExportOptions(model="mprnet.derain", tile=(32, 32), batch=2, output_dir=out,
                                      build_overrides=TINY, precision="int8", calib_count=6,
                                      calib_method="minmax", min_psnr=30.0))  # fmt: skip


def test_fp16_graph_is_fp16_inside_fp32_outside_and_accurate(fp16):
    model = onnx.load(str(fp16.onnx_path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in model.graph.initializer if i.name in conv_weights}
    assert dtypes == {TensorProto.FLOAT16}
    x = np.random.default_rng(3).random((2, 3, 32, 32), dtype=np.float32)
    ref, got = _run(str(fp16.fp32.onnx_path), x), _run(str(fp16.onnx_path), x)
    assert np.isfinite(got).all()
    assert psnr(got, ref) >= 45.0
    m = fp16.manifest
    assert (
        m.precision.precision == "fp16" and fp16.onnx_path.name == "mprnet.derain.fp16.32x32.onnx"
    )
    report = json.loads(fp16.report_path.read_text())
    assert report["fp16"]["passed"] and "release_trail" in report["fp16"]


def test_int8_graph_follows_tensorrt_explicit_quantization(int8):
    model = onnx.load(str(int8.onnx_path))
    nodes = model.graph.node
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in nodes for o in n.output}
    consumers = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    quantized_convs = [n for n in nodes if n.op_type == "Conv" and n.input[0] in producers
                       and producers[n.input[0]].op_type == "DequantizeLinear"]  # fmt: skip
    assert quantized_convs
    for conv in quantized_convs:
        w_dq = producers[conv.input[1]]
        assert w_dq.op_type == "DequantizeLinear"
        w_scale = inits[w_dq.input[1]]
        out_channels = inits[w_dq.input[0]].shape[0]
        assert w_scale.shape == (out_channels,)  # per-channel weights
        assert inits[w_dq.input[0]].dtype == np.int8
        a_scale = inits[producers[conv.input[0]].input[1]]
        assert a_scale.size == 1  # per-tensor activations
    for n in nodes:  # symmetric: every zero point is 0
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            assert not np.any(inits[n.input[2]])
    # biases stay float: DequantizeLinear reads int8 only (ONNX-TensorRT's operator matrix)
    assert {inits[n.input[0]].dtype for n in nodes if n.op_type == "DequantizeLinear"
            and n.input[0] in inits} == {np.dtype(np.int8)}  # fmt: skip
    # Q/DQ feed only the quantized operator types
    for n in nodes:
        if n.op_type == "DequantizeLinear":
            assert {c.op_type for c in consumers[n.output[0]]} <= {
                "Conv",
                "ConvTranspose",
                "MatMul",
                "Gemm",
            }


def test_int8_accuracy_manifest_and_cache(int8):
    x = np.random.default_rng(4).random((2, 3, 32, 32), dtype=np.float32)
    ref, got = _run(str(int8.fp32.onnx_path), x), _run(str(int8.onnx_path), x)
    assert np.isfinite(got).all() and psnr(got, ref) > 25.0
    m = int8.manifest
    assert m.precision.precision == "int8" and m.calibration.method == "minmax"
    assert m.calibration.count == 6 and len(m.calibration.fingerprint) == 64
    cache = read_cache(int8.onnx_path.with_name("mprnet.derain.int8.32x32.calib.cache"))
    assert cache.header() == "TRT-100300-MinMaxCalibration"
    fp32_tensors = {o for n in onnx.load(str(int8.fp32.onnx_path)).graph.node for o in n.output}
    cache.check_tensors(fp32_tensors | {"input"})
    # cached scales equal the activation scales of the Q/DQ graph, read here from the graph itself
    model = onnx.load(str(int8.onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            assert cache.scales[n.input[0]] == pytest.approx(float(inits[n.input[1]]), rel=1e-6)


def test_tensorrt_min_max_scales_are_the_calibration_tiles_max_abs(int8, ort_cpu):
    """Min-max ranges are measured inside the graph for the TensorRT layout too; each activation
    scale is the largest |value| of its tensor over the calibration tiles / 127, computed here
    from the tensors exposed whole and reduced with numpy."""
    from restorekit.calibration.qdq import qdq_from_model
    from restorekit.runtime.ort_backend import OrtOptions, ort_session

    fp32, calibration, _ = ort_cpu
    model = qdq_from_model(fp32, calibration, "minmax").model
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scales = {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] not in inits}  # fmt: skip
    assert len(scales) > 10
    names = sorted(scales)
    # The tensors exposed whole, from a session optimised like the in-graph statistics' one (its
    # fused kernels round differently from unfused ones): numpy then takes the max here.
    exposed = onnx.ModelProto()
    exposed.CopyFrom(fp32)
    del exposed.graph.output[:]
    exposed.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                for n in names)  # fmt: skip
    session = ort_session(exposed.SerializeToString(), OrtOptions(graph_optimization="all"))
    amax = np.zeros(len(names))
    for tile in calibration.batches(1):
        got = session.run(names, {"input": tile})
        amax = np.maximum(amax, [np.abs(t).max() for t in got])
    for name, a in zip(names, amax, strict=True):
        # float32 scale, computed by ONNX Runtime as 2 * amax / 254 in float32
        assert scales[name] == pytest.approx(a / 127.0, rel=1e-5), name


def test_taking_every_layer_out_of_int8_gives_fp32_back(int8):
    qdq, fp32 = onnx.load(str(int8.onnx_path)), onnx.load(str(int8.fp32.onnx_path))
    convs = [n.name for n in qdq.graph.node if n.op_type == "Conv"]
    restored = restore_float(qdq, fp32, convs)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in restored.graph.node)
    x = np.random.default_rng(5).random((1, 3, 32, 32), dtype=np.float32)
    assert np.abs(_run(restored, x) - _run(str(int8.fp32.onnx_path), x)).max() < 1e-5


@pytest.mark.parametrize("layout", ["tensorrt", "ort-cpu"])
def test_unreachable_target_stops_with_what_the_search_reached(tmp_path, layout):
    with pytest.raises(VerificationError, match="target 80 dB") as err:
        export_model(ExportOptions(model="mprnet.derain", tile=(32, 32), output_dir=tmp_path,
                                   build_overrides=TINY, precision="int8", calib_count=4,
                                   calib_method="minmax", min_psnr=80.0, int8_max_excluded=0.05,
                                   int8_layout=layout))  # fmt: skip
    assert "FP32 graph is fine" in str(err.value)
    # the CPU layout's failure points at the TensorRT layout, which quantizes less
    assert ("the TensorRT layout (plain --int8)" in str(err.value)) == (layout == "ort-cpu")
    assert not list(tmp_path.glob("*.int8*.onnx"))
    report = json.loads(next(tmp_path.glob("*.int8*.report.json")).read_text())
    trail = report["int8"]["search_trail"]
    assert trail[0]["excluded"] == 0 and trail[-1]["excluded"] == report["int8"]["exclusion_limit"]
    assert report["int8"]["target_met"] is False


@pytest.fixture(scope="module")
def ort_cpu(int8):
    """The FP32 graph of ``int8``, its calibration tiles and its ONNX Runtime CPU layout."""
    from restorekit.calibration.feeds import feeds_from_images
    from restorekit.calibration.qdq import qdq_from_model
    from restorekit.data import sample_paths
    from restorekit.onnx_graph import name_nodes

    fp32 = onnx.load(str(int8.fp32.onnx_path))
    name_nodes(fp32)
    calibration = feeds_from_images(sample_paths(), int8.fp32.manifest, 4)
    return fp32, calibration, qdq_from_model(fp32, calibration, "minmax", layout="ort-cpu")


def test_ort_cpu_layout_runs_integer_between_convolutions(int8, ort_cpu):
    """The ONNX Runtime CPU layout: uint8 activations, Conv outputs and the ops between quantized."""
    from restorekit.calibration.qdq import qdq_from_model

    fp32, calibration, result = ort_cpu
    model = result.model
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(consumers[c.output[0]] == ["QuantizeLinear"] for c in convs)
    act_zero_points = {inits[n.input[2]].dtype for n in model.graph.node
                       if n.op_type == "QuantizeLinear" and n.input[0] not in inits}  # fmt: skip
    assert act_zero_points == {np.dtype(np.uint8)} and result.activation_amax == {}
    leaky = [n for n in model.graph.node if n.op_type == "LeakyRelu"]
    assert leaky and all(consumers[n.output[0]] == ["QuantizeLinear"] for n in leaky)
    x = np.random.default_rng(6).random((1, 3, 32, 32), dtype=np.float32)
    ref, got = _run(str(int8.fp32.onnx_path), x), _run(model, x)
    assert np.isfinite(got).all() and psnr(got, ref) > 25.0
    with pytest.raises(RestoreKitError, match="unknown INT8 layout"):
        qdq_from_model(fp32, calibration, "minmax", layout="gpu")


def test_ort_cpu_layout_widens_channel_attention_factors_exactly(ort_cpu):
    """Each channel-attention product reads its (N, C, 1, 1) factor expanded to one row, and the
    output is exactly that of the graph reading the factor itself."""
    model = ort_cpu[2].model
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    attention = [n for n in model.graph.node if n.op_type == "Mul"
                 and any(producers[i].op_type == "DequantizeLinear"
                         and producers[producers[i].input[0]].op_type == "QuantizeLinear"
                         and producers[producers[producers[i].input[0]].input[0]].op_type == "Expand"
                         for i in n.input)]  # fmt: skip
    # TINY MPRNet.derain: one channel attention per CAB (2 per ORB/encoder level) and in the SAMs
    assert len(attention) >= 10
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(model).graph.value_info}  # fmt: skip
    unwidened = onnx.ModelProto()
    unwidened.CopyFrom(model)
    for node in unwidened.graph.node:
        if node.op_type != "Mul":
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = (
                producers.get(dq.input[0])
                if dq is not None and dq.op_type == "DequantizeLinear"
                else None
            )
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in producers \
                    and producers[q.input[0]].op_type == "Expand":  # fmt: skip
                expand = producers[q.input[0]]
                _, c, _, w = shapes[node.input[1 - k]]  # the product's other operand, (N, C, H, W)
                assert list(inits[expand.input[1]]) == [1, c, 1, w] and w > 1
                node.input[k] = expand.input[0]  # the dequantized (N, C, 1, 1) factor
    x = np.random.default_rng(7).random((2, 3, 32, 32), dtype=np.float32)
    widened_out, plain_out = _run(model, x), _run(unwidened, x)
    assert np.array_equal(widened_out, plain_out)

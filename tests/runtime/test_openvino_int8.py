"""OpenVINO INT8: the saturation reproducer (why 8-bit Q/DQ weights give 12-23 dB on a CPU without
VNNI), the refusal of such graphs, and NNCF's INT8 made once beside an FP32 artifact behind the
PSNR gate. Skipped without OpenVINO."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import restorekit  # noqa: E402
from restorekit.errors import VerificationError  # noqa: E402
from restorekit.runtime.cpu_features import cpu_features  # noqa: E402
from restorekit.runtime.openvino_backend import (  # noqa: E402
    PrecisionUnavailableError,
    ov_int8_path,
    saturating_weights,
)
from tests.runtime import tinynet  # noqa: E402


def open_and_close(path, **options) -> None:
    """Open an artifact (the backend, its admission) and close it."""
    with restorekit.open(path, **options):
        pass


CH = 32


def qdq_conv(bits: int, activation: str, seed: int = 0):
    """A four-node Q/DQ graph: Q -> DQ of the input, DQ of per-channel int8 weights, Conv.

    Returns the model, an input and the expected output: the convolution of the dequantized
    input and weights in float (ONNX Runtime on a plain float Conv graph, no quantization).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1, CH, 16, 16)).astype(np.float32)
    if activation == "uint8":
        x = np.abs(x)
    w = rng.normal(0, 1, (CH, CH, 3, 3)).astype(np.float32)
    top = 2 ** (bits - 1) - 1
    ws = (np.abs(w).reshape(CH, -1).max(1) / top).astype(np.float32)
    wq = np.clip(np.round(w / ws[:, None, None, None]), -top, top).astype(np.int8)
    levels = 255 if activation == "uint8" else 127
    xs = np.float32(1 / levels)
    xzp = np.uint8(0) if activation == "uint8" else np.int8(0)
    lo = 0 if activation == "uint8" else -127
    inits = [numpy_helper.from_array(np.asarray(xs), "xs"), numpy_helper.from_array(np.asarray(xzp), "xzp"),
             numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(ws, "ws"),
             numpy_helper.from_array(np.zeros(CH, np.int8), "wzp")]  # fmt: skip
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])]  # fmt: skip
    io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CH, 16, 16])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "qdq", *io, inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # fmt: skip
    xd = (np.clip(np.round(x / xs), lo, levels) * xs).astype(np.float32)
    wd = (wq.astype(np.float32) * ws[:, None, None, None]).astype(np.float32)
    plain = helper.make_model(
        helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "f",
                          *io, [numpy_helper.from_array(wd, "w")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
    )  # fmt: skip
    import onnxruntime as ort

    want = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    return model, x, want.run(None, {"x": xd})[0]


def _psnr(got: np.ndarray, want: np.ndarray) -> float:
    peak = np.abs(want).max()
    return float(10 * np.log10(peak**2 / np.mean((got.astype(np.float64) - want) ** 2)))


@pytest.mark.parametrize("activation", ["int8", "uint8"])
def test_reproducer_8bit_weights_saturate_without_vnni(activation):
    """The cause of OpenVINO's 12-23 dB on 8-bit Q/DQ graphs: without VNNI, u8 x s8 products are
    summed in pairs into 16 bits (VPMADDUBSW); full-range 8-bit weights overflow them, 7-bit
    weights cannot. With VNNI both are exact."""
    import openvino as ov

    core = ov.Core()
    results = {}
    for bits in (8, 7):
        model, x, want = qdq_conv(bits, activation)
        compiled = core.compile_model(
            core.read_model(model.SerializeToString(), b""),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32"},
        )
        results[bits] = _psnr(compiled.create_infer_request().infer({0: x})[0], want)
    assert results[7] > 100, results  # exact up to float rounding
    if cpu_features().vnni:
        assert results[8] > 100, results
    else:
        assert results[8] < 60, results  # saturated: far from float rounding


def test_8bit_qdq_artifact_refused_without_vnni(tmp_path):
    model8, _, _ = qdq_conv(8, "int8")
    model7, _, _ = qdq_conv(7, "int8")
    onnx.save(model8, str(tmp_path / "w8.onnx"))
    onnx.save(model7, str(tmp_path / "w7.onnx"))
    assert saturating_weights(tmp_path / "w8.onnx") == ["wq"]
    assert saturating_weights(tmp_path / "w7.onnx") == []
    path, _, manifest = tinynet.export_net(tmp_path, name="q")
    from restorekit.manifest import PrecisionPlan, write_manifest

    onnx.save(model8, str(path))  # a Q/DQ graph under an INT8 manifest (only _read is reached)
    write_manifest(path, manifest.replace(precision=PrecisionPlan("int8", layout="tensorrt")))
    if cpu_features().vnni:
        pytest.skip("this CPU has VNNI: 8-bit weights do not saturate")
    with pytest.raises(PrecisionUnavailableError, match="7-bit weights"):
        open_and_close(path, backend="openvino")


@pytest.mark.slow
def test_nncf_int8_made_once_behind_the_gate(tmp_path):
    from restorekit.calibration.openvino_int8 import (
        EVAL_MAX_TILES,
        EVAL_PIXELS,
        ov_int8_from_onnx,
        read_ov_int8_record,
    )

    path, net, _ = tinynet.export_net(tmp_path)
    with pytest.raises(PrecisionUnavailableError, match="make it once"):
        open_and_close(path, backend="openvino", precision="int8")
    # A gate no INT8 model meets: the search runs, fails, and nothing is written.
    with pytest.raises(VerificationError, match="nothing was written"):
        ov_int8_from_onnx(path, count=4, min_psnr=150.0, threads=1)
    assert not ov_int8_path(path).exists()
    result = ov_int8_from_onnx(path, count=8, threads=1)
    assert result.path == ov_int8_path(path) and result.path.with_suffix(".bin").is_file()
    record = read_ov_int8_record(result.path)
    assert record["psnr"] >= 35.0 and record["search"]["quantized_layers"] == 3
    # small tiles: the gate is judged on enough of them to hold its pixel budget (32x48 here)
    assert record["gate"]["tiles"] == min(EVAL_MAX_TILES, -(-EVAL_PIXELS // (32 * 48)))
    x = np.random.default_rng(4).random((1, 3, 32, 48), dtype=np.float32)
    with restorekit.open(path, backend="openvino", precision="int8") as model:
        got = model.backend.infer(x)
    want = net(x)
    assert 30.0 < _psnr(got, want) < 100.0  # quantized (not FP32), and close to the reference
    verdicts = json.loads((tmp_path / "tiny.onnx.cpu.json").read_text())["admitted"]
    assert verdicts["openvino/int8"]["passed"]


def test_admission_judges_small_tiles_by_their_pixels(tmp_path):
    """With 32x48 tiles one tile a photo is too little to judge an INT8 model by; admission takes
    each photo's first tiles in the runtime's order until its share of the pixel budget."""
    from restorekit.data import sample_paths
    from restorekit.runtime.admission import ADMISSION_PIXELS, admission_tiles
    from restorekit.runtime.imageio import read_image

    _, _, manifest = tinynet.export_net(tmp_path)
    tiles = admission_tiles(manifest, count=2)
    per_photo = -(-ADMISSION_PIXELS // 2 // (32 * 48))
    assert tiles.shape == (2 * per_photo, 3, 32, 48)
    # distinct tiles of the photos' content, not one tile repeated
    assert len({t.tobytes() for t in tiles}) == len(tiles)
    photo_mean = float(np.mean(read_image(sample_paths()[0])) / 255.0)
    assert abs(float(tiles[:per_photo].mean()) - photo_mean) < 0.25


@pytest.mark.slow
def test_nncf_search_reaches_a_gate_the_first_pass_misses(tmp_path):
    """NNCF's search measures the drop from OpenVINO's FP32 score, which is float rounding
    (120-200 dB), not a constant: taking 200 dB for it once let the demo NLRN's 28.7 dB model
    through the search untouched. A gate 3 dB above the first pass must make the search return
    layers to float until it holds."""
    from restorekit.calibration.openvino_int8 import ov_int8_from_onnx, read_ov_int8_record

    path, _, _ = tinynet.export_net(tmp_path)
    first = ov_int8_from_onnx(path, count=8, threads=1).record["search"]
    assert "searched" not in first  # the default gate holds without the search
    ov_int8_path(path).unlink()
    gate = first["first_pass_psnr"] + 3.0
    result = ov_int8_from_onnx(path, count=8, threads=1, min_psnr=gate, max_fraction=1.0)
    record = read_ov_int8_record(result.path)
    assert record["search"]["searched"] and record["psnr"] >= gate
    assert record["search"]["quantized_layers"] < first["quantized_layers"]


@pytest.mark.slow
def test_nncf_search_that_returns_too_many_layers_to_float_is_refused(tmp_path, monkeypatch):
    """NNCF bounds its search by iterations, and one iteration may return a whole group of layers
    to float (16 operations at once on the demo NLRN); restorekit's bound is on layers, as for
    its own INT8. Here the search is made to hand back the FP32 model: it meets any gate, and
    must still be refused, with nothing written."""
    import nncf

    from restorekit.calibration.openvino_int8 import ov_int8_from_onnx

    path, _, _ = tinynet.export_net(tmp_path)
    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", lambda model, *a, **k: model)
    with pytest.raises(VerificationError, match="3 of its 3 weighted layers returned to float"):
        ov_int8_from_onnx(path, count=8, threads=1, min_psnr=100.0, max_fraction=0.34)
    assert not ov_int8_path(path).exists()


# OpenVINO 2026.4's CPU plugin failed so on NNCF's INT8 model of full-size GRL-T at 128x128 (this
# text is its message, shortened); a few-node graph of the same Gemm -> Reshape -> roll pattern
# compiled, so the failure is injected here.
_LPT_FAILURE = (
    "Exception from src/inference/src/cpp/core.cpp:117:\n"
    "Exception from src/core/src/pass/graph_rewrite.cpp:298:\n"
    "[ReshapeTransformation] END: node: opset1::Reshape /model/layers.0/blocks.2/attn/window_attn/"
    "Reshape CALLBACK HAS THROWN: Requested output shape [1,128,1,1] is incompatible with input "
    "shape [1,96]\n"
)


@pytest.mark.slow
def test_int8_model_openvino_cannot_compile_is_refused_with_the_reason(
    tmp_path, monkeypatch, capsys
):
    """When OpenVINO cannot compile NNCF's INT8 model, the user gets the reason and what to use
    instead (exit 2 from restore-run, no traceback), and nothing is written."""
    import openvino as ov

    from restorekit.calibration.openvino_int8 import ov_int8_from_onnx
    from restorekit.cli.run import main as restore_run
    from restorekit.runtime.imageio import write_image

    original = ov.Core.compile_model

    def compile_model(self, model, *args, **kwargs):
        if any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()):
            raise RuntimeError(_LPT_FAILURE)
        return original(self, model, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "compile_model", compile_model)
    path, _, _ = tinynet.export_net(tmp_path)
    with pytest.raises(VerificationError) as err:
        ov_int8_from_onnx(path, count=4, threads=1)
    message = str(err.value)
    assert "OpenVINO cannot compile NNCF's INT8 model" in message
    assert "[ReshapeTransformation]" in message and "Exception from" not in message
    assert "--precision fp32" in message and not ov_int8_path(path).exists()

    photo = tmp_path / "photo.png"
    write_image(photo, np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    code = restore_run([str(path), str(photo), "-o", str(tmp_path / "out"), "--backend",
                        "openvino", "--precision", "int8", "--quiet"])  # fmt: skip
    assert code == 2 and not (tmp_path / "out").exists()
    printed = " ".join(capsys.readouterr().err.split())
    assert "error: " in printed and "internal error" not in printed
    assert "OpenVINO cannot compile NNCF's INT8 model" in printed

"""The OpenVINO backend: FP32 against independent references, tiling, BF16 on this CPU, admission
and ``--backend auto``. Tiny graphs (tests/runtime/tinynet.py, numpy reference); skipped without
OpenVINO."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")

import restorekit  # noqa: E402
from restorekit.errors import RestoreKitError  # noqa: E402
from restorekit.runtime import admission, auto  # noqa: E402
from restorekit.runtime.artifact import backend_from_artifact  # noqa: E402
from restorekit.runtime.cpu_features import CpuFeatures, cpu_features, parse_cpuinfo  # noqa: E402
from restorekit.runtime.openvino_backend import (  # noqa: E402
    OpenVinoOptions,
    PrecisionUnavailableError,
    bf16_refusal,
)
from tests.runtime import tinynet  # noqa: E402


def open_and_close(path, **options) -> None:
    """Open an artifact (the backend, its admission) and close it."""
    with restorekit.open(path, **options):
        pass


MARGIN = 8  # overlap 16 // 2, as in test_session


@pytest.mark.parametrize("batch", [1, None])
def test_fp32_matches_the_numpy_reference(tmp_path, batch):
    path, net, _ = tinynet.export_net(tmp_path, batch=batch)
    x = np.random.default_rng(1).random((2, 3, 32, 48), dtype=np.float32)
    backend, _ = backend_from_artifact(path, "openvino", openvino_options=OpenVinoOptions())
    with backend:
        got = np.concatenate([backend.infer(x[i : i + 1]) for i in range(2)])
        if batch is None:  # dynamic batch: the manifest's range, 1..8
            assert backend.input_spec.max_shape[0] == 8
            np.testing.assert_allclose(backend.infer(x), got, atol=1e-6)
    np.testing.assert_allclose(got, net(x), atol=1e-5)
    verdict = json.loads(admission.record_path(path).read_text())["admitted"]["openvino/fp32"]
    assert verdict["passed"] and verdict["max_abs"] <= 1e-4


def test_tiled_restore_equals_untiled_reference(tmp_path):
    path, net, _ = tinynet.export_net(tmp_path, batch=2, scale=2)
    rgb = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    with restorekit.open(path, backend="openvino", threads=2) as model:
        got = model.restore(rgb)
    want = tinynet.untiled(net, rgb.transpose(2, 0, 1).astype(np.float64) / 255, MARGIN)
    want = np.clip(want.transpose(1, 2, 0), 0, 1) * 255
    assert got.shape == (60, 82, 3)
    assert np.abs(got.astype(np.float64) - want).max() <= 0.5 + 1e-3  # rounding to uint8 only


def test_cpuinfo_parsing_and_bf16_decision():
    text = "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 fma amx_bf16 avx512_vnni\n"
    text += "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 fma amx_bf16\n"
    xeon = parse_cpuinfo(text)
    assert xeon == CpuFeatures("Some Xeon", ("avx2", "fma", "avx512_vnni", "amx_bf16"), 2)
    assert xeon.bf16 and xeon.vnni
    assert bf16_refusal(xeon, ["FP32", "BF16", "INT8"]) is None
    # Flags without OpenVINO's kernels, or kernels without flags: refused, naming what was found.
    assert "lists FP32, INT8" in bf16_refusal(xeon, ["FP32", "INT8"])
    epyc = parse_cpuinfo("processor: 0\nmodel name: AMD EPYC\nflags: avx2 fma\n")
    message = bf16_refusal(epyc, ["FP32", "INT8", "BF16"])
    assert "AMD EPYC (avx2, fma; no amx_bf16/avx512_bf16)" in message


@pytest.mark.skipif(cpu_features().bf16, reason="this CPU has native bf16")
def test_bf16_refused_here_because_openvino_computes_fp32(tmp_path):
    """The measurement behind the refusal: on a CPU without native bf16 OpenVINO accepts the
    bf16 hint, compiles in f32 and gives FP32's exact output; so --precision bf16 is refused."""
    import openvino as ov

    path, _, _ = tinynet.export_net(tmp_path)
    core = ov.Core()
    x = np.random.default_rng(2).random((1, 3, 32, 48), dtype=np.float32)
    outs = {}
    for hint in ("f32", "bf16"):
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        if hint == "bf16":
            assert compiled.get_property("INFERENCE_PRECISION_HINT") != ov.Type.bf16
        outs[hint] = compiled.create_infer_request().infer({0: x})[0]
    np.testing.assert_array_equal(outs["bf16"], outs["f32"])
    with pytest.raises(PrecisionUnavailableError, match="no amx_bf16"):
        open_and_close(path, backend="openvino", precision="bf16")


@pytest.mark.skipif(not cpu_features().bf16, reason="needs AMX-BF16 or AVX512-BF16 (not here)")
def test_bf16_computes_in_bf16_and_is_admitted_against_fp32(tmp_path):
    """Where the CPU has native bf16: the compiled model really runs bf16 (its output is not
    FP32's), restores within the bf16 gate of the numpy reference, and the verdict is kept."""
    import openvino as ov

    path, net, _ = tinynet.export_net(tmp_path, batch=2, scale=2)
    core = ov.Core()
    x = np.random.default_rng(2).random((2, 3, 32, 48), dtype=np.float32)
    outs = {}
    for hint, kind in (("f32", ov.Type.f32), ("bf16", ov.Type.bf16)):
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == kind
        outs[hint] = compiled.create_infer_request().infer({0: x})[0]
    assert np.abs(outs["bf16"] - outs["f32"]).max() > 1e-5  # bf16 rounding shows
    np.testing.assert_allclose(outs["f32"], net(x), atol=1e-5)

    rgb = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    with restorekit.open(path, backend="openvino", precision="bf16") as model:
        got = model.restore(rgb)
    want = tinynet.untiled(net, rgb.transpose(2, 0, 1).astype(np.float64) / 255, MARGIN)
    want = np.clip(want.transpose(1, 2, 0), 0, 1) * 255
    err = got.astype(np.float64) - want
    assert 10 * np.log10(255.0**2 / np.mean(err**2)) >= 45.0
    verdict = json.loads(admission.record_path(path).read_text())["admitted"]["openvino/bf16"]
    assert verdict["passed"] and verdict["psnr"] >= 45.0


def test_precision_needs_the_openvino_backend(tmp_path):
    path, _, _ = tinynet.export_net(tmp_path)
    with pytest.raises(PrecisionUnavailableError, match="OpenVINO backend"):
        restorekit.open(path, backend="ort", precision="int8")
    with pytest.raises(RestoreKitError, match="unknown precision"):
        OpenVinoOptions(precision="fp8")


def test_refusal_is_remembered_and_lifts_when_the_graph_changes(tmp_path):
    """A refused verdict holds for these artifact bytes only: a re-exported graph is checked
    again and admitted when it verifies (how GRL's refusal lifts once its graph is fixed)."""
    path, _, _ = tinynet.export_net(tmp_path)
    record = admission.load_record(path)
    record["admitted"]["openvino/fp32"] = {"passed": False, "gate": "max abs <= 0.0001",
                                           "max_abs": 0.0, "psnr": 3.5, "nonfinite": 10}  # fmt: skip
    admission.save_record(path, record)
    with pytest.raises(admission.NotAdmittedError, match="NaN/Inf 10"):
        open_and_close(path, backend="openvino")
    tinynet.export_net(tmp_path)  # the same graph written again: same bytes, still refused
    with pytest.raises(admission.NotAdmittedError):
        open_and_close(path, backend="openvino")
    import onnx

    model = onnx.load(str(path))
    model.doc_string = "re-exported"
    onnx.save(model, str(path))
    with restorekit.open(path, backend="openvino") as session:
        assert session.backend.name == "openvino fp32"
    assert json.loads(admission.record_path(path).read_text())["admitted"]["openvino/fp32"][
        "passed"
    ]


def test_gates_agree_with_the_export_targets():
    from restorekit.export.targets import DEFAULT

    assert admission.GATES["fp32"].max_abs == DEFAULT.fp32_max_abs
    assert admission.GATES["bf16"].min_psnr == DEFAULT.fp16_min_psnr
    assert admission.GATES["int8"].min_psnr == DEFAULT.int8_min_psnr


def test_auto_picks_an_admitted_backend_and_remembers(tmp_path, monkeypatch):
    path, net, _ = tinynet.export_net(tmp_path)
    first = auto.choose_backend(path, threads=1)
    assert not first.remembered
    assert f"{first.backend}/{first.precision}" in first.timings_ms
    assert set(first.timings_ms) >= {"ort/fp32", "openvino/fp32"}
    best = min(first.timings_ms.values())
    assert first.timings_ms[f"{first.backend}/{first.precision}"] == best

    def no_timing(*_args, **_kwargs):
        raise AssertionError("timed again")

    monkeypatch.setattr(auto, "_time_candidates", no_timing)
    second = auto.choose_backend(path, threads=1)
    assert second.remembered and (second.backend, second.precision) == (
        first.backend,
        first.precision,
    )
    rgb = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    with restorekit.open(path, backend="auto", threads=1) as model:
        assert model.choice.remembered
        got = model.restore(rgb)
    want = tinynet.untiled(net, rgb.transpose(2, 0, 1).astype(np.float64) / 255, MARGIN)
    assert np.abs(got - np.clip(want.transpose(1, 2, 0), 0, 1) * 255).max() <= 0.5 + 1e-3
    monkeypatch.undo()
    tinynet.export_net(tmp_path)  # the same graph again: same bytes, still remembered
    assert auto.choose_backend(path, threads=1).remembered
    import onnx

    model = onnx.load(str(path))
    model.doc_string = "changed"
    onnx.save(model, str(path))
    assert not auto.choose_backend(path, threads=1).remembered


def test_throughput_hint_overlaps_requests_and_keeps_the_order(tmp_path):
    path, net, _ = tinynet.export_net(tmp_path, batch=2)
    batches = [np.random.default_rng(k).random((2, 3, 32, 48), dtype=np.float32) for k in range(5)]
    options = OpenVinoOptions(hint="throughput", threads=2)
    backend, _ = backend_from_artifact(path, "openvino", openvino_options=options)
    with backend:
        outs = list(backend.infer_many(iter(batches)))
    assert len(outs) == 5
    for got, x in zip(outs, batches, strict=True):
        np.testing.assert_allclose(got, net(x), atol=1e-5)

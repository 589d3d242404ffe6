"""The export's OpenVINO row: the FP32 graph in OpenVINO against the same PyTorch outputs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")  # the export needs PyTorch (skipped in the torch-free venvs)
pytest.importorskip("openvino")

from restorekit.cli.export import export_summary  # noqa: E402
from restorekit.export.pipeline import ExportOptions, export_model  # noqa: E402
from restorekit.models import resolve  # noqa: E402


@pytest.mark.slow
def test_export_report_has_an_openvino_row(tmp_path):
    options = ExportOptions(model="mprnet.derain", tile=(32, 32), output_dir=tmp_path,
                            build_overrides=resolve("mprnet").spec.tiny, seed=3)  # fmt: skip
    result = export_model(options)
    doc = json.loads(result.report_path.read_text())
    row = doc["fp32"]["openvino"]
    assert row["reference"] == "pytorch fp32" and "OpenVINO" in row["artifact"]
    # One comparison per image at batch 1, each against PyTorch (not against ONNX Runtime).
    assert [c["batch"] for c in row["comparisons"]] == [1] * len(doc["fp32"]["comparisons"][:-1])
    assert row["passed"] and row["worst"]["max_abs"] <= 1e-4 and row["worst"]["nonfinite"] == 0
    lines = export_summary(result)
    assert any(line.strip().startswith("in OpenVINO FP32, this CPU") for line in lines)


@pytest.mark.slow
def test_grl_export_is_admitted_on_openvino(tmp_path):
    """GRL's graphs once gave NaN in OpenVINO (Abs of integer-derived values); a fresh export
    must match PyTorch in OpenVINO and be admitted by the runtime (the refusal lifted)."""
    import restorekit

    options = ExportOptions(model="grl-t.demo_dn_s25", tile=(32, 32), output_dir=tmp_path)
    result = export_model(options)
    row = json.loads(result.report_path.read_text())["fp32"]["openvino"]
    assert row["passed"] and row["worst"]["nonfinite"] == 0, row["worst"]
    with restorekit.open(result.onnx_path, backend="openvino") as model:
        assert model.backend.name == "openvino fp32"

"""The export's OpenVINO row: the verified FP32 graph run by OpenVINO against the same PyTorch
outputs as ONNX Runtime, when OpenVINO is installed.

It is a record, not a gate: ONNX Runtime is the reference backend and decides the export. The row
shows whether OpenVINO computes this graph correctly on this CPU before anyone deploys it there
(our GRL graphs gave NaN in OpenVINO while ONNX Runtime ran them correctly); the runtime admits
OpenVINO per artifact by its own check (restorekit.runtime.admission).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from restorekit.export.compare import compare_batches
from restorekit.export.verify import Comparison, Criterion, ReferenceSet, VerificationReport


class OvSession:
    """OpenVINO FP32 over an in-memory ONNX on the CPU, with ``OrtSession``'s ``run(batch)``."""

    def __init__(self, model: bytes) -> None:
        import openvino as ov

        core = ov.Core()
        self._compiled = core.compile_model(
            core.read_model(model, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        self._request = self._compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        return self._request.get_output_tensor(0).data.copy()


def openvino_row(
    model: Any,
    references: Sequence[ReferenceSet],
    value_range: float,
    criterion: Criterion,
    artifact: str,
) -> dict[str, Any] | None:
    """The FP32 graph's figures in OpenVINO against PyTorch (the report's ``openvino`` entry), or
    ``None`` when OpenVINO is not installed; a graph OpenVINO cannot compile is recorded as such.
    """
    if importlib.util.find_spec("openvino") is None:
        return None
    import openvino as ov

    name = f"{artifact} (OpenVINO {ov.__version__.split('-')[0]} FP32, this CPU)"
    try:
        session = OvSession(model.SerializeToString())
    except Exception as exc:  # OpenVINO's own untyped errors: recorded, the export goes on
        return {"artifact": name, "passed": False, "error": str(exc).strip().splitlines()[-1]}
    # Batch 1 per image only (ONNX Runtime's check covers batch N): the row costs one forward
    # pass per image, not two, in an export that is timed.
    report = VerificationReport(name, "pytorch fp32", criterion.describe())
    for refs in references:
        for i, image in enumerate(refs.names):
            got = session.run(refs.inputs[i : i + 1])
            (figures,) = compare_batches(got, refs.expected[i : i + 1], [image], value_range)
            report.comparisons.append(Comparison((image,), 1, refs.shape, figures))
    report.passed = criterion.passes(report.worst)
    return report.to_dict()


def summary_row(row: dict[str, Any] | None, width: int = 44) -> str | None:
    """The OpenVINO row of ``restore-export``'s table (``None`` without OpenVINO)."""
    if row is None:
        return None
    label = "  in OpenVINO FP32, this CPU"
    if "error" in row:
        return f"{label:<{width}} OpenVINO cannot compile it: {row['error']}"
    w = row["worst"]
    psnr = w["psnr"] if isinstance(w["psnr"], str) else f"{w['psnr']:.2f}"
    verdict = "ok" if row["passed"] else f"FAILS ({w['nonfinite']} NaN/Inf)"
    return (f"{label:<{width}} {'':>6} {'':>6} {psnr:>8} {w['ssim']:>7.5f} {w['max_abs']:>9.2e} "
            f"{verdict:>7}")  # fmt: skip

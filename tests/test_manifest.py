from __future__ import annotations

import json

import pytest

from restorekit.errors import ManifestError
from restorekit.manifest import (
    BatchRange,
    CalibrationRecord,
    EngineRecord,
    Manifest,
    PrecisionPlan,
    TensorSpec,
    read_manifest,
    sidecar_path,
    write_manifest,
)


def _manifest(**changes):
    m = Manifest(
        model="mprnet.deblur", task="deblur", input=TensorSpec("input", 3),
        output=TensorSpec("output", 3), scale=1, multiple_of=8, tile=(256, 256),
        batch=BatchRange(1, 4, 4), overlap=32, blend="feather",
        precision=PrecisionPlan("fp16", ("/a/LayerNorm",), {"/a/LayerNorm": "range"}), opset=17,
        weights="random (seed 0)",
        calibration=CalibrationRecord("abc", 16, "entropy"),
        engine=EngineRecord("10.3.0", "Orin", "8.7"),
    )  # fmt: skip
    return m.replace(**changes)


def test_round_trip_through_sidecar(tmp_path):
    artifact = tmp_path / "m.onnx"
    m = _manifest()
    path = write_manifest(artifact, m)
    assert path == sidecar_path(artifact) and path.name == "m.onnx.json"
    assert read_manifest(artifact) == m
    assert read_manifest(artifact).tile == (256, 256)
    assert _manifest(tile=None).dynamic_hw


def test_missing_malformed_and_newer_manifests(tmp_path):
    artifact = tmp_path / "m.engine"
    with pytest.raises(ManifestError, match="m.engine.json"):
        read_manifest(artifact)
    sidecar_path(artifact).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(artifact)
    sidecar_path(artifact).write_text(json.dumps({"model": "x"}))
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(artifact)
    newer = _manifest().to_dict() | {"manifest_version": 99}
    sidecar_path(artifact).write_text(json.dumps(newer))
    with pytest.raises(ManifestError, match="upgrade restorekit"):
        read_manifest(artifact)

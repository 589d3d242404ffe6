"""The source ONNX of an engine: its name, where it sits, and the one sha256 check."""

from __future__ import annotations

import hashlib

from restorekit.manifest import EngineRecord
from restorekit.tensorrt.onnx_source import onnx_sha256_mismatch, source_onnx, source_onnx_name
from tests.tensorrt.fake_trt import make_manifest


def test_sha256_mismatch_returns_the_actual_hash_only_when_it_differs(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph v1")
    recorded = hashlib.sha256(b"graph v1").hexdigest()
    assert onnx_sha256_mismatch(onnx, recorded) is None
    assert onnx_sha256_mismatch(onnx, "") is None  # nothing recorded: nothing to compare
    onnx.write_bytes(b"graph v2")
    assert onnx_sha256_mismatch(onnx, recorded) == hashlib.sha256(b"graph v2").hexdigest()


def test_source_onnx_is_beside_the_engine_under_the_recorded_or_exported_name(tmp_path):
    m = make_manifest(precision="int8", tile=(64, 96))
    assert source_onnx_name(m) == "mprnet.deblur.int8.64x96.onnx"
    named = m.replace(engine=EngineRecord("10.3.0", "Orin", "8.7", onnx_file="src.onnx"))
    assert source_onnx(tmp_path / "e.engine", named) == tmp_path / "src.onnx"
    assert source_onnx(tmp_path / "e.engine", m) == tmp_path / "mprnet.deblur.int8.64x96.onnx"

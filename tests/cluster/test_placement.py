"""Which artifact a worker runs: an engine that fits the node's GPU and TensorRT, else the ONNX.

Node facts are given (no GPU here); the engine check is the runtime's own compatibility check, so
these tests use engine manifests the way ``restore-build`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from restorekit.cluster.placement import (
    NodeFacts,
    candidate_artifacts,
    choose_artifact,
    node_facts,
)
from restorekit.errors import InputError
from restorekit.files import file_sha256
from restorekit.manifest import EngineRecord, write_manifest
from restorekit.naming import engine_name
from tests.conftest import HAS_CUDA, HAS_TRT
from tests.tensorrt.fake_trt import ORIN, RTX4090, make_manifest, write_onnx_artifact


def _engine(onnx: Path, device, trt: str = "10.3.0") -> Path:
    """An engine file beside ``onnx`` with the manifest restore-build writes for that device."""
    from restorekit.manifest import read_manifest

    m = read_manifest(onnx)
    rec = EngineRecord(trt, device.name, device.compute_capability, onnx_file=onnx.name)
    path = onnx.with_name(
        engine_name(m.model, m.precision.precision, m.tile, trt, device.compute_capability)
    )
    path.write_bytes(b"engine bytes for " + device.name.encode())
    write_manifest(path, m.replace(engine=rec, onnx_sha256=file_sha256(onnx)))
    return path


@pytest.fixture
def artifacts(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    return onnx, _engine(onnx, ORIN), _engine(onnx, RTX4090, trt="10.8.0")


def test_engine_matching_gpu_and_tensorrt_is_chosen(artifacts):
    onnx, orin, rtx = artifacts
    node = NodeFacts(RTX4090, "10.8.0.43", ort_cuda=True, host="gpu1")
    choice = choose_artifact([orin, rtx, onnx], facts=node)
    assert (choice.path, choice.backend, choice.provider) == (rtx, "trt", "")
    # The Orin engine was passed over with the compatibility check's own reason.
    ((name, why),) = choice.skipped
    assert name == orin.name and "TensorRT 10.3.0" in why and "restore-build" in why
    assert choice.describe().startswith(f"{rtx.name} (TensorRT")


def test_cpu_node_falls_back_to_onnx_and_says_why(artifacts):
    onnx, orin, rtx = artifacts
    choice = choose_artifact([orin, rtx, onnx], facts=NodeFacts(host="cpu1"))
    assert (choice.path, choice.backend, choice.provider) == (onnx, "ort", "cpu")
    assert [n for n, _ in choice.skipped] == [orin.name, rtx.name]
    assert all(why == "no CUDA GPU on this node" for _, why in choice.skipped)
    assert "ONNX Runtime CPU" in choice.describe() and "no CUDA GPU" in choice.describe()


def test_gpu_without_tensorrt_runs_onnx_on_cuda(artifacts):
    onnx, orin, _ = artifacts
    choice = choose_artifact([orin, onnx], facts=NodeFacts(ORIN, None, ort_cuda=True))
    assert (choice.backend, choice.provider) == ("ort", "cuda")
    assert choice.skipped == ((orin.name, "TensorRT is not installed on this node"),)


def test_changed_source_onnx_refuses_its_engine(artifacts):
    onnx, orin, _ = artifacts
    onnx.write_bytes(b"another export")  # the engine's recorded sha256 no longer matches
    choice = choose_artifact([orin, onnx], facts=NodeFacts(ORIN, "10.3.0"))
    assert choice.backend == "ort" and "built from another version" in choice.skipped[0][1]


def test_only_unfit_engines_is_an_error_naming_each_reason(artifacts):
    _, orin, rtx = artifacts
    with pytest.raises(InputError, match="no artifact fits node cpu1") as info:
        choose_artifact([orin, rtx], facts=NodeFacts(host="cpu1"))
    assert orin.name in str(info.value) and rtx.name in str(info.value)
    with pytest.raises(InputError, match="no artifact to choose from"):
        choose_artifact([], facts=NodeFacts())
    with pytest.raises(InputError, match="artifact not found"):
        choose_artifact([orin.with_name("gone.onnx")], facts=NodeFacts())


def test_candidates_from_one_named_artifact(artifacts, tmp_path):
    onnx, orin, rtx = artifacts
    # Another model's engine beside it is not a candidate.
    other = write_onnx_artifact(tmp_path / "other", make_manifest(model="grl.dn"))
    stray = _engine(other, ORIN)
    stray.rename(tmp_path / stray.name)
    Path(str(stray) + ".json").rename(tmp_path / (stray.name + ".json"))
    assert candidate_artifacts(onnx) == sorted([orin, rtx]) + [onnx]
    assert candidate_artifacts(orin) == [orin, onnx]
    onnx.unlink()
    assert candidate_artifacts(orin) == [orin]


@pytest.mark.skipif(HAS_CUDA or HAS_TRT, reason="this node has a GPU or TensorRT")
def test_real_probe_on_a_cpu_node_picks_onnx_on_cpu(artifacts):
    facts = node_facts()
    assert facts.device is None and facts.tensorrt_version is None and facts.host
    onnx, orin, _ = artifacts
    choice = choose_artifact([orin, onnx])  # asks this node
    assert (choice.path, choice.provider, choice.host) == (onnx, "cpu", facts.host)

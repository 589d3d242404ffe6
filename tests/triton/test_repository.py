"""Triton model repositories: every config.pbtxt parses into Triton's own ModelConfig (from
tritonclient) and says what the artifact is; a misspelt field fails; writes are atomic and refuse
to overwrite. Triton itself is not run here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from restorekit.cli import triton as triton_cli
from restorekit.errors import InputError
from restorekit.manifest import EngineRecord, PrecisionPlan, read_manifest, write_manifest
from restorekit.triton.config import TritonOptions, config_text
from restorekit.triton.repository import write_triton_model
from restorekit.triton.validate import TritonConfigError, parse_config
from tests.runtime import tinynet

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _fp16_io_onnx(folder):
    """A tiny graph with FP16 input and output (a convolution computed in FP16), and a manifest
    saying so, as an FP16 export with FP16 I/O would have."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((3, 3, 3, 3), 0.1, np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])],
        "fp16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT16, ["batch", 3, 64, 64])],
        [w],
    )
    path = folder / "tiny.fp16.64x64.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    _, _, manifest = tinynet.export_net(folder, batch=None, tile=(64, 64), name="base")
    manifest = manifest.replace(
        input=manifest.input.__class__("input", 3, dtype="float16"),
        output=manifest.output.__class__("output", 3, dtype="float16"),
        precision=PrecisionPlan("fp16", kept_fp32=("conv0",)),
    )
    write_manifest(path, manifest)
    return path


def _fake_engine(folder, profile_min: int, profile_max: int, name: str = "tiny.engine"):
    """An .engine file with an engine manifest (bytes are not a real plan: only the config is
    generated from it)."""
    _, _, manifest = tinynet.export_net(folder, batch=None, tile=(64, 64), name="src")
    rec = EngineRecord(
        tensorrt_version="10.3.0",
        gpu_name="Orin (nvgpu)",
        compute_capability="8.7",
        profile={
            "min": [profile_min, 3, 64, 64],
            "opt": [profile_max, 3, 64, 64],
            "max": [profile_max, 3, 64, 64],
        },
        onnx_file="src.onnx",
    )
    path = folder / name
    path.write_bytes(b"not a real TensorRT plan")
    write_manifest(path, manifest.replace(engine=rec, precision=PrecisionPlan("fp16")))
    return path


def _accelerator(config):
    accels = config.optimization.execution_accelerators.gpu_execution_accelerator
    return {a.name: dict(a.parameters) for a in accels}


def test_onnx_fp32_dynamic_batch(tmp_path):
    artifact, _, manifest = tinynet.export_net(tmp_path, batch=None, tile=(32, 48))
    model = write_triton_model(artifact, tmp_path / "repo", validate=True)
    assert model.validated and model.path == tmp_path / "repo" / "tiny"
    config = parse_config((model.path / "config.pbtxt").read_text())
    assert config.name == "tiny" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    (inp,), (out,) = config.input, config.output
    assert inp.name == "input" and inp.data_type == pb2.DataType.TYPE_FP32
    assert list(inp.dims) == [3, 32, 48] and list(out.dims) == [3, 32, 48]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    (group,) = config.instance_group
    assert group.kind == pb2.ModelInstanceGroup.Kind.KIND_GPU and group.count == 1
    assert _accelerator(config)["tensorrt"]["precision_mode"] == "FP32"
    # The model file is the artifact, and the manifest beside it is restorekit's own.
    assert (model.path / "1" / "model.onnx").read_bytes() == artifact.read_bytes()
    assert read_manifest(model.path / "1" / "model.onnx") == manifest


def test_onnx_fp16_io_and_accelerator(tmp_path):
    artifact = _fp16_io_onnx(tmp_path)
    model = write_triton_model(
        artifact, tmp_path / "repo", TritonOptions(instances=2, max_batch=4), validate=True
    )
    config = parse_config(model.config)
    assert config.name == "tiny_fp16_64x64"
    assert config.input[0].data_type == pb2.DataType.TYPE_FP16
    assert config.output[0].data_type == pb2.DataType.TYPE_FP16
    assert config.max_batch_size == 4 and config.instance_group[0].count == 2
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    params = _accelerator(config)["tensorrt"]
    assert params["precision_mode"] == "FP16" and int(params["max_workspace_size_bytes"]) > 0


def test_cpu_instances_and_dynamic_size(tmp_path):
    artifact, _, _ = tinynet.export_net(tmp_path, batch=None, tile=None, scale=2)
    config = parse_config(config_text(artifact, read_manifest(artifact), TritonOptions(kind="cpu")))
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.Kind.KIND_CPU
    assert list(config.input[0].dims) == [3, -1, -1] and list(config.output[0].dims) == [3, -1, -1]
    assert not config.optimization.HasField("execution_accelerators")  # no TensorRT on a CPU


def test_static_batch_is_not_dynamically_batched(tmp_path):
    artifact, _, _ = tinynet.export_net(tmp_path, batch=2, tile=(32, 48), scale=2)
    config = parse_config(config_text(artifact, read_manifest(artifact), TritonOptions()))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 3, 32, 48]
    assert list(config.output[0].dims) == [2, 3, 64, 96]
    with pytest.raises(InputError, match="exactly 2"):
        config_text(artifact, read_manifest(artifact), TritonOptions(max_batch=4))


def test_engine_artifacts(tmp_path):
    engine = _fake_engine(tmp_path, 1, 4)
    model = write_triton_model(engine, tmp_path / "repo", validate=True)
    config = parse_config(model.config)
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 4
    assert config.default_model_filename == "model.plan"
    assert list(config.input[0].dims) == [3, 64, 64]
    assert not config.optimization.HasField("execution_accelerators")
    assert "Orin (nvgpu)" in model.config and "TensorRT 10.3.0" in model.config
    assert (model.path / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert read_manifest(model.path / "1" / "model.plan").engine.compute_capability == "8.7"
    with pytest.raises(InputError, match="profile maximum of 4"):
        config_text(engine, read_manifest(engine), TritonOptions(max_batch=8))
    with pytest.raises(InputError, match="GPU only"):
        config_text(engine, read_manifest(engine), TritonOptions(kind="cpu"))
    static = _fake_engine(tmp_path, 1, 1, name="static.engine")
    config = parse_config(config_text(static, read_manifest(static), TritonOptions()))
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 3, 64, 64]


def test_typos_fail_triton_schema(tmp_path):
    artifact, _, _ = tinynet.export_net(tmp_path, batch=None, tile=(32, 48))
    text = config_text(artifact, read_manifest(artifact), TritonOptions())
    parse_config(text)
    for good, bad in [
        ("max_batch_size", "max_batch_sise"),
        ("KIND_GPU", "KIND_TPU"),
        ("TYPE_FP32", "TYPE_F32"),
        ("preferred_batch_size: [ 4, 8 ]", "preferred_batch_size: [ 4, 16 ]"),
    ]:
        assert good in text
        with pytest.raises(TritonConfigError):
            parse_config(text.replace(good, bad, 1))


def test_refuses_to_overwrite_and_replaces_with_force(tmp_path, capsys):
    artifact, _, _ = tinynet.export_net(tmp_path, batch=None, tile=(32, 48))
    repo = tmp_path / "repo"
    assert triton_cli.main([str(artifact), "-o", str(repo)]) == 0
    assert "checked against Triton's ModelConfig schema" in capsys.readouterr().out
    assert triton_cli.main([str(artifact), "-o", str(repo), "--max-batch", "4"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert "max_batch_size: 8" in (repo / "tiny" / "config.pbtxt").read_text()
    assert triton_cli.main([str(artifact), "-o", str(repo), "--max-batch", "4", "--force"]) == 0
    assert "max_batch_size: 4" in (repo / "tiny" / "config.pbtxt").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]  # no staging or old folders left
    assert triton_cli.main([str(artifact), "-o", str(repo), "--name", "bad/name"]) == 2
    json.loads((repo / "tiny" / "1" / "model.onnx.json").read_text())

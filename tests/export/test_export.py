"""Export: the ONNX written matches PyTorch (checked here independently of the exporter's own
report), carries its manifest, and shape-dependent graphs are refused for dynamic height/width."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import json

import numpy as np
import onnx
import onnxruntime as ort
import torch

from restorekit.errors import ExportError, VerificationError
from restorekit.export import ExportOptions, export_model
from restorekit.files import file_sha256
from restorekit.manifest import METADATA_KEY, Manifest, read_manifest, sidecar_path
from restorekit.models import resolve
from restorekit.models.build import model_from_name
from restorekit.models.spec import ArchSpec, ModelRef, SizeRule, Variant
from restorekit.runtime.imageio import write_image

TINY = resolve("mprnet").spec.tiny


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    options = ExportOptions(model="mprnet.derain", tile=(48, 64), batch=4, output_dir=out,
                            build_overrides=TINY, seed=5)  # fmt: skip
    return export_model(options)


def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_matches_pytorch_at_batch_1_and_3(tiny_export):
    model = model_from_name("mprnet.derain", seed=5, overrides=TINY).module
    session = _ort(tiny_export.onnx_path)
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.random((batch, 3, 48, 64), dtype=np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x))[0].numpy()
        got = session.run(["output"], {"input": x})[0]
        err = np.abs(got - want)
        assert err.max() <= 1e-4, f"batch {batch}: max {err.max():.2e}, mean {err.mean():.2e}"


def test_artifact_names_manifest_and_report(tiny_export):
    path = tiny_export.onnx_path
    assert path.name == "mprnet.derain.fp32.48x64.onnx"
    m = read_manifest(path)
    assert m == tiny_export.manifest
    assert m.onnx_sha256 == file_sha256(path)
    assert m.tile == (48, 64) and m.batch.max == 4 and m.multiple_of == 8 and m.overlap == 32
    assert m.weights == "random (seed 5)" and m.build_overrides == dict(TINY)
    embedded = {p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY]
    assert Manifest.from_dict(json.loads(embedded)) == m.replace(onnx_sha256="")
    assert sidecar_path(path).name == "mprnet.derain.fp32.48x64.onnx.json"
    report = json.loads(tiny_export.report_path.read_text())
    batches = {c["batch"] for c in report["fp32"]["comparisons"]}
    assert batches == {1, 4} and report["fp32"]["passed"]
    assert report["nodes"]["final"] < report["nodes"]["traced"]  # simplification did something


def test_graph_is_checked_with_free_batch(tiny_export):
    model = onnx.load(str(tiny_export.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 48, 64]
    assert model.opset_import[0].version >= 17


def test_dynamic_export_is_correct_at_an_unseen_shape(tmp_path):
    result = export_model(ExportOptions(model="mprnet.derain", tile=(32, 32), dynamic=True,
                                        output_dir=tmp_path, build_overrides=TINY))  # fmt: skip
    assert result.onnx_path.name == "mprnet.derain.fp32.dynamic.onnx"
    assert result.manifest.tile is None
    model = model_from_name("mprnet.derain", overrides=TINY).module
    x = np.random.default_rng(1).random((2, 3, 40, 56), dtype=np.float32)  # neither shape verified
    with torch.no_grad():
        want = model(torch.from_numpy(x))[0].numpy()
    got = _ort(result.onnx_path).run(None, {"input": x})[0]
    assert np.abs(got - want).max() <= 1e-4


def _toy_ref(build: str, shape_general: bool) -> ModelRef:
    spec = ArchSpec(
        name="toy", title="toy", build=f"tests.models.toys:{build}",
        variants=(Variant("v", "toy", {}, (32, 32)),), default_variant="v",
        size_rule=SizeRule(multiple_of=8, shape_general=shape_general), default_overlap=0,
        licence="test",
    )  # fmt: skip
    return ModelRef(spec, spec.variants[0])


def test_shape_specialised_graph_is_refused_for_dynamic_hw(tmp_path):
    """int(H / 2) freezes under tracing: the second-shape check must catch it."""
    ref = _toy_ref("FrozenSplitNet", shape_general=True)
    with pytest.raises(VerificationError, match="dynamic height/width is refused"):
        export_model(ExportOptions(model=ref, tile=(32, 32), dynamic=True, output_dir=tmp_path))
    assert not list(tmp_path.glob("*.onnx"))
    # the same model exports fine as a static tile
    export_model(ExportOptions(model=ref, tile=(32, 32), output_dir=tmp_path))


def test_dynamic_refused_up_front_for_shape_specific_architectures(tmp_path):
    ref = _toy_ref("Identity", shape_general=False)
    with pytest.raises(ExportError, match="drop --dynamic"):
        export_model(ExportOptions(model=ref, dynamic=True, output_dir=tmp_path))


def test_wrong_graph_stops_the_export_with_figures(tmp_path):
    """A data-dependent branch traces one path; a dark image takes the other in PyTorch."""
    dark = tmp_path / "dark.png"
    write_image(dark, np.full((40, 40, 3), 20, np.uint8))
    ref = _toy_ref("BranchyNet", shape_general=False)
    with pytest.raises(VerificationError, match="differs from PyTorch") as err:
        export_model(ExportOptions(model=ref, images=(dark,), output_dir=tmp_path / "out"))
    assert "max abs" in str(err.value)
    assert not list((tmp_path / "out").glob("*.onnx"))
    report = json.loads(next((tmp_path / "out").glob("*.report.json")).read_text())
    assert report["fp32"]["passed"] is False and report["fp32"]["worst"]["max_abs"] > 1e-3


def test_one_slope_prelu_becomes_leaky_relu_and_computes_the_same():
    from onnx import TensorProto, helper, numpy_helper

    from restorekit.export.simplify import scalar_prelu_as_leaky_relu

    slopes = {"one": np.array([0.2], np.float32), "per_channel": np.array([[[0.1]], [[0.3]]],
                                                                           np.float32)}  # fmt: skip
    nodes = [helper.make_node("PRelu", ["input", "one"], ["a"], name="p1"),
             helper.make_node("PRelu", ["a", "per_channel"], ["output"], name="p2")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 3, 3])],
        [numpy_helper.from_array(v, k) for k, v in slopes.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    assert scalar_prelu_as_leaky_relu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["LeakyRelu", "PRelu"]
    assert [i.name for i in model.graph.initializer] == ["per_channel"]
    onnx.checker.check_model(model, full_check=True)
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    # written out independently: x if x >= 0 else slope * x, per stage
    a = np.where(x >= 0, x, 0.2 * x)
    want = np.where(a >= 0, a, slopes["per_channel"][None] * a)
    assert np.array_equal(after, before) and np.allclose(after, want, atol=1e-7)


def test_exported_mprnet_has_no_one_slope_prelu_left(tiny_export):
    ops = {n.op_type for n in onnx.load(str(tiny_export.onnx_path)).graph.node}
    assert "LeakyRelu" in ops and "PRelu" not in ops

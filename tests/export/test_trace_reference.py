"""The trace on the verification photos: its forward pass is PyTorch's reference for them."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import json

import numpy as np
import onnxruntime as ort

from restorekit.data import sample_paths
from restorekit.export import ExportOptions, export_model
from restorekit.export.trace import onnx_and_outputs, onnx_from_model
from restorekit.export.verify import model_inputs, torch_outputs
from restorekit.models import resolve
from restorekit.models.build import model_from_name
from tests.export.test_export import _toy_ref

TINY = resolve("mprnet").spec.tiny


@pytest.fixture(scope="module")
def built():
    return model_from_name("mprnet.derain", seed=5, overrides=TINY)


def test_traced_outputs_are_eager_pytorch_bit_for_bit(built):
    """Against a separate eager forward pass on the same photos: equal to the bit; the graph is
    the one a random-input trace gives and runs to the same figures in ONNX Runtime."""
    _, photos = model_inputs(built, sample_paths()[:3], (48, 64))
    graph, outputs = onnx_and_outputs(built.module, photos, built.ref.spec.output_index)
    assert np.array_equal(outputs, torch_outputs(built, photos))
    random_trace = onnx_from_model(built.module, (48, 64), 3, built.ref.spec.output_index)
    assert [n.op_type for n in graph.graph.node] == [n.op_type for n in random_trace.graph.node]
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"input": photos[:1]})[0] - outputs[:1]).max() <= 1e-4


def test_a_batch_of_one_is_refused(built):
    _, photos = model_inputs(built, sample_paths()[:1], (48, 64))
    with pytest.raises(ValueError, match="at least 2"):
        onnx_and_outputs(built.module, photos, built.ref.spec.output_index)


def test_a_forward_that_reads_values_gives_no_outputs():
    """BranchyNet takes a branch on float(x.mean()): the tracer says so, and no reference comes
    from that trace."""
    ref = _toy_ref("BranchyNet", shape_general=False)
    module = model_from_name(ref, seed=0).module
    bright = np.full((2, 3, 32, 32), 0.9, np.float32)
    _, outputs = onnx_and_outputs(module, bright, None)
    assert outputs is None


def test_branch_frozen_on_the_photos_is_still_caught(tmp_path):
    """Photos that all take one branch: the export traces again on random input (the other branch
    here) and the check against the photos stops it, as it does with one photo."""
    from restorekit.errors import VerificationError
    from restorekit.runtime.imageio import write_image

    paths = []
    for k in range(2):
        paths.append(tmp_path / f"dark{k}.png")
        write_image(paths[-1], np.full((40, 40, 3), 20 + k, np.uint8))
    ref = _toy_ref("BranchyNet", shape_general=False)
    with pytest.raises(VerificationError, match="differs from PyTorch"):
        export_model(ExportOptions(model=ref, images=tuple(paths), output_dir=tmp_path / "out"))


def test_export_with_one_photo_traces_random_input_and_verifies(tmp_path):
    one = sample_paths()[:1]
    result = export_model(ExportOptions(model="mprnet.derain", tile=(48, 64), images=one,
                                        output_dir=tmp_path, build_overrides=TINY, seed=5))  # fmt: skip
    report = json.loads(result.report_path.read_text())
    assert report["fp32"]["passed"] and len(report["fp32"]["comparisons"]) == 1  # batch 1 only

"""NLRN port: structure, parameter counts, the non-local module against a literal formulation,
per-state batch-norm, the official patch protocol, and ONNX export with shared weights."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import collections

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from restorekit.errors import InputError
from restorekit.models.nlrn import (
    NLRN,
    NonLocalBlock,
    official_patch_average,
    patch_origins,
)
from restorekit.models.registry import resolve

TINY = {"num_features": 8, "nl_features": 4, "num_steps": 3}


def _randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every batch-norm its own non-trivial affine and moving statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
                m.running_mean.normal_(0.0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


def _conv_and_bn_params(model: NLRN) -> tuple[int, int]:
    conv = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d)
               for p in m.parameters())  # fmt: skip
    bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
             for p in m.parameters())  # fmt: skip
    return conv, bn


def test_parameter_counts_match_the_paper():
    # docs/models.md, NLRN: 330 625 conv parameters ("about 330K" in the paper) + 9 474 BN affine
    # parameters for 12 states; each extra state adds 3 BNs x (gamma, beta) x 128.
    with torch.device("meta"):
        v0 = resolve("nlrn.dn_s25").build()
        later = resolve("nlrn.dn15_s25").build()
    assert _conv_and_bn_params(v0) == (330_625, 9_474)
    assert _conv_and_bn_params(later) == (330_625, 9_474 + 3 * 2 * 3 * 128)
    # Conv parameters by hand: conv1, conv_end, RB1_a/b, theta/phi (128->64), g (128->128).
    by_hand = (9 * 128 + 128) + (9 * 128 + 1) + 2 * (9 * 128 * 128 + 128) + 2 * (128 * 64 + 64)
    by_hand += 128 * 128 + 128
    assert by_hand == 330_625


def test_registry_carries_each_release_conventions():
    assert resolve("nlrn").name == "nlrn.demo_dn_s25"  # the bundled demo weights
    for sigma in (15, 25, 50):
        v0 = resolve(f"nlrn.dn_s{sigma}")
        assert v0.variant.default_tile == (45, 45) and v0.overlap == 45 - 7
        assert v0.variant.value_range == 255.0 and v0.variant.config["num_steps"] == 12
        assert v0.variant.config["corr_propagation"] and v0.variant.config["clip_max"] is None
        later = resolve(f"nlrn.dn15_s{sigma}")
        assert later.variant.default_tile == (43, 43) and later.overlap == 43 - 7
        assert later.variant.value_range == 1.0 and later.variant.config["num_steps"] == 15
        assert not later.variant.config["corr_propagation"]
        assert later.variant.config["clip_max"] == 1.0
    sr = resolve("nlrn.sr")
    assert sr.variant.color_order == "Y" and sr.variant.scale == 1
    assert "bicubic-upsampled" in sr.variant.task
    assert sr.spec.blend == "average"


def test_states_share_convolutions_but_not_batch_norms():
    model = resolve("nlrn").build(**TINY)
    _randomize_norms(model)
    convs = [m for m in model.rnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5  # theta, phi, g, RB1_a, RB1_b: one set for all states
    norms = [(s.norm_in, s.norm_a, s.norm_b) for s in model.rnn.steps]
    assert len(norms) == TINY["num_steps"]
    params = [id(p) for trio in norms for bn in trio for p in bn.parameters()]
    assert len(params) == len(set(params))  # no parameter object shared between states
    weights = torch.stack([bn.weight for trio in norms for bn in trio])
    assert torch.unique(weights, dim=0).shape[0] == weights.shape[0]
    for bn in (model.bn_in, *[bn for trio in norms for bn in trio]):
        assert bn.eps == pytest.approx(1e-3)  # TensorFlow's default, not PyTorch's 1e-5


def test_eval_batch_norm_equals_the_definition():
    model = NLRN(**TINY).eval()
    _randomize_norms(model, seed=3)
    bn = model.rnn.steps[1].norm_b
    x = torch.randn(2, 8, 5, 6)
    expected = F.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-3
    )
    torch.testing.assert_close(bn(x), expected, rtol=1e-6, atol=1e-6)


def _literal_non_local(block: NonLocalBlock, x: torch.Tensor, corr: torch.Tensor | None):
    """Paper Eq. 2, one query position at a time: softmax over every position of the patch."""
    theta, phi, g = block.theta(x), block.phi(x), block.g(x)
    b, c, h, w = x.shape
    out = x.clone()
    positions = [(i, j) for i in range(h) for j in range(w)]
    for n in range(b):
        for q, (qi, qj) in enumerate(positions):
            scores = torch.stack(
                [torch.dot(theta[n, :, qi, qj], phi[n, :, ki, kj]) for ki, kj in positions]
            )
            if corr is not None:
                scores = scores + corr[n, q]
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            mix = sum(weights[k] * g[n, :, ki, kj] for k, (ki, kj) in enumerate(positions))
            out[n, :, qi, qj] += mix
    return out


@pytest.mark.parametrize("with_corr", [False, True])
def test_non_local_module_equals_literal_per_position_formulation(with_corr):
    torch.manual_seed(0)
    block = NonLocalBlock(6, 3)
    x = torch.randn(2, 6, 4, 5)
    corr = torch.randn(2, 20, 20) if with_corr else None
    with torch.no_grad():
        got, scores = block(x, corr)
        expected = _literal_non_local(block, x, corr)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The returned scores are the pre-softmax logits including the propagated correlation.
    theta = block.theta(x).flatten(2)
    phi = block.phi(x).flatten(2)
    raw = torch.einsum("bcq,bck->bqk", theta, phi)
    torch.testing.assert_close(scores, raw + corr if with_corr else raw, rtol=1e-5, atol=1e-5)


def _literal_forward(model: NLRN, x: torch.Tensor, propagate: bool) -> torch.Tensor:
    """The recurrence written out from the paper/official graph, with the literal non-local."""

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 1e-3)

    y = model.conv1(bn(model.bn_in, x))
    h, acc = y, None
    for s in model.rnn.steps:
        t = torch.relu(bn(s.norm_in, h))
        nl = model.rnn.non_local
        t_out = _literal_non_local(nl, t, acc)
        raw = torch.einsum("bcq,bck->bqk", nl.theta(t).flatten(2), nl.phi(t).flatten(2))
        if propagate:
            acc = raw if acc is None else acc + raw  # scores accumulate over the states
        t = model.rnn.RB1_a(bn(s.norm_a, t_out))
        t = model.rnn.RB1_b(torch.relu(bn(s.norm_b, t)))
        h = t + y
    return x + model.conv_end(torch.relu(bn(model.bn_end, h)))


@pytest.mark.parametrize("propagate", [True, False])
def test_whole_network_equals_literal_recurrence(propagate):
    torch.manual_seed(1)
    model = NLRN(num_features=4, nl_features=2, num_steps=3, corr_propagation=propagate).eval()
    _randomize_norms(model, seed=5)
    x = torch.rand(1, 1, 4, 4) * 255
    with torch.no_grad():
        got = model(x)
        expected = _literal_forward(model, x, propagate)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_later_release_clips_to_unit_range():
    torch.manual_seed(2)
    model = resolve("nlrn.dn15_s25").build(**TINY).eval()
    _randomize_norms(model)
    with torch.no_grad():
        model.conv_end.bias.fill_(5.0)  # push outputs out of range
        out = model(torch.rand(2, 1, 9, 9))
    assert out.min() >= 0.0 and out.max() <= 1.0 and (out == 1.0).any()


# ---------------------------------------------------------------------------------------------
# The official patch protocol.


def test_patch_origins_follow_the_official_scripts():
    assert patch_origins(45, 45) == [0]
    assert patch_origins(52, 45) == [0, 7]
    assert patch_origins(60, 45) == [0, 7, 14, 15]  # the last patch is flush with the edge
    assert patch_origins(59, 45) == [0, 7, 14]  # 14 = 59 - 45 is already the edge patch
    assert patch_origins(100, 43)[-1] == 57
    with pytest.raises(InputError, match="smaller than the 45-px"):
        patch_origins(44, 45)


def test_official_patch_average_with_identity_returns_the_image():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (1, 61, 58))
    out = official_patch_average(image, lambda b: b.copy(), patch=45, batch=3)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-12)


def test_official_patch_average_equals_per_pixel_average():
    # A patch-position-dependent "model" (adds the in-patch row index): the average at each pixel
    # is computed here literally from the patches that cover it.
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (1, 20, 17))
    patch, stride = 9, 4

    def fwd(batch):
        return batch + np.arange(patch)[None, None, :, None]

    out = official_patch_average(image, fwd, patch=patch, stride=stride, batch=5)
    rows = list(range(0, 20 - patch, stride)) + [20 - patch]
    cols = list(range(0, 17 - patch, stride)) + [17 - patch]
    expected = np.zeros_like(image)
    for y in range(20):
        for x in range(17):
            vals = [image[0, y, x] + (y - r) for r in rows for c in cols
                    if r <= y < r + patch and c <= x < c + patch]  # fmt: skip
            expected[0, y, x] = sum(vals) / len(vals)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# ONNX.


def _shared_conv_initializers(graph: onnx.GraphProto, model: NLRN) -> dict[str, int]:
    """How many initializers hold a copy of each shared recurrent kernel (by value)."""
    counts = {}
    for name in ("non_local.theta", "non_local.phi", "non_local.g", "RB1_a", "RB1_b"):
        weight = model.rnn.get_submodule(name).weight.detach().numpy()
        counts[name] = sum(
            1
            for init in graph.initializer
            if tuple(init.dims) == weight.shape
            and np.array_equal(onnx.numpy_helper.to_array(init), weight)
        )
    return counts


def test_traced_graph_unrolls_states_and_stores_shared_weights_once():
    from restorekit.export.trace import onnx_from_model

    model = NLRN(**TINY).eval()
    _randomize_norms(model)  # distinct BNs: a fused copy per state would show up
    graph = onnx_from_model(model, (45, 45), 1).graph
    assert _shared_conv_initializers(graph, model) == dict.fromkeys(
        ("non_local.theta", "non_local.phi", "non_local.g", "RB1_a", "RB1_b"), 1
    )
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["Softmax"] == TINY["num_steps"]
    assert ops["Conv"] == 2 + 5 * TINY["num_steps"]
    assert ops["BatchNormalization"] == 0  # eval BN is scale/shift (see TFBatchNorm2d)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model through restore-export's pipeline, with distinct per-state batch-norms
    (random weights with default BNs would make every state's BN identical)."""
    from safetensors.torch import save_file

    from restorekit.export.pipeline import ExportOptions, export_model

    out = tmp_path_factory.mktemp("nlrn_onnx")
    torch.manual_seed(0)
    model = resolve("nlrn.dn_s25").build(**TINY)
    _randomize_norms(model)
    weights = out / "tiny.safetensors"
    save_file(model.state_dict(), str(weights))
    return export_model(
        ExportOptions(
            model="nlrn.dn_s25",
            weights=weights,
            tile=(45, 45),
            batch=4,
            output_dir=out,
            build_overrides=TINY,
        )
    )


def test_export_pipeline_verifies_at_patch_size_with_batch(exported):
    assert exported.report.passed
    assert {c.batch for c in exported.report.comparisons} >= {1, 4}
    m = exported.manifest
    assert m.tile == (45, 45) and m.overlap == 38 and m.blend == "average"
    assert m.input.value_range == 255.0


def test_exported_graph_runs_any_batch_against_pytorch(exported):
    import onnxruntime as ort

    model = onnx.load(str(exported.onnx_path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 45, 45]
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    patches = np.random.default_rng(7).uniform(0, 255, (3, 1, 45, 45)).astype(np.float32)
    (got,) = session.run(None, {"input": patches})
    with torch.no_grad():
        expected = exported.built.module(torch.from_numpy(patches)).numpy()
    err = np.abs(got - expected)
    assert err.max() <= 1e-4 * 255, f"max {err.max():.3g}, p99 {np.quantile(err, 0.99):.3g}"


def test_exported_graph_stores_shared_weights_once(exported):
    graph = onnx.load(str(exported.onnx_path)).graph
    kernels = [i for i in graph.initializer if tuple(i.dims) == (8, 8, 3, 3)]
    assert len(kernels) == 2  # RB1_a and RB1_b, once each

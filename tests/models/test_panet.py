"""PANet / PA-EDSR: sizes, the batched attention against the paper's literal formulation,
strict loading of official-layout checkpoints, and ONNX export."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import math

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from restorekit.data import sample_paths
from restorekit.errors import WeightsError
from restorekit.export import ExportOptions, export_model
from restorekit.models.build import model_from_name
from restorekit.models.checkpoint import load_weights
from restorekit.models.panet import PANet
from restorekit.models.pyramid_attention import (
    PyramidAttention,
    attention_bytes,
    bicubic_matrix,
    extract_patches,
    level_size,
    paste_patches,
    resize_bicubic,
)
from restorekit.models.registry import resolve

SCALES = (1.0, 0.9, 0.8, 0.7, 0.6)
TINY = dict(resolve("panet").spec.tiny)


def report(actual: torch.Tensor, expected: torch.Tensor) -> str:
    err = (actual - expected).abs().flatten()
    q = torch.quantile(err.double(), torch.tensor([0.5, 0.99, 1.0], dtype=torch.double))
    return f"abs error median {q[0]:.2e}, p99 {q[1]:.2e}, max {q[2]:.2e} over {err.numel()} values"


# --------------------------------------------------------------------------------------------
# The paper's formulation, written literally: per image, match with a convolution whose kernels
# are the normalised key patches of all pyramid levels, softmax over those kernels, paste the
# value patches back with a transposed convolution, divide by 4.
# --------------------------------------------------------------------------------------------
def literal_attention(m: PyramidAttention, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    query = m.conv_match_L_base(x)
    keys, values = [], []
    for s in SCALES:
        # Pyramid level of floor(H*s) x floor(W*s), sampled as PyTorch 1.1 did (by the sizes).
        ref = (
            x
            if s == 1
            else F.interpolate(
                x, size=(math.floor(h * s), math.floor(w * s)), mode="bicubic", align_corners=False
            )
        )
        k = F.unfold(m.conv_match(ref), 3, padding=1)  # [B, Cm*9, Ls]
        v = F.unfold(m.conv_assembly(ref), 3, padding=1)  # [B, C*9, Ls]
        keys.append(k.reshape(b, -1, 3, 3, k.shape[-1]).permute(0, 4, 1, 2, 3))
        values.append(v.reshape(b, c, 3, 3, v.shape[-1]).permute(0, 4, 1, 2, 3))
    out = []
    for i in range(b):
        wi = torch.cat([k[i] for k in keys], dim=0)  # [L, Cm, 3, 3]
        norm = torch.sqrt((wi * wi).sum(dim=(1, 2, 3), keepdim=True))
        wi = wi / torch.max(norm, m.escape_NaN)
        yi = F.conv2d(F.pad(query[i : i + 1], (1, 1, 1, 1)), wi)  # [1, L, H, W]
        yi = F.softmax(yi * 10, dim=1)
        raw = torch.cat([v[i] for v in values], dim=0)  # [L, C, 3, 3]
        out.append(F.conv_transpose2d(yi, raw, padding=1) / 4.0)
    return torch.cat(out, dim=0) + x * m.res_scale


@pytest.mark.parametrize(
    ("shape", "channel", "reduction", "res_scale"),
    [((2, 16, 12, 12), 16, 2, 1.0), ((3, 16, 17, 23), 16, 2, 1.0), ((2, 32, 20, 9), 32, 8, 0.1)],
)
def test_attention_matches_literal_formulation(shape, channel, reduction, res_scale):
    torch.manual_seed(0)
    m = PyramidAttention(channel=channel, reduction=reduction, res_scale=res_scale).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        got, want = m(x), literal_attention(m, x)
    assert got.shape == want.shape == x.shape
    assert (got - want).abs().max() <= 1e-5, report(got, want)


@pytest.mark.parametrize(
    ("shape", "channel", "reduction"), [((2, 64, 24, 30), 64, 2), ((2, 32, 19, 21), 32, 8)]
)
def test_attention_equals_literal_formulation_in_float64(shape, channel, reduction):
    # In float64 rounding vanishes, so only an algebraic difference could show.
    torch.manual_seed(0)
    m = PyramidAttention(channel=channel, reduction=reduction).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        got, want = m(x), literal_attention(m, x)
    assert (got - want).abs().max() <= 1e-10, report(got, want)


def test_attention_float32_error_at_full_panet_width():
    # At PANet's width (64 channels, L = 3 278 keys at 32x32) float32 rounding in the softmax
    # sums reaches ~1e-5 in either formulation: both are judged against the float64 literal.
    torch.manual_seed(0)
    m = PyramidAttention(channel=64, reduction=2).eval()
    x = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        got = m(x)
        literal32 = literal_attention(m, x)
        exact = literal_attention(m.double(), x.double()).float()
    assert (got - exact).abs().max() <= 1e-5, (
        f"rewrite: {report(got, exact)}; float32 literal: {report(literal32, exact)}"
    )


def test_attention_is_not_trivial():
    # Guards the comparison above: the attention term must be of the order of the input.
    torch.manual_seed(1)
    m = PyramidAttention(channel=16, reduction=2, res_scale=0.0).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 16, 12, 12)).abs().mean() > 1e-2


def test_patch_convolutions_equal_unfold_and_fold():
    x = torch.randn(2, 5, 7, 9)
    assert torch.equal(extract_patches(x, 5), F.unfold(x, 3, padding=1))
    cols = torch.randn(2, 5 * 9, 7 * 9)
    want = F.fold(cols, (7, 9), 3, padding=1)
    assert (paste_patches(cols, 5, 7, 9) - want).abs().max() <= 1e-6


@pytest.mark.parametrize("tile", [(48, 48), (64, 64), (31, 57)])
def test_attention_bytes_counts_the_pyramid(tile):
    h, w = tile
    x = torch.zeros(1, 1, h, w)
    levels = [x] + [
        F.interpolate(x, scale_factor=s, mode="bicubic", recompute_scale_factor=True)
        for s in SCALES[1:]
    ]
    keys = sum(t.shape[-1] * t.shape[-2] for t in levels)
    assert attention_bytes(tile, batch=2) == 2 * keys * h * w * 4


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("panet.dn_s30", 5_957_358),
        ("panet.car_q10", 5_955_052),
        ("pa-edsr.sr_x2", 40_811_870),
        ("pa-edsr.sr_x3", 43_762_270),
        ("pa-edsr.sr_x4", 43_172_190),
    ],
)
def test_parameter_counts(name, params):
    # PANet 5.957 M (RGB) / 5.955 M (gray), PA-EDSR 40.81 / 43.76 / 43.17 M (docs/models.md, PANet).
    with torch.device("meta"):
        model = resolve(name).build()
    assert sum(p.numel() for p in model.parameters()) == params


def test_registry_variants():
    assert resolve("panet").name == "panet.demo_dn_s25"  # the bundled demo weights
    names = [f"panet.dn_s{s}" for s in (10, 30, 50, 70)] + [
        f"panet.car_q{q}" for q in (10, 20, 30, 40)
    ]
    for name in [*names, "panet.demosaic"]:
        ref = resolve(name)
        assert ref.variant.value_range == 1.0
        assert ref.spec.size_rule.max_tile_area is not None
        h, w = ref.variant.default_tile
        assert h * w <= ref.spec.size_rule.max_tile_area
    assert resolve("panet.car_q20").variant.color_order == "Y"
    assert resolve("panet.car_q20").variant.in_channels == 1
    for r in (2, 3, 4):
        assert resolve(f"pa-edsr.sr_x{r}").variant.scale == r
        assert resolve(f"pa-edsr.sr_x{r}").variant.config["scale"] == r


def _panet_forward_by_hand(model: PANet, x: torch.Tensor) -> torch.Tensor:
    feat = model.head(x)
    y = feat
    n = model.n_resblocks
    for i in range(n // 2):
        blk = model.body[i].body
        y = blk[2](blk[1](blk[0](y))) + y
    y = literal_attention(model.body[n // 2], y)
    for i in range(n // 2 + 1, n + 1):
        blk = model.body[i].body
        y = blk[2](blk[1](blk[0](y))) + y
    y = model.body[n + 1](y)
    return model.tail(y + feat)


def test_panet_forward_composition():
    torch.manual_seed(0)
    model = resolve("panet.dn_s30").build(**TINY).eval()
    x = torch.rand(2, 3, 15, 13)
    with torch.no_grad():
        got, want = model(x), _panet_forward_by_hand(model, x)
    assert (got - want).abs().max() <= 1e-5, report(got, want)


def _paedsr_forward_by_hand(model, x: torch.Tensor, scale: int) -> torch.Tensor:
    # EDSR: mean shift by the DIV2K RGB mean (rgb_range 1), residual scale 0.1 in the blocks and
    # the attention, ReLU, PixelShuffle upsampler, mean added back.
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).reshape(1, 3, 1, 1)
    feat = model.head(x - mean)
    y = feat
    n = model.n_resblocks
    for i in range(n + 1):
        if i == n // 2:
            y = literal_attention(model.body[i], y)
            continue
        blk = model.body[i].body
        y = blk[2](torch.relu(blk[0](y))) * 0.1 + y
    y = model.body[n + 1](y) + feat
    convs = [m for m in model.tail[0] if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        y = F.pixel_shuffle(conv(y), 3 if scale == 3 else 2)
    return model.tail[1](y) + mean


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paedsr_forward_composition(scale):
    torch.manual_seed(0)
    model = resolve(f"pa-edsr.sr_x{scale}").build(**TINY).eval()
    assert model.attention.res_scale == 0.1
    x = torch.rand(2, 3, 9, 12)
    with torch.no_grad():
        got, want = model(x), _paedsr_forward_by_hand(model, x, scale)
    assert got.shape == (2, 3, 9 * scale, 12 * scale)
    assert (got - want).abs().max() <= 1e-5, report(got, want)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paedsr_output_size(scale):
    model = resolve(f"pa-edsr.sr_x{scale}").build(**TINY).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 11, 14))
    assert y.shape == (1, 3, 11 * scale, 14 * scale)


def test_odd_block_count_is_rejected():
    with pytest.raises(ValueError, match="even"):
        PANet(n_resblocks=3, n_feats=8)


# --------------------------------------------------------------------------------------------
# Official checkpoints: raw state dicts with this key layout (from the official module tree:
# sub_mean, head, body = n/2 ResBlocks + PyramidAttention + n/2 ResBlocks + conv, tail, add_mean;
# PA-EDSR also has the attention as `msa`).
# --------------------------------------------------------------------------------------------
def _conv(sd: dict, key: str, cin: int, cout: int, k: int) -> None:
    sd[f"{key}.weight"] = torch.randn(cout, cin, k, k) * 0.05
    sd[f"{key}.bias"] = torch.randn(cout) * 0.05


def _official_attention(prefix: str, c: int, reduction: int) -> dict:
    sd: dict = {f"{prefix}.escape_NaN": torch.tensor([1e-4])}
    for name, cout in (("conv_match_L_base", c // reduction), ("conv_match", c // reduction)):
        _conv(sd, f"{prefix}.{name}.0", c, cout, 1)
        sd[f"{prefix}.{name}.1.weight"] = torch.full((1,), 0.25)
    _conv(sd, f"{prefix}.conv_assembly.0", c, c, 1)
    sd[f"{prefix}.conv_assembly.1.weight"] = torch.full((1,), 0.25)
    return sd


def _official_layout(n: int, c: int, colors: int, prelu: bool, reduction: int, tail) -> dict:
    sd: dict = {}
    _conv(sd, "sub_mean", 3, 3, 1)
    _conv(sd, "head.0", colors, c, 3)
    for i in [*range(n // 2), *range(n // 2 + 1, n + 1)]:
        _conv(sd, f"body.{i}.body.0", c, c, 3)
        if prelu:
            sd[f"body.{i}.body.1.weight"] = torch.full((1,), 0.25)
        _conv(sd, f"body.{i}.body.2", c, c, 3)
    sd.update(_official_attention(f"body.{n // 2}", c, reduction))
    _conv(sd, f"body.{n + 1}", c, c, 3)
    tail(sd)
    _conv(sd, "add_mean", 3, 3, 1)
    return sd


def official_panet(n: int, c: int, colors: int = 3) -> dict:
    return _official_layout(n, c, colors, True, 2, lambda sd: _conv(sd, "tail.0", c, colors, 3))


def official_paedsr(n: int, c: int, scale: int) -> dict:
    def tail(sd: dict) -> None:
        if scale == 3:
            _conv(sd, "tail.0.0", c, 9 * c, 3)
        else:
            for j in range(int(math.log2(scale))):
                _conv(sd, f"tail.0.{2 * j}", c, 4 * c, 3)
        _conv(sd, "tail.1", c, 3, 3)

    sd = _official_layout(n, c, 3, False, 8, tail)
    # The same module registered a second time: the same tensors under `msa.`.
    prefix = f"body.{n // 2}."
    sd.update({"msa." + k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)})
    return sd


def _assert_loaded(model: torch.nn.Module, sd: dict) -> None:
    own = model.state_dict()
    for key, value in sd.items():
        if key.startswith("msa."):
            continue
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize("name", ["panet.dn_s10", "panet.car_q40", "panet.demosaic"])
def test_official_panet_checkpoint_loads_strictly(tmp_path, name):
    ref = resolve(name)
    colors = ref.variant.in_channels
    sd = official_panet(2, 16, colors)
    path = tmp_path / "model_N10.pt"
    torch.save(sd, path)
    model = ref.build(**TINY)
    digest = load_weights(model, ref, path)
    assert len(digest) == 64
    _assert_loaded(model, sd)
    assert set(model.state_dict()) == set(sd)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_paedsr_checkpoint_with_msa_duplicates_loads(tmp_path, scale):
    ref = resolve(f"pa-edsr.sr_x{scale}")
    sd = official_paedsr(4, 16, scale)
    assert sum(k.startswith("msa.") for k in sd) == 10  # 3 x (weight, bias, prelu) + escape_NaN
    torch.save(sd, tmp_path / f"model_x{scale}.pt")
    model = ref.build(**TINY | {"n_resblocks": 4})
    load_weights(model, ref, tmp_path / f"model_x{scale}.pt")
    _assert_loaded(model, sd)
    assert torch.equal(model.attention.escape_NaN, torch.tensor([1e-4]))


def test_paedsr_released_layout_attention_at_body_16(tmp_path):
    # The released block count (32): attention keys under both msa.* and body.16.*.
    ref = resolve("pa-edsr.sr_x4")
    sd = official_paedsr(32, 16, 4)
    assert "msa.escape_NaN" in sd and "body.16.escape_NaN" in sd and "body.33.weight" in sd
    torch.save(sd, tmp_path / "model_x4.pt")
    model = ref.build(n_feats=16)
    load_weights(model, ref, tmp_path / "model_x4.pt")
    _assert_loaded(model, sd)
    assert model.attention is model.body[16]


def test_paedsr_checkpoint_with_only_msa_names_loads(tmp_path):
    ref = resolve("pa-edsr.sr_x2")
    sd = official_paedsr(4, 16, 2)
    sd = {k: v for k, v in sd.items() if not k.startswith("body.2.")}  # keep only the msa copy
    torch.save(sd, tmp_path / "dedup.pt")
    model = ref.build(**TINY | {"n_resblocks": 4})
    load_weights(model, ref, tmp_path / "dedup.pt")
    assert torch.equal(model.body[2].conv_match[0].weight, sd["msa.conv_match.0.weight"])


def test_paedsr_differing_msa_copy_is_refused(tmp_path):
    ref = resolve("pa-edsr.sr_x2")
    sd = official_paedsr(4, 16, 2)
    sd["msa.conv_match.0.weight"] = sd["msa.conv_match.0.weight"] + 1
    torch.save(sd, tmp_path / "edited.pt")
    with pytest.raises(WeightsError, match="msa.conv_match.0.weight and body.2"):
        load_weights(ref.build(**TINY | {"n_resblocks": 4}), ref, tmp_path / "edited.pt")


@pytest.mark.parametrize(("saved", "built"), [(4, 2), (2, 6)])
def test_wrong_block_count_fails_clearly(tmp_path, saved, built):
    ref = resolve("panet.dn_s50")
    torch.save(official_panet(saved, 16), tmp_path / "model_N50.pt")
    model = ref.build(n_resblocks=built, n_feats=16)
    with pytest.raises(WeightsError, match=f"file holds {saved} residual blocks") as info:
        load_weights(model, ref, tmp_path / "model_N50.pt")
    assert f"n_resblocks={saved}" in str(info.value)


def test_wrong_block_count_fails_for_paedsr(tmp_path):
    ref = resolve("pa-edsr.sr_x4")
    torch.save(official_paedsr(6, 16, 4), tmp_path / "model_x4.pt")
    with pytest.raises(WeightsError, match="file holds 6 residual blocks"):
        load_weights(ref.build(**TINY), ref, tmp_path / "model_x4.pt")


def test_gray_checkpoint_for_rgb_variant_names_the_fitting_variants(tmp_path):
    ref = resolve("panet.dn_s30")
    torch.save(official_panet(80, 64, colors=1), tmp_path / "Q10.pt")
    with torch.device("meta"):
        model = ref.build()
    with pytest.raises(WeightsError, match="fit panet.car_q10, panet.car_q20") as info:
        load_weights(model, ref, tmp_path / "Q10.pt")
    assert "head.0.weight" in str(info.value)


def test_released_size_checkpoint_loads_into_full_panet(tmp_path):
    # The real configuration: 80 blocks, attention at body.40, final conv at body.81.
    ref = resolve("panet.dn_s30")
    sd = official_panet(80, 64)
    assert "body.40.escape_NaN" in sd and "body.81.weight" in sd
    torch.save(sd, tmp_path / "model_N30.pt")
    model = ref.build()
    load_weights(model, ref, tmp_path / "model_N30.pt")
    _assert_loaded(model, sd)


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["panet.dn_s30", pytest.param("panet.car_q10", marks=pytest.mark.slow), "pa-edsr.sr_x2"]
)
def test_onnx_matches_pytorch_at_default_tile(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    ref = resolve(name)
    result = export_model(
        ExportOptions(
            model=name,
            batch=2,
            output_dir=tmp_path,
            build_overrides=TINY,
            seed=3,
            images=tuple(sample_paths()[:2]),  # real photos at batch 1 and 2; two keep it fast
        )
    )
    assert result.report.passed and result.report.worst.max_abs <= 2e-4, result.report.table()
    h, w = ref.variant.default_tile
    assert result.manifest.tile == (h, w)
    ops = {n.op_type for n in onnx.load(str(result.onnx_path)).graph.node}
    # The pyramid's bicubic resizes are matrix products too (ONNX Runtime's cubic Resize is slow).
    assert "MatMul" in ops and "Softmax" in ops and not ops & {"Col2Im", "Loop", "Resize"}
    # Independently of the exporter's own report: random inputs at batch 2.
    model = model_from_name(name, seed=3, overrides=TINY).module.eval()
    sess = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, ref.variant.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == want.shape
    err = np.abs(got - want)
    assert err.max() <= 2e-4, f"max {err.max():.2e}, mean {err.mean():.2e}"


@pytest.mark.parametrize(
    ("size_in", "size_out"),
    [((32, 32), (28, 28)), ((32, 32), (19, 19)), ((48, 33), (43, 23)), ((7, 90), (6, 62)),
     ((5, 5), (9, 12)), ((1, 4), (1, 2))],
)  # fmt: skip
def test_bicubic_matrices_resize_like_interpolate(size_in, size_out):
    x = torch.rand(2, 3, *size_in, generator=torch.Generator().manual_seed(0))
    want = F.interpolate(x, size=size_out, mode="bicubic", align_corners=False)
    rows, cols = bicubic_matrix(size_out[0], size_in[0]), bicubic_matrix(size_out[1], size_in[1])
    got = rows @ x @ cols.T
    # float32 rounding only (values in [0, 1]; measured <= 2.5e-6)
    assert (got - want).abs().max() <= 1e-5
    # Keys' weights sum to one at every position, border repeats included
    assert torch.allclose(rows.sum(1), torch.ones(size_out[0]), atol=1e-6)


@pytest.mark.parametrize("scale", SCALES[1:])
@pytest.mark.parametrize(("h", "w"), [(17, 17), (23, 45), (32, 32), (45, 23), (48, 48)])
def test_pyramid_levels_resize_like_the_official_call(scale, h, w):
    # The official pyramid calls F.interpolate(x, scale_factor=s, mode="bicubic") under PyTorch
    # 1.1, which sampled by the floored output size; recompute_scale_factor=True is PyTorch's own
    # kernel on that path. (The default since PyTorch 1.6 samples at 1/s instead: a different
    # resize from the one the released models were trained with.)
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    want = F.interpolate(
        x, scale_factor=scale, mode="bicubic", align_corners=False, recompute_scale_factor=True
    )
    size = (level_size(h, scale), level_size(w, scale))
    eager = resize_bicubic(x, size)
    assert eager.shape == want.shape and torch.equal(eager, want)
    rows, cols = bicubic_matrix(size[0], h), bicubic_matrix(size[1], w)
    exported_form = rows @ x @ cols.T  # what resize_bicubic computes inside an ONNX export
    assert (exported_form - want).abs().max() <= 1e-5  # float32 rounding (values in [0, 1])


def test_exported_resize_is_traced_as_matrices_and_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Resize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return resize_bicubic(x, (level_size(x.shape[-2], 0.7), level_size(x.shape[-1], 0.7)))

    path = tmp_path / "resize.onnx"
    x = torch.rand(1, 4, 30, 40)
    torch.onnx.export(Resize(), (x,), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})  # fmt: skip
    assert "Resize" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(30, 40), (17, 90)]:  # the traced size and another: matrices built in-graph
        x = torch.rand(1, 4, h, w)
        want = F.interpolate(x, size=(int(h * 0.7), int(w * 0.7)), mode="bicubic")
        got = sess.run(None, {"x": x.numpy()})[0]
        assert got.shape == want.shape and np.abs(got - want.numpy()).max() <= 1e-5


@pytest.mark.parametrize("name", ["panet.dn_s30", "pa-edsr.sr_x3"])
def test_dynamic_height_width_onnx_is_correct_at_other_shapes(tmp_path, name):
    # Backs size_rule.shape_general: one graph traced at 24x24 serves other shapes.
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = resolve(name).build(**TINY).eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    path = tmp_path / "dynamic.onnx"
    torch.onnx.export(
        model,
        (torch.rand(2, 3, 24, 24),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": axes, "output": axes},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 20, 31), (3, 3, 37, 29), (1, 3, 10, 45)]:
        x = torch.rand(shape)
        with torch.no_grad():
            want = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == want.shape
        err = np.abs(got - want)
        assert err.max() <= 2e-4, f"{shape}: max {err.max():.2e}, mean {err.mean():.2e}"


class _Pyramid(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = x.shape[-2:]
        return tuple(
            F.interpolate(x, size=(level_size(h, s), level_size(w, s)), mode="bicubic")
            for s in SCALES[1:]
        )


def test_dynamic_onnx_pyramid_sizes_floor_like_pytorch(tmp_path):
    # Traced in float32, floor(90 * 0.7) is 63; PyTorch (and PyTorch 1.1, which trained the
    # released models) floors the float64 product 62.99999999999999 to 62.
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "pyramid.onnx"
    torch.onnx.export(
        _Pyramid(),
        (torch.rand(1, 1, 20, 20),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {2: "h", 3: "w"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(90, 7), (170, 180), (33, 350)]:
        x = torch.rand(1, 1, h, w)
        got = [o.shape for o in sess.run(None, {"x": x.numpy()})]
        want = [
            tuple(
                F.interpolate(x, scale_factor=s, mode="bicubic", recompute_scale_factor=True).shape
            )
            for s in SCALES[1:]
        ]
        assert got == want, (h, w)

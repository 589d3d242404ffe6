"""MPRNet: sizes from the paper, the official state-dict layout, and the batched patch hierarchy
against a literal per-patch formulation (the official forward's structure, written out here)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch

from restorekit.models import resolve
from restorekit.models.build import model_from_name

# Parameter counts of the three official task configurations (docs/models.md, MPRNet; measured
# on the official code): 20.127 M (deblur; paper 20.1 M), 15.741 M, 3.637 M.
OFFICIAL_PARAMS = {"deblur": 20_127_073, "denoise": 15_741_025, "derain": 3_637_249}


@pytest.mark.parametrize("variant", sorted(OFFICIAL_PARAMS))
def test_parameter_counts_and_state_dict_layout(variant):
    with torch.device("meta"):
        model = resolve(f"mprnet.{variant}").build()
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant]
    sd = model.state_dict()
    # 316 keys, 262 distinct tensors: the one shared PReLU appears under 55 names.
    assert len(sd) == 316
    assert len({id(t) for t in model.state_dict(keep_vars=True).values()}) == 262
    assert "shallow_feat1.1.body.1.weight" in sd and "stage3_orsnet.orb3.body.8.weight" in sd


def _literal_forward(m, x):
    """The official forward: four stage-1 patches and two stage-2 halves processed one by one."""
    H, W = x.shape[2], x.shape[3]
    top, bot = x[:, :, : H // 2], x[:, :, H // 2 :]
    quads = [top[..., : W // 2], top[..., W // 2 :], bot[..., : W // 2], bot[..., W // 2 :]]
    feats = [m.stage1_encoder(m.shallow_feat1(q)) for q in quads]
    f_top = [torch.cat((a, b), 3) for a, b in zip(feats[0], feats[1], strict=True)]
    f_bot = [torch.cat((a, b), 3) for a, b in zip(feats[2], feats[3], strict=True)]
    r_top, r_bot = m.stage1_decoder(f_top), m.stage1_decoder(f_bot)
    s_top, img_top = m.sam12(r_top[0], top)
    s_bot, img_bot = m.sam12(r_bot[0], bot)
    x2_top = m.concat12(torch.cat([m.shallow_feat2(top), s_top], 1))
    x2_bot = m.concat12(torch.cat([m.shallow_feat2(bot), s_bot], 1))
    e_top = m.stage2_encoder(x2_top, f_top, r_top)
    e_bot = m.stage2_encoder(x2_bot, f_bot, r_bot)
    feat2 = [torch.cat((a, b), 2) for a, b in zip(e_top, e_bot, strict=True)]
    res2 = m.stage2_decoder(feat2)
    s3, img2 = m.sam23(res2[0], x)
    x3 = m.concat23(torch.cat([m.shallow_feat3(x), s3], 1))
    out = m.tail(m.stage3_orsnet(x3, feat2, res2)) + x
    return [out, img2, torch.cat([img_top, img_bot], 2)]


@pytest.mark.parametrize("shape", [(2, 32, 48), (1, 40, 24), (3, 64, 64)])
def test_batched_patches_equal_literal_per_patch_forward(shape):
    ref = resolve("mprnet.derain")
    model = model_from_name(ref, overrides=ref.spec.tiny).module
    with torch.no_grad():
        x = torch.rand(shape[0], 3, shape[1], shape[2], generator=torch.Generator().manual_seed(1))
        got = model(x)
        want = _literal_forward(model, x)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape == x.shape
        err = (g - w).abs()
        assert err.max() < 1e-5, f"max {err.max():.2e}, mean {err.mean():.2e}"


def test_downsample_is_bilinear_half():
    """AvgPool2d(2) in DownSample equals the official bilinear interpolation at scale 0.5."""
    x = torch.rand(2, 5, 16, 24)
    bilinear = torch.nn.functional.interpolate(
        x, scale_factor=0.5, mode="bilinear", align_corners=False
    )
    pooled = (
        resolve("mprnet.derain")
        .build(**resolve("mprnet").spec.tiny)
        .stage1_encoder.down12.down[0](x)
    )
    assert (bilinear - pooled).abs().max() < 1e-6

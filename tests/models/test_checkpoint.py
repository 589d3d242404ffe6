"""Official-format checkpoints load strictly; wrong ones fail with a message a user can act on."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch

from restorekit.errors import WeightsError
from restorekit.models import resolve
from restorekit.models.build import model_from_name
from restorekit.models.checkpoint import normalize_state_dict


def _official_style_save(model, path):
    """As MPRNet's train.py saves under DataParallel: {'epoch','state_dict','optimizer'}, 'module.'."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    torch.save(
        {"epoch": 3000, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, path
    )


def test_official_format_loads_strictly_and_reproduces_output(tmp_path):
    ref = resolve("mprnet.derain")
    source = model_from_name(ref, seed=7, overrides=ref.spec.tiny).module
    path = tmp_path / "model_deraining.pth"
    _official_style_save(source, path)
    loaded = model_from_name(ref, weights=path, seed=123, overrides=ref.spec.tiny)
    assert loaded.weights.startswith("model_deraining.pth sha256:")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x)[0], loaded.module(x)[0])


def test_full_size_official_checkpoint_loads(tmp_path):
    ref = resolve("mprnet.derain")
    source = model_from_name(ref, seed=1).module
    path = tmp_path / "model_deraining.pth"
    _official_style_save(source, path)
    loaded = model_from_name(ref, weights=path).module
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_deduplicated_safetensors_loads(tmp_path):
    """safetensors stores the shared PReLU once; the loader fills its 54 other names."""
    from safetensors.torch import save_model

    ref = resolve("mprnet.derain")
    source = model_from_name(ref, seed=3, overrides=ref.spec.tiny).module
    with torch.no_grad():
        source.shallow_feat1[1].body[1].weight.fill_(0.1234)
    path = tmp_path / "w.safetensors"
    save_model(source, str(path))
    loaded = model_from_name(ref, weights=path, overrides=ref.spec.tiny).module
    assert loaded.stage3_orsnet.orb2.body[0].body[1].weight.item() == pytest.approx(0.1234)


def test_wrong_variant_names_the_one_that_fits(tmp_path):
    denoise = model_from_name("mprnet.denoise").module
    path = tmp_path / "model_denoising.pth"
    _official_style_save(denoise, path)
    with pytest.raises(WeightsError) as err:
        model_from_name("mprnet.deblur", weights=path)
    msg = str(err.value)
    assert "do not fit mprnet.deblur" in msg and "of another shape" in msg
    assert "These weights fit mprnet.denoise" in msg


def test_foreign_checkpoint_and_bad_files(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(WeightsError, match="fit no known variant"):
        model_from_name("mprnet.derain", weights=path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights"):
        model_from_name("mprnet.derain", weights=junk)
    with pytest.raises(WeightsError, match="not found"):
        model_from_name("mprnet.derain", weights=tmp_path / "missing.pth")
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(WeightsError, match="not a state dict"):
        model_from_name("mprnet.derain", weights=listing)


def test_normalize_unwraps_nested_wrappers_and_drops_non_tensors():
    fmt = resolve("mprnet").spec.checkpoint
    raw = {"state_dict": {"module.a": torch.ones(1), "step": 5}, "epoch": 1}
    assert list(normalize_state_dict(raw, fmt)) == ["a"]
    with pytest.raises(WeightsError):
        normalize_state_dict({"epoch": 1}, fmt)

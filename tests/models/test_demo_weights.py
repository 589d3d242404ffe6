"""The demo weights shipped in the package: present, small, strictly loadable, and really trained.

The held-out check is independent of ``restorekit.models.demo``: the noisy crop is made here from
the sample photo file, the module is called directly (NLRN through the official patch average),
and PSNR is taken against the clean crop.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from pathlib import Path

import numpy as np
import torch

from restorekit.data import sample_paths
from restorekit.metrics import psnr
from restorekit.models.build import bundled_weights_path, model_from_name
from restorekit.models.nlrn import official_patch_average
from restorekit.models.registry import REGISTRY, resolve
from restorekit.runtime.imageio import read_image, write_image

DEMOS = [ref for ref in REGISTRY if ref.variant.bundled_weights]
WEIGHTS_DIR = bundled_weights_path("x").parent


def test_every_architecture_default_is_a_demo_variant_with_weights():
    names = [ref.name for ref in DEMOS]
    assert names == [
        "mprnet.demo_dn_s25",
        "nlrn.demo_dn_s25",
        "panet.demo_dn_s25",
        "grl-t.demo_dn_s25",
    ]
    for ref in DEMOS:
        assert bundled_weights_path(ref.variant.bundled_weights).is_file(), ref.name
        assert ref.variant.bundled_weights == f"{ref.name}.safetensors"
        card = WEIGHTS_DIR / f"{ref.name}.md"
        text = card.read_text()
        assert "Held-out" in text and "average" in text and "Steps" in text, card
    # The bare architecture names (grl is an alias: grl-t itself keeps the real GRL-T default).
    for name in ("mprnet", "nlrn", "panet", "grl"):
        assert resolve(name).variant.bundled_weights, name


def test_bundled_weights_stay_small():
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert 0 < total < 5_000_000, f"{total / 1e6:.2f} MB of bundled weights"


@pytest.mark.parametrize("ref", DEMOS, ids=lambda r: r.name)
def test_demo_weights_load_strictly(ref):
    built = model_from_name(ref.name)  # load_weights is strict: raises on any key/shape mismatch
    assert not built.random and built.weights.startswith(ref.variant.bundled_weights)
    assert not built.module.training


def _noisy_crop(channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop of the astronaut sample (CHW float64) and its sigma-25 8-bit noisy copy."""
    path = next(p for p in sample_paths() if p.stem == "astronaut")
    rgb = read_image(path).astype(np.float64) / 255.0
    top = (rgb.shape[0] - size) // 2
    crop = rgb[top : top + size, top : top + size]
    if channels == 1:
        crop = 0.299 * crop[..., 0] + 0.587 * crop[..., 1] + 0.114 * crop[..., 2]
        clean = crop[None]
    else:
        clean = crop.transpose(2, 0, 1)
    noise = np.random.default_rng(seed).standard_normal(clean.shape) * (25.0 / 255.0)
    noisy = np.round(np.clip(clean + noise, 0.0, 1.0) * 255.0) / 255.0
    return clean, noisy


@pytest.mark.parametrize("ref", DEMOS, ids=lambda r: r.name)
def test_demo_weights_denoise_a_held_out_crop_by_5_db(ref):
    torch.set_num_threads(1)
    built = model_from_name(ref.name)
    clean, noisy = _noisy_crop(ref.variant.in_channels, 96, seed=7)

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = built.module(torch.from_numpy(batch).float())
        if ref.spec.output_index is not None:
            out = out[ref.spec.output_index]
        return out.clamp(0, 1).double().numpy()

    patch = ref.variant.default_tile[0]
    if patch < noisy.shape[1]:  # NLRN, PANet: overlapping tiles of the trained size, averaged
        restored = official_patch_average(noisy, forward, patch, stride=patch - ref.overlap)
    else:
        restored = forward(noisy[None])[0]
    before, after = psnr(noisy, clean), psnr(restored, clean)
    assert 19.0 < before < 22.5, before  # sanity: sigma 25 on 8 bits
    err = np.abs(restored - clean)
    assert after >= before + 5.0, (
        f"{ref.name}: noisy {before:.2f} dB -> restored {after:.2f} dB; "
        f"abs error p50 {np.median(err):.4f} p99 {np.quantile(err, 0.99):.4f} max {err.max():.4f}"
    )


def test_write_demo_pair_writes_images_a_person_can_compare(tmp_path):
    from restorekit.models.demo import write_demo_pair

    photo = read_image(next(p for p in sample_paths() if p.stem == "coffee"))
    small = tmp_path / "coffee64.png"
    write_image(small, photo[96:160, 96:160])
    clean, noisy, restored = write_demo_pair("mprnet", tmp_path / "out", image=small)
    images = [read_image(p).astype(np.float64) / 255.0 for p in (clean, noisy, restored)]
    assert all(img.shape == (64, 64, 3) for img in images)
    assert psnr(images[2], images[0]) > psnr(images[1], images[0]) + 3.0


def test_restore_demo_command_prints_both_psnrs(tmp_path, capsys):
    from restorekit.cli import demo

    photo = read_image(next(p for p in sample_paths() if p.stem == "chelsea"))
    small = tmp_path / "chelsea64.png"
    write_image(small, photo[64:128, 64:128])
    assert demo.main(["mprnet", str(small), "-o", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [Path(line.split()[0]).name for line in lines] == ["noisy.png", "restored.png"]
    noisy_db, restored_db = (float(line.split("PSNR ")[1].split()[0]) for line in lines)
    assert restored_db > noisy_db + 3.0
    assert demo.main(["nosuchnet", "-o", str(tmp_path / "x")]) == 2

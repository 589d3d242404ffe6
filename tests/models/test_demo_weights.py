"""The demo weights shipped in the package: present, small, strictly loadable, and really trained.

The held-out check is independent of ``restorekit.models.demo``: the noisy crop is made here from
the sample photo file, the module is called directly (NLRN through the official patch average),
and PSNR is taken against the clean crop.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import importlib.util
import json
import sys
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
        assert "Held-out" in text and "BM3D" in text and "Steps" in text, card
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


@pytest.mark.parametrize("ref", DEMOS, ids=lambda r: r.name)
def test_card_describes_the_shipped_weights(ref):
    """The card was written for these weights: same step count and data fingerprint, and the
    evaluation sets it reports are the standard ones, which the training data excludes."""
    from safetensors import safe_open

    path = bundled_weights_path(ref.variant.bundled_weights)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    text = path.with_suffix(".md").read_text()
    assert f"Steps: {meta['steps']};" in text
    data = json.loads(meta["data"])
    assert data["sha256"][:16] in text
    expected_count = 400 if ref.variant.in_channels == 1 else 71  # Train400; Kodak24+McMaster+LIVE1
    assert data["count"] == expected_count
    held_out = ("BSD68", "Set12") if ref.variant.in_channels == 1 else ("CBSD68",)
    for name in held_out:
        assert f"| {name} |" in text
        assert not any(name in folder for folder in data["folders"])


def test_read_folder_sorts_recurses_and_converts_channels(tmp_path):
    from restorekit.models.demo import read_folder

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    (tmp_path / "b").mkdir()
    write_image(tmp_path / "b" / "colour.png", colour)
    write_image(tmp_path / "a.png", gray)
    (tmp_path / "notes.txt").write_text("not an image")

    as_rgb = read_folder(tmp_path, 3)
    assert [p.name for p, _ in as_rgb] == ["a.png", "colour.png"]
    assert as_rgb[0][1].shape == (10, 12, 3) and as_rgb[1][1].shape == (20, 30, 3)
    np.testing.assert_allclose(as_rgb[0][1][..., 1], gray / 255.0, atol=1e-7)
    np.testing.assert_allclose(as_rgb[1][1], colour / 255.0, atol=1e-7)

    as_gray = read_folder(tmp_path, 1)
    luma = (0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]) / 255.0
    np.testing.assert_allclose(as_gray[1][1][..., 0], luma, atol=1e-6)


def test_read_folder_refuses_a_missing_folder(tmp_path):
    from restorekit.errors import InputError
    from restorekit.models.demo import read_folder

    with pytest.raises(InputError, match="not a folder"):
        read_folder(tmp_path / "missing", 3)


def _train_demo():
    spec = importlib.util.spec_from_file_location(
        "train_demo", Path(__file__).resolve().parents[2] / "tools" / "train_demo.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_demo"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_training_resumed_from_a_checkpoint_writes_the_same_weights(tmp_path):
    """Two steps, stop, resume to four == four steps in one run, bit for bit (one thread)."""
    from safetensors.torch import load_file

    train_demo = _train_demo()
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        write_image(data / f"{i}.png", rng.integers(0, 256, (72, 80, 3), dtype=np.uint8))

    def run(steps: int, ckpt: str, resume: bool) -> Path:
        argv = ["grl", "--data", str(data), "--steps", str(steps), "--eval-every", "2",
                "--ckpt-dir", str(tmp_path / ckpt), "-o", str(tmp_path / ckpt / "w")]  # fmt: skip
        old_threads = torch.get_num_threads()
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("sys.argv", ["train_demo.py", *argv, *(["--resume"] if resume else [])])
                train_demo.main()
        finally:
            torch.set_num_threads(old_threads)
        return tmp_path / ckpt / "w" / "grl-t.demo_dn_s25.safetensors"

    straight = load_file(run(4, "a", resume=False))
    run(2, "b", resume=False)
    resumed = load_file(run(4, "b", resume=True))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    curve = (tmp_path / "b" / "grl-t.demo_dn_s25.curve.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in curve] == ["step", "2", "4"]

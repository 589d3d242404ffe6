"""Train the demo weights shipped in ``restorekit/data/weights`` (seeded, CPU, one thread).

Task: Gaussian denoising at sigma 25 of 8-bit photos (colour; gray for NLRN). Training photos are
scikit-image's bundled images other than the five the package ships as held-out samples
(astronaut, camera, chelsea = ``skimage.data.cat``, coffee, rocket), so the held-out figures
(``benchmarks/demo_heldout.py``) are on photos the network never saw. Random crops, flips and
90-degree rotations; the noise is drawn on the fly from a seeded generator and, like a saved
noisy photo, clipped to [0, 1] and rounded to 8 bits.

With the same seed, step count and one thread, a run repeats bit for bit on the same machine and
PyTorch build. ``--minutes`` caps the wall time (the card then records the steps actually run).

    PYTHONPATH=$PWD python tools/train_demo.py mprnet --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from restorekit.models.demo import COLOUR_IMAGES, GRAY_IMAGES, training_images
from restorekit.models.registry import resolve

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "restorekit" / "data" / "weights"


@dataclass(frozen=True)
class Recipe:
    """How one demo variant is trained."""

    model: str  # full registry name of the demo variant
    crop: int
    batch: int
    lr: float
    steps: int
    # Share of crops taken from the colour photos (the rest from the gray textures); None: every
    # image equally likely. Colour models see gray textures as R = G = B and drift towards grey
    # colours when those dominate.
    colour_share: float | None = None


RECIPES = {
    "mprnet": Recipe("mprnet.demo_dn_s25", crop=64, batch=8, lr=1e-3, steps=300),
    "nlrn": Recipe("nlrn.demo_dn_s25", crop=32, batch=16, lr=1e-3, steps=200),
    "grl": Recipe("grl-t.demo_dn_s25", crop=64, batch=8, lr=1e-3, steps=200, colour_share=0.75),
    "panet": Recipe("panet.demo_dn_s25", crop=32, batch=8, lr=1e-3, steps=200, colour_share=0.75),
}


def sample_batch(
    images: list[np.ndarray],
    rng: np.random.Generator,
    batch: int,
    crop: int,
    colour_share: float | None = None,
) -> torch.Tensor:
    """Random crops, flipped and rotated, as an NCHW tensor.

    The image is chosen uniformly, or from the colour photos (the first ``len(COLOUR_IMAGES)``)
    with probability ``colour_share`` and from the gray ones otherwise.
    """
    out = []
    n_colour = len(COLOUR_IMAGES)
    for _ in range(batch):
        if colour_share is None:
            img = images[rng.integers(len(images))]
        elif rng.random() < colour_share:
            img = images[rng.integers(n_colour)]
        else:
            img = images[n_colour + rng.integers(len(images) - n_colour)]
        top = rng.integers(img.shape[0] - crop + 1)
        left = rng.integers(img.shape[1] - crop + 1)
        patch = img[top : top + crop, left : left + crop]
        if rng.integers(2):
            patch = patch[:, ::-1]
        patch = np.rot90(patch, k=int(rng.integers(4)))
        out.append(np.ascontiguousarray(patch.transpose(2, 0, 1)))
    return torch.from_numpy(np.stack(out))


def noisy_from(clean: torch.Tensor, gen: torch.Generator, sigma: float) -> torch.Tensor:
    """The 8-bit noisy photo: clean + N(0, sigma^2), clipped and rounded (as restorekit.models.demo)."""
    noise = torch.randn(clean.shape, generator=gen) * sigma
    return torch.round((clean + noise).clamp(0.0, 1.0) * 255.0) / 255.0


def charbonnier(out: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((out - target) ** 2 + eps * eps).mean()


def recalibrate_batch_norms(
    model: torch.nn.Module,
    images: list[np.ndarray],
    rng: np.random.Generator,
    gen: torch.Generator,
    recipe: Recipe,
    sigma: float,
    batches: int = 40,
) -> None:
    """Set batch-norm moving statistics to their average over fresh training batches.

    NLRN keeps TensorFlow's momentum (0.99): after a few hundred steps the moving averages still
    remember their initial values, so eval mode would normalise with wrong statistics. The final
    weights are kept; only the statistics are re-estimated (a cumulative average, ``momentum=None``).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(
                noisy_from(
                    sample_batch(images, rng, recipe.batch, recipe.crop, recipe.colour_share),
                    gen,
                    sigma,
                )
            )
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


def train(arch: str, steps: int | None, minutes: float | None, seed: int, out_dir: Path) -> Path:
    """Train the demo variant of ``arch``; writes ``<name>.safetensors`` with its record."""
    from safetensors.torch import save_model

    torch.set_num_threads(1)
    recipe = RECIPES[arch]
    steps = steps or recipe.steps
    ref = resolve(recipe.model)
    torch.manual_seed(seed)
    model = ref.build()
    model.train()
    images = training_images(ref.variant.in_channels)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    # Cosine decay to 1 % over the planned steps, after a short linear warm-up.
    warm = max(1, steps // 30)

    def lr_at(step: int) -> float:
        if step < warm:
            return recipe.lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return recipe.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    sigma = 25.0 / 255.0
    start = time.monotonic()
    losses: list[float] = []
    done = 0
    for step in range(steps):
        if minutes is not None and time.monotonic() - start > minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        clean = sample_batch(images, rng, recipe.batch, recipe.crop, recipe.colour_share)
        noisy = noisy_from(clean, gen, sigma)
        out = model(noisy)
        # MPRNet supervises all three stages (its paper's loss, without the edge term).
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(charbonnier(o, clean) for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        done = step + 1
        if done % 25 == 0 or done == 1:
            with torch.no_grad():
                first = outs[0].clamp(0, 1)
                mse = float(((first - clean) ** 2).mean())
            print(
                f"step {done}/{steps} loss {np.mean(losses[-25:]):.4f} "
                f"batch psnr {10 * math.log10(1 / mse):.2f} dB "
                f"{time.monotonic() - start:.0f}s",
                flush=True,
            )
    recalibrate_batch_norms(model, images, rng, gen, recipe, sigma)
    elapsed = time.monotonic() - start
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{ref.name}.safetensors"
    record = {
        "model": ref.name,
        "config": json.dumps(dict(ref.variant.config)),
        "recipe": json.dumps(asdict(recipe)),
        "steps": str(done),
        "planned_steps": str(steps),
        "seconds": f"{elapsed:.0f}",
        "threads": "1",
        "seed": str(seed),
        "torch": torch.__version__,
        "final_loss": f"{np.mean(losses[-25:]):.5f}",
        "data": json.dumps(
            {"colour": list(COLOUR_IMAGES), "gray": list(GRAY_IMAGES), "source": "skimage.data"}
        ),
        "noise": "sigma 25/255 Gaussian, clipped to [0,1], rounded to 8 bits",
    }
    save_model(model, str(path), metadata=record)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) after {done} steps, {elapsed:.0f}s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (recipe default)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time cap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    train(args.arch, args.steps, args.minutes, args.seed, args.output_dir)


if __name__ == "__main__":
    main()

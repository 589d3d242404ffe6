"""Train the demo weights shipped in ``restorekit/data/weights`` (seeded, CPU, one thread, resumable).

Task: Gaussian denoising at sigma 25 of 8-bit photos (colour; gray for NLRN). The training photos
are read from ``--data`` at training time (the repository ships weights, never images); every
image file below it is used, sorted by path. The cards name the public sets used:

- gray (NLRN): the 400 BSD training images of cszn/DnCNN
  (``TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400``);
- colour (MPRNet, GRL, PANet): Kodak24, McMaster (cszn/FFDNet ``testsets/``) and LIVE1
  (cszn/DnCNN ``testsets/LIVE1``).

``tools/demo_data.py`` copies exactly these folders (and the test sets) from clones of the two
repositories into ``.train/data``. BSD68, CBSD68 and Set12 are the evaluation sets (``benchmarks/demo_heldout.py``): never put them
under ``--data``. ``--val`` names one of them for the training curve only (a few centre crops,
logged, never used to pick weights: the weights written are those of the last step).

Random crops, flips and 90-degree rotations; the noise is drawn on the fly from a seeded generator
and, like a saved noisy photo, clipped to [0, 1] and rounded to 8 bits. Adam at a constant rate
after a linear warm-up; the weights written are an exponential moving average of the trained
ones (decay 0.999), which smooths the constant-rate noise without a schedule tied to a planned
length, so a run stopped at step N (``--minutes``) writes exactly what ``--steps N`` writes.

The state (model, average, optimiser, both random generators, step, curve) is checkpointed
atomically every ``--checkpoint-minutes`` into ``--ckpt-dir``; ``--resume`` continues from it
bit for bit (same thread count, machine and PyTorch build). SIGTERM or Ctrl-C end a run like
``--minutes`` (checkpoint, then weights). Pausing the process (SIGSTOP/SIGCONT) is harmless; the
record counts CPU seconds as well as wall seconds for that reason.

    PYTHONPATH=$PWD python tools/train_demo.py grl --data .train/data/train_colour \\
        --val .train/data/test/CBSD68 --minutes 60 --resume
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from restorekit.files import atomic_target
from restorekit.metrics import psnr
from restorekit.models.demo import add_noise, centre_crop, read_folder, tiled_restore
from restorekit.models.registry import resolve
from restorekit.runtime.cpu_features import cpu_features

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = ROOT / "restorekit" / "data" / "weights"
CKPT_DIR = ROOT / ".train" / "ckpt"
SIGMA = 25.0 / 255.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Recipe:
    """How one demo variant is trained."""

    model: str  # full registry name of the demo variant
    crop: int
    batch: int
    lr: float
    warmup: int = 100  # steps of linear warm-up to ``lr``
    ema: float = 0.999  # decay of the weight average that is written


RECIPES = {
    "mprnet": Recipe("mprnet.demo_dn_s25", crop=64, batch=8, lr=1e-3),
    "mprnet-wide": Recipe("mprnet.demo_wide_dn_s25", crop=64, batch=8, lr=1e-3),
    "nlrn": Recipe("nlrn.demo_dn_s25", crop=32, batch=16, lr=1e-3),
    "grl": Recipe("grl-t.demo_dn_s25", crop=64, batch=8, lr=5e-4),
    "panet": Recipe("panet.demo_dn_s25", crop=32, batch=8, lr=1e-3),
}


def data_fingerprint(paths: list[Path], root: Path) -> dict[str, object]:
    """Count, folders and a sha256 over the sorted relative paths and bytes of the images."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(str(p.relative_to(root)).encode())
        digest.update(p.read_bytes())
    folders = sorted({str(p.parent.relative_to(root)) for p in paths})
    return {"count": len(paths), "folders": folders, "sha256": digest.hexdigest()}


def sample_batch(
    images: list[np.ndarray], rng: np.random.Generator, batch: int, crop: int
) -> torch.Tensor:
    """Random crops (image chosen uniformly), flipped and rotated, as an NCHW float32 tensor."""
    out = []
    for _ in range(batch):
        img = images[rng.integers(len(images))]
        top = rng.integers(img.shape[0] - crop + 1)
        left = rng.integers(img.shape[1] - crop + 1)
        patch = img[top : top + crop, left : left + crop]
        if rng.integers(2):
            patch = patch[:, ::-1]
        patch = np.rot90(patch, k=int(rng.integers(4)))
        out.append(np.ascontiguousarray(patch.transpose(2, 0, 1)))
    return torch.from_numpy(np.stack(out))


def noisy_from(clean: torch.Tensor, gen: torch.Generator, sigma: float = SIGMA) -> torch.Tensor:
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
    batches: int = 40,
) -> None:
    """Set batch-norm moving statistics to their average over fresh training batches.

    NLRN keeps TensorFlow's momentum (0.99) and the written weights are an average of trained
    ones, whose statistics no running average measured: eval mode needs statistics re-estimated
    for exactly these weights (a cumulative average, ``momentum=None``).
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
            model(noisy_from(sample_batch(images, rng, recipe.batch, recipe.crop), gen))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``average <- decay * average + (1 - decay) * model`` for parameters; buffers copied."""
    with torch.no_grad():
        for a, p in zip(average.parameters(), model.parameters(), strict=True):
            a.lerp_(p, 1.0 - decay)
        for a, b in zip(average.buffers(), model.buffers(), strict=True):
            a.copy_(b)


class Curve:
    """Held-out PSNR of the averaged model on a few fixed noisy crops (the training curve)."""

    def __init__(self, folder: Path | None, channels: int, count: int, crop: int) -> None:
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        if folder is None:
            return
        for i, (_, clean) in enumerate(read_folder(folder, channels)[:count]):
            clean = centre_crop(clean.astype(np.float64), crop)
            clean = clean[..., 0] if channels == 1 else clean  # the tiler takes gray as HW
            self.pairs.append((clean, add_noise(clean, seed=i)))

    def psnr(self, model: torch.nn.Module, ref) -> float | None:
        """Mean PSNR (dB) of ``model`` in eval mode through the runtime's tiler, or None."""
        if not self.pairs:
            return None
        index = ref.spec.output_index
        was_training = model.training
        model.eval()

        def forward(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = model(torch.from_numpy(batch))
            return (out if index is None else out[index]).numpy()

        values = [psnr(tiled_restore(ref, noisy, forward), clean) for clean, noisy in self.pairs]
        model.train(was_training)
        return float(np.mean(values))


def save_atomic(obj: object, path: Path) -> None:
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def train(args: argparse.Namespace, stop: list[bool]) -> Path:
    """Train (or resume) the demo variant of ``args.arch``; writes ``<name>.safetensors``.

    A run ends at ``args.steps``, after ``args.minutes``, or once ``stop`` is non-empty.
    """
    from safetensors.torch import save_model

    torch.set_num_threads(1)
    recipe = RECIPES[args.arch]
    ref = resolve(recipe.model)
    channels = ref.variant.in_channels
    files = read_folder(args.data, channels)
    if not files:
        raise SystemExit(f"no images under {args.data}")
    paths = [p for p, _ in files]
    images = [img for _, img in files if min(img.shape[:2]) >= recipe.crop]
    fingerprint = data_fingerprint(paths, args.data)
    print(f"{len(images)} training images from {args.data} ({fingerprint['sha256'][:12]})")

    torch.manual_seed(args.seed)
    model = ref.build()
    model.train()
    average = copy.deepcopy(model)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    curve_rows: list[dict[str, float | int | str]] = []
    step, wall, cpu = 0, 0.0, 0.0

    args.ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.ckpt_dir / f"{ref.name}.pt"
    curve_path = args.ckpt_dir / f"{ref.name}.curve.csv"
    if args.resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)  # our own file: RNG states are objects
        if state["recipe"] != asdict(recipe) or state["data"] != fingerprint:
            raise SystemExit(f"{ckpt_path} was made with another recipe or data; not resuming")
        model.load_state_dict(state["model"])
        average.load_state_dict(state["average"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_gen"])
        step, wall, cpu = state["step"], state["wall"], state["cpu"]
        curve_rows = state["curve"]
        print(f"resumed {ckpt_path} at step {step}")

    def checkpoint() -> None:
        save_atomic(
            {
                "recipe": asdict(recipe),
                "data": fingerprint,
                "seed": args.seed,
                "model": model.state_dict(),
                "average": average.state_dict(),
                "optimizer": opt.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_gen": gen.get_state(),
                "step": step,
                "wall": wall,
                "cpu": cpu,
                "curve": curve_rows,
            },
            ckpt_path,
        )
        with atomic_target(curve_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, ["step", "wall_s", "cpu_s", "loss", "heldout_psnr"])
            writer.writeheader()
            writer.writerows(curve_rows)

    curve = Curve(args.val, channels, args.val_count, args.val_crop)
    session_start = time.monotonic()
    last_ckpt = time.monotonic()
    losses: list[float] = []
    # Timed per step so that the evaluations of the curve do not count as training time.
    while step < args.steps and not stop:
        if args.minutes is not None and time.monotonic() - session_start > args.minutes * 60:
            break
        t_wall, t_cpu = time.monotonic(), time.process_time()
        lr = recipe.lr * min(1.0, (step + 1) / recipe.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        clean = sample_batch(images, rng, recipe.batch, recipe.crop)
        noisy = noisy_from(clean, gen)
        out = model(noisy)
        # MPRNet supervises all three stages (its paper's loss, without the edge term).
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(charbonnier(o, clean) for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # Bias-corrected start: the average follows closely while it has little history.
        update_average(average, model, min(recipe.ema, (1 + step) / (10 + step)))
        losses.append(loss.item())
        step += 1
        wall += time.monotonic() - t_wall
        cpu += time.process_time() - t_cpu
        if step % args.eval_every == 0 or step == args.steps:
            held = curve.psnr(average, ref)
            row = {
                "step": step,
                "wall_s": round(wall),
                "cpu_s": round(cpu),
                "loss": round(float(np.mean(losses)), 5),
                "heldout_psnr": "" if held is None else round(held, 3),
            }
            losses = []
            curve_rows.append(row)
            print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        if time.monotonic() - last_ckpt > args.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.monotonic()
    checkpoint()

    final = copy.deepcopy(average)
    # Its own generators, so writing weights never changes the training state's random streams.
    recalibrate_batch_norms(
        final, images, np.random.default_rng(args.seed + 1), torch.Generator().manual_seed(args.seed + 1), recipe
    )  # fmt: skip
    final.eval()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"{ref.name}.safetensors"
    record = {
        "model": ref.name,
        "config": json.dumps(dict(ref.variant.config)),
        "recipe": json.dumps(asdict(recipe)),
        "steps": str(step),
        "seconds": f"{wall:.0f}",
        "cpu_seconds": f"{cpu:.0f}",
        "threads": "1",
        "machine": f"{os.cpu_count()}-core {cpu_features().describe()}",
        "seed": str(args.seed),
        "torch": torch.__version__,
        "final_loss": f"{curve_rows[-1]['loss'] if curve_rows else float('nan')}",
        "data": json.dumps({"folder": args.data.name, **fingerprint}),
        "noise": "sigma 25/255 Gaussian, clipped to [0,1], rounded to 8 bits",
        "curve": json.dumps(curve_rows),
        "curve_set": "" if args.val is None else f"{args.val.name} ({args.val_count} centre crops {args.val_crop}x{args.val_crop})",
    }  # fmt: skip
    with atomic_target(path) as tmp:
        save_model(final, str(tmp), metadata=record)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) at step {step}, {wall:.0f}s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=sorted(RECIPES))
    parser.add_argument("--data", type=Path, required=True, help="folder of training images")
    parser.add_argument("--val", type=Path, default=None, help="held-out folder for the curve")
    parser.add_argument("--val-count", type=int, default=8)
    parser.add_argument("--val-crop", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=250, help="steps between curve points")
    parser.add_argument("--steps", type=int, default=100_000, help="stop at this step")
    parser.add_argument("--minutes", type=float, default=None, help="wall-time cap of this run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from --ckpt-dir")
    parser.add_argument("--ckpt-dir", type=Path, default=CKPT_DIR)
    parser.add_argument("--checkpoint-minutes", type=float, default=3.0)
    parser.add_argument("-o", "--output-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # SIGTERM/SIGINT end the run after the current step: checkpoint, then weights, as --minutes.
    stop: list[bool] = []
    previous = {sig: signal.signal(sig, lambda *_: stop.append(True)) for sig in STOP_SIGNALS}
    try:
        train(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    main()

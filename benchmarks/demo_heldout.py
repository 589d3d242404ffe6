"""Held-out evaluation of the bundled demo weights against BM3D, on standard test images.

Each test image gets seeded sigma-25 noise (clipped, 8-bit; image ``i`` of a set uses seed ``i``)
and is restored twice from that same noisy input: by BM3D (the ``bm3d`` package, 4.x:
``bm3d.bm3d`` for gray, ``bm3d.bm3d_rgb`` for colour, sigma_psd 25/255) and by the demo model in
PyTorch through the runtime's tiler (the variant's default tile, overlap and blend, as
``restore-run`` cuts it). PSNR against the clean image, averaged per set.

The sets are never trained on (``tools/train_demo.py`` reads other folders): colour models on
CBSD68, the gray one (NLRN) on BSD68 and Set12, from cszn/FFDNet's and cszn/DnCNN's ``testsets/``
put in one folder (``--data``, default ``.train/data/test``; the repository ships no images).
Centre crops (``--crop``, default 256) keep BM3D and NLRN affordable on 2 cores; the package's
five sample photos (what ``restore-demo`` shows) are a second table. BM3D results are cached
(``--bm3d-cache``) because they do not depend on the model.

    PYTHONPATH=$PWD python benchmarks/demo_heldout.py                 # every demo variant
    PYTHONPATH=$PWD python benchmarks/demo_heldout.py mprnet --card   # and rewrite its card
    PYTHONPATH=$PWD python benchmarks/demo_heldout.py mprnet --pair out/   # images to look at
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from restorekit.metrics import psnr
from restorekit.models.build import BuiltModel, bundled_weights_path, model_from_name
from restorekit.models.demo import (
    add_noise,
    centre_crop,
    read_folder,
    restore_array,
    to_model_channels,
    write_demo_pair,
)
from restorekit.models.registry import REGISTRY, resolve
from restorekit.runtime.cpu_features import cpu_features

ROOT = Path(__file__).resolve().parents[1]
SIGMA = 25.0 / 255.0
SETS = {1: ("BSD68", "Set12"), 3: ("CBSD68",)}


@dataclass(frozen=True)
class SetResult:
    """Mean PSNR (dB) over one test set: noisy input, BM3D and the model, same noisy inputs."""

    name: str
    images: int
    noisy: float
    bm3d: float
    model: float
    seconds: float  # the model's restoring time for the set (one thread)

    @property
    def gap(self) -> float:
        return self.model - self.bm3d


def demo_names() -> list[str]:
    """Full names of every registered variant that ships bundled weights."""
    return [ref.name for ref in REGISTRY if ref.variant.bundled_weights]


class Bm3dCache:
    """BM3D PSNR per (set, image, crop, channels, seed), kept in a JSON file between runs."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.values: dict[str, float] = {}
        if path is not None and path.is_file():
            self.values = json.loads(path.read_text())

    def psnr(self, key: str, noisy: np.ndarray, clean: np.ndarray) -> float:
        if key not in self.values:
            import bm3d  # a benchmark-only dependency

            if noisy.ndim == 2:
                out = bm3d.bm3d(noisy, sigma_psd=SIGMA)
            else:
                out = bm3d.bm3d_rgb(noisy, sigma_psd=SIGMA)
            self.values[key] = psnr(np.clip(out, 0.0, 1.0), clean)
            if self.path is not None:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.values, indent=0, sort_keys=True))
                os.replace(tmp, self.path)
        return self.values[key]


def evaluate(
    built: BuiltModel,
    set_name: str,
    images: list[tuple[str, np.ndarray]],
    crop: int | None,
    cache: Bm3dCache,
) -> SetResult:
    """Noisy, BM3D and model PSNR on ``images`` (name, clean float HW(C) in model channels)."""
    noisy_db, bm3d_db, model_db, seconds = [], [], [], 0.0
    channels = built.ref.variant.in_channels
    for i, (name, clean) in enumerate(images):
        noisy = add_noise(clean, seed=i)
        noisy_db.append(psnr(noisy, clean))
        bm3d_db.append(cache.psnr(f"{set_name}/{name}/{crop}/{channels}/{i}", noisy, clean))
        start = time.monotonic()
        model_db.append(psnr(restore_array(built, noisy), clean))
        seconds += time.monotonic() - start
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    return SetResult(set_name, len(images), mean(noisy_db), mean(bm3d_db), mean(model_db), seconds)


def standard_images(
    folder: Path, set_name: str, channels: int, crop: int | None, count: int | None
) -> list[tuple[str, np.ndarray]]:
    """The first ``count`` images of ``folder/set_name`` as centre crops in model channels."""
    files = read_folder(folder / set_name, channels)[:count]
    out = []
    for path, img in files:
        clean = centre_crop(img.astype(np.float64), crop)
        out.append((path.stem, clean[..., 0] if channels == 1 else clean))
    return out


def sample_images_for(channels: int, crop: int | None) -> list[tuple[str, np.ndarray]]:
    """The package's sample photos (what ``restore-demo`` shows), in model channels."""
    from restorekit.data import sample_images, sample_paths

    out = []
    for path, rgb in zip(sample_paths(), sample_images(), strict=True):
        clean = to_model_channels(rgb.astype(np.float64) / 255.0, channels)
        out.append((path.stem, centre_crop(clean, crop)))
    return out


def table(results: list[SetResult]) -> str:
    """A Markdown table: one row per set."""
    lines = [
        "| test set | images | noisy | BM3D | this model | model - BM3D |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.images} | {r.noisy:.2f} | {r.bm3d:.2f} | {r.model:.2f} "
            f"| {r.gap:+.2f} |"
        )
    return "\n".join(lines)


def training_recipe_name(model: str) -> str:
    """The ``tools/train_demo.py`` recipe that trains the registry variant ``model``."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from train_demo import RECIPES
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return next(k for k, recipe in RECIPES.items() if recipe.model == model)


def weights_file(built: BuiltModel, given: Path | None = None) -> Path:
    """The weights file of a demo variant: ``given`` (``--weights``), else the bundled one."""
    return given or bundled_weights_path(built.ref.variant.bundled_weights)


def training_record(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def curve_table(rows: list[dict[str, object]], keep: int = 12) -> str:
    """Every k-th logged point of the training curve (the last one always) as Markdown."""
    if not rows:
        return "(no curve logged)"
    k = max(1, -(-len(rows) // keep))
    picked = rows[k - 1 :: k]
    if picked[-1] is not rows[-1]:
        picked.append(rows[-1])
    lines = ["| step | CPU minutes | loss | held-out PSNR (dB) |", "|---|---|---|---|"]
    for r in picked:
        held = r.get("heldout_psnr", "")
        held_s = f"{float(held):.2f}" if held not in ("", None) else "-"
        lines.append(
            f"| {r['step']} | {float(r['cpu_s']) / 60:.1f} | {float(r['loss']):.4f} | {held_s} |"
        )
    return "\n".join(lines)


def verdict(results: list[SetResult], rows: list[dict[str, object]], cpu_minutes: float) -> str:
    """One honest sentence: matches/beats BM3D, or the gap and how the curve was moving."""
    worst = min(results, key=lambda r: r.gap)
    if worst.gap >= 0.0:
        return (
            f"At least as good as BM3D on every held-out set (smallest margin {worst.gap:+.2f} dB "
            f"on {worst.name})."
        )
    return (
        f"**Below BM3D** by {-worst.gap:.2f} dB on {worst.name}, after {cpu_minutes:.0f} CPU "
        f"minutes of training (the budget was about an hour per network on this machine)."
        f"{curve_trend(rows)}"
    )


def curve_trend(rows: list[dict[str, object]]) -> str:
    """How the held-out curve moved over the second half of training: least-squares slope."""
    held = [(int(r["step"]), float(r["heldout_psnr"])) for r in rows if r.get("heldout_psnr")]
    tail = held[len(held) // 2 :]
    if len(tail) < 3:
        return ""
    steps = np.array([s for s, _ in tail], float)
    slope = float(np.polyfit(steps, np.array([p for _, p in tail]), 1)[0]) * 1000
    span = f"{slope:+.2f} dB per 1000 steps over its last {int(steps[-1] - steps[0])} steps"
    if slope > 0.2:
        return (
            f" The training curve was still rising when training stopped ({span}): a longer "
            f"run (`--steps` above this card's count; a run passes through these weights at "
            f"that step) or `--resume` from the run's own checkpoint trains further."
        )
    return (
        f" The training curve had flattened ({span}) at this constant learning rate: "
        f"closing the gap takes more than length at this rate (a decaying rate or a wider "
        f"network; not tried within the budget)."
    )


def training_machine(meta: dict[str, str]) -> str:
    """The machine the weights were trained on, as the weights record it (older weights do not:
    then the machine writing the card, said as such)."""
    if meta.get("machine"):
        return meta["machine"]
    return (
        f"{os.cpu_count()}-core {cpu_features().describe()} (the machine that wrote this card; "
        f"these weights do not record theirs)"
    )


def model_card(
    built: BuiltModel,
    results: list[SetResult],
    samples: SetResult,
    crop: int | None,
    count: int | None = None,
    path: Path | None = None,
) -> str:
    """The Markdown card of a demo variant, from its weights' training record and results."""
    ref = built.ref
    path = weights_file(built, path)
    meta = training_record(path)
    params = sum(p.numel() for p in built.module.parameters())
    recipe = json.loads(meta.get("recipe", "{}"))
    data = json.loads(meta.get("data", "{}"))
    rows = json.loads(meta.get("curve", "[]"))
    gray = ref.variant.in_channels == 1
    arch = ref.spec.name.split("-")[0]
    recipe_name = training_recipe_name(ref.name)
    tile = ref.variant.default_tile[0]
    tiling = (
        "on the whole crop"
        if tile >= (crop or 10**6)
        else f"on {tile}x{tile} tiles with overlap {ref.overlap} ({ref.spec.blend} blend)"
    )
    sources = (
        "the 400 BSD training images of cszn/DnCNN "
        "(`TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400`, 180x180 gray)"
        if gray
        else "Kodak24 and McMaster (cszn/FFDNet `testsets/`) and LIVE1 (cszn/DnCNN "
        "`testsets/LIVE1`): 71 colour photos"
    )
    data_dir = ".train/data/train_gray" if gray else ".train/data/train_colour"
    val = ".train/data/test/BSD68" if gray else ".train/data/test/CBSD68"
    steps = meta.get("steps", "?")
    crop_s = f"centre {crop}x{crop} crops" if crop else "whole images"
    luma = "\n  Colour photos are converted to BT.601 luma." if gray else ""
    purpose = (
        f"so that `{arch}` restores a photo without a download"
        if ref.variant.bundled_weights
        else "for figures on trained weights at a larger width (its weights are not bundled)"
    )
    command = f"{ref.name} --crop {crop or 0}" + (f" --count {count}" if count else "")
    first = f", the first {count} of each set by file name" if count else ""
    return f"""# {ref.name}: demo weights

**Not an official checkpoint.** A reduced-size {ref.spec.title.split(":")[0]} trained on a CPU
{purpose}. For real results convert or load the
official weights of another variant (`restore-export --list`).

- Task: {ref.variant.task}.
- Architecture: `{ref.spec.build}` with config `{dict(ref.variant.config)}`
  ({params / 1e6:.3f} M parameters; file {path.stat().st_size / 1e6:.2f} MB, float32 safetensors).
- Input/output: {"gray (one channel)" if gray else "RGB"}, values in [0, 1].
  Default tile {ref.variant.default_tile[0]}x{ref.variant.default_tile[1]}, overlap {ref.overlap}.

## Training (`tools/train_demo.py {recipe_name}`)

- Data: {sources}; {data.get("count", "?")} files, sha256 of names and bytes
  `{data.get("sha256", "?")[:16]}...`. Never BSD68, CBSD68 or Set12 (the evaluation sets).{luma}
- Crops: {recipe.get("crop")}x{recipe.get("crop")}, batch {recipe.get("batch")}, image chosen
  uniformly, flips and 90-degree rotations.
- Noise: {meta.get("noise", "?")}, drawn on the fly from a seeded generator.
- Loss: Charbonnier (eps 1e-3){", summed over MPRNet's three stage outputs" if arch == "mprnet" else ""};
  Adam at lr {recipe.get("lr")} after a {recipe.get("warmup")}-step linear warm-up, gradient norm
  clipped to 1. The weights are the exponential moving average (decay {recipe.get("ema")}) of the
  trained ones at the last step{"; batch-norm statistics re-estimated for them on 40 training batches" if gray else ""}.
- Steps: {steps}; {float(meta.get("cpu_seconds", "nan")) / 60:.0f} CPU minutes
  ({float(meta.get("seconds", "nan")) / 60:.0f} wall minutes) on {meta.get("threads", "?")} thread of a
  {training_machine(meta)} shared with other jobs; seed {meta.get("seed", "?")}; torch {meta.get("torch", "?")}.
- Reproduce (`tools/demo_data.py --dncnn DnCNN --ffdnet FFDNet` assembles `.train/data` from
  clones of the two repositories; a run stopped at step N and `--steps N` write the same
  weights): `PYTHONPATH=$PWD python tools/train_demo.py {recipe_name} --data {data_dir} --val {val} --steps {steps}`

Training curve (held-out PSNR of the averaged weights on {meta.get("curve_set") or "-"}, logged
only, never used to choose weights):

{curve_table(rows)}

## Held-out evaluation (`benchmarks/demo_heldout.py {command}`)

Standard test images never trained on ({crop_s}{first}{", as BT.601 luma" if gray else ""}), sigma-25
noise (seed = image index, clipped, 8-bit); BM3D (`bm3d` {_bm3d_version()}) and this model restore
the same noisy inputs; the model runs in PyTorch {tiling}. Mean PSNR in dB:

{table([*results, samples])}

The last row is the package's five sample photos (astronaut, camera, chelsea, coffee, rocket;
what `restore-demo` shows). {verdict(results, rows, float(meta.get("cpu_seconds", "nan")) / 60)}
"""


def _bm3d_version() -> str:
    from importlib.metadata import version

    return version("bm3d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="names (default: every demo variant)")
    parser.add_argument("--data", type=Path, default=ROOT / ".train" / "data" / "test")
    parser.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole)")
    parser.add_argument("--count", type=int, default=None, help="first N images of each set")
    parser.add_argument("--bm3d-cache", type=Path, default=ROOT / ".train" / "bm3d_cache.json")
    parser.add_argument("--card", action="store_true", help="rewrite the model card(s)")
    parser.add_argument("--pair", type=Path, default=None, help="write clean/noisy/restored here")
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=FILE",
                        help="weights of a demo variant that bundles none (its card goes beside)")
    args = parser.parse_args()
    given = {resolve(k).name: Path(v) for k, v in (w.split("=", 1) for w in args.weights)}
    torch.set_num_threads(1)
    crop = args.crop or None
    cache = Bm3dCache(args.bm3d_cache)
    names = [resolve(n).name for n in args.models] or demo_names()
    for name in names:
        built = model_from_name(name, weights=given.get(name))
        if built.random:
            raise SystemExit(f"{name} has no bundled weights: give them with --weights {name}=FILE")
        channels = built.ref.variant.in_channels
        results = [
            evaluate(
                built, s, standard_images(args.data, s, channels, crop, args.count), crop, cache
            )
            for s in SETS[channels]
        ]
        samples = evaluate(built, "samples", sample_images_for(channels, crop), crop, cache)
        samples = SetResult("sample photos", *list(vars(samples).values())[1:])
        print(f"\n{name} ({built.weights}); model seconds per set: "
              + ", ".join(f"{r.name} {r.seconds:.0f}" for r in [*results, samples]))  # fmt: skip
        print(table([*results, samples]))
        if args.card:
            card = weights_file(built, given.get(name)).with_suffix(".md")
            card.write_text(model_card(built, results, samples, crop, args.count, given.get(name)))
            print(f"wrote {card}")
        if args.pair is not None:
            paths = write_demo_pair(name, args.pair / name)
            print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()

"""Held-out evaluation of the bundled demo weights: noisy vs restored PSNR on the sample photos.

Each of the package's five sample photos (never trained on) gets seeded sigma-25 noise (clipped,
8-bit; photo ``i`` uses seed ``i``), is restored by the PyTorch model through the runtime's tiler
(the variant's default tile, overlap and blend, as ``restore-run`` cuts it), and PSNR against the
clean photo is printed per image and on average.
Gray models (NLRN) are evaluated on the BT.601 luma of the photos.

    PYTHONPATH=$PWD python benchmarks/demo_heldout.py                 # every demo variant
    PYTHONPATH=$PWD python benchmarks/demo_heldout.py mprnet --card   # and rewrite its card
    PYTHONPATH=$PWD python benchmarks/demo_heldout.py mprnet --pair out/   # images to look at
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from restorekit.models.build import BuiltModel, bundled_weights_path, model_from_name
from restorekit.models.demo import HeldOutRow, heldout_rows, write_demo_pair
from restorekit.models.registry import REGISTRY, resolve


def demo_names() -> list[str]:
    """Full names of every registered variant that ships bundled weights."""
    return [ref.name for ref in REGISTRY if ref.variant.bundled_weights]


def table(rows: list[HeldOutRow]) -> str:
    """A Markdown table of the rows plus their average."""
    lines = ["| image | noisy PSNR (dB) | restored PSNR (dB) | gain (dB) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.image} | {r.noisy_psnr:.2f} | {r.restored_psnr:.2f} | {r.gain:+.2f} |")
    n = len(rows)
    noisy = sum(r.noisy_psnr for r in rows) / n
    restored = sum(r.restored_psnr for r in rows) / n
    lines.append(f"| **average** | {noisy:.2f} | {restored:.2f} | {restored - noisy:+.2f} |")
    return "\n".join(lines)


def model_card(built: BuiltModel, rows: list[HeldOutRow]) -> str:
    """The Markdown card of a demo variant, from its weights' training record and ``rows``."""
    from safetensors import safe_open

    ref = built.ref
    path = bundled_weights_path(ref.variant.bundled_weights)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    params = sum(p.numel() for p in built.module.parameters())
    recipe = json.loads(meta.get("recipe", "{}"))
    data = json.loads(meta.get("data", "{}"))
    gray = ref.variant.in_channels == 1
    tile = ref.variant.default_tile[0]
    colour_share = recipe.get("colour_share")
    share = (
        "image chosen uniformly"
        if colour_share is None
        else f"from a colour photo with probability {colour_share} (else a gray one)"
    )
    tiling = (
        "on the whole photo"
        if tile >= 256
        else f"on {tile}x{tile} tiles at stride {tile - ref.overlap}, overlaps averaged"
    )
    return f"""# {ref.name}: demo weights

**Not an official checkpoint.** A reduced-width {ref.spec.title.split(":")[0]} trained briefly on a
CPU so that `{ref.spec.name}` restores a photo without a download. For real results convert or
load the official weights of another variant (`restore-export --list`).

- Task: {ref.variant.task}.
- Architecture: `{ref.spec.build}` with config `{dict(ref.variant.config)}`
  ({params / 1e6:.3f} M parameters; file {path.stat().st_size / 1e6:.2f} MB, float32 safetensors).
- Input/output: {"gray (one channel)" if gray else "RGB"}, values in [0, 1].
  Default tile {ref.variant.default_tile[0]}x{ref.variant.default_tile[1]}, overlap {ref.overlap}.

## Training (`tools/train_demo.py {ref.spec.name.split("-")[0]}`)

- Data: scikit-image's bundled images (`skimage.data`, no download):
  colour {", ".join(data.get("colour", []))}; gray {", ".join(data.get("gray", []))}
  ({"colour ones converted to BT.601 luma" if gray else "gray ones repeated to three channels"}).
  Never the held-out sources (astronaut, camera, chelsea/cat, coffee, rocket).
- Crops: {recipe.get("crop")}x{recipe.get("crop")}, batch {recipe.get("batch")}, {share},
  flips and 90-degree rotations.
- Noise: {meta.get("noise", "?")}, drawn on the fly from a seeded generator.
- Loss: Charbonnier (eps 1e-3){", summed over MPRNet's three stage outputs" if ref.spec.name == "mprnet" else ""};
  Adam, lr {recipe.get("lr")}, linear warm-up then cosine decay to 1 %; gradient norm clipped to 1.
- Steps: {meta.get("steps", "?")} (planned {meta.get("planned_steps", "?")}); wall time
  {meta.get("seconds", "?")} s on {meta.get("threads", "?")} CPU thread (a 2-core machine shared
  with other jobs); seed {meta.get("seed", "?")}; torch {meta.get("torch", "?")}.

## Held-out evaluation (`benchmarks/demo_heldout.py {ref.name}`)

The five sample photos of `restorekit/data/samples` (256x256 crops, never trained on)
{"as BT.601 luma " if gray else ""}with sigma-25 noise (seed = photo index, clipped, 8-bit),
restored by the PyTorch model {tiling}:

{table(rows)}
"""


def onnx_forward(name: str, folder: Path):
    """Export ``name`` (bundled weights, default tile, batch 8) and return an ORT batch function."""
    from restorekit.export.pipeline import ExportOptions, export_model
    from restorekit.runtime.ort_backend import ort_session

    result = export_model(ExportOptions(model=name, batch=8, output_dir=folder))
    session = ort_session(result.onnx_path)
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="names (default: every demo variant)")
    parser.add_argument("--crop", type=int, default=None, help="centre crop side (default: whole)")
    parser.add_argument("--card", action="store_true", help="rewrite the model card(s)")
    parser.add_argument("--pair", type=Path, default=None, help="write clean/noisy/restored here")
    parser.add_argument(
        "--onnx", type=Path, default=None, help="also export to this folder and run ONNX Runtime"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [resolve(n).name for n in args.models] or demo_names()
    for name in names:
        built = model_from_name(name)
        if built.random:
            raise SystemExit(f"{name} has no bundled weights")
        start = time.monotonic()
        rows = heldout_rows(built, crop=args.crop)
        print(f"\n{name} ({built.weights}), {time.monotonic() - start:.1f}s")
        print(table(rows))
        if args.onnx is not None:
            start = time.monotonic()
            onnx_rows = heldout_rows(built, crop=args.crop, forward=onnx_forward(name, args.onnx))
            print(f"\n{name} exported ONNX on ONNX Runtime, {time.monotonic() - start:.1f}s")
            print(table(onnx_rows))
        if args.card:
            card = bundled_weights_path(built.ref.variant.bundled_weights).with_suffix(".md")
            card.write_text(model_card(built, rows))
            print(f"wrote {card}")
        if args.pair is not None:
            paths = write_demo_pair(name, args.pair / name)
            print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()

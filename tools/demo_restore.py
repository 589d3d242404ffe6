"""Write a noisy photo and its restoration side by side, with the bundled demo weights.

    PYTHONPATH=$PWD python tools/demo_restore.py mprnet -o demo/           # the astronaut sample
    PYTHONPATH=$PWD python tools/demo_restore.py nlrn photo.png -o demo/   # any photo (gray model)

Writes ``clean.png``, ``noisy.png`` (sigma-25 Gaussian noise, 8 bits) and ``restored.png`` and
prints the PSNR of the noisy and restored images against the clean one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from restorekit.errors import RestoreKitError
from restorekit.metrics import psnr
from restorekit.models.demo import write_demo_pair
from restorekit.runtime.imageio import read_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model name; a bare architecture uses its demo weights")
    parser.add_argument("image", nargs="?", default=None, help="photo (default: astronaut sample)")
    parser.add_argument("-o", "--output", type=Path, default=Path("demo"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    args = parser.parse_args(argv)
    try:
        clean, noisy, restored = write_demo_pair(args.model, args.output, args.image, args.seed)
    except RestoreKitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ref = read_image(clean).astype(np.float64)
    for path in (noisy, restored):
        value = psnr(read_image(path).astype(np.float64), ref, 255.0)
        print(f"{path}  PSNR {value:.2f} dB vs {clean.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

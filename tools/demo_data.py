"""Assemble the demo training and test folders from clones of cszn/DnCNN and cszn/FFDNet.

``tools/train_demo.py --data`` and ``benchmarks/demo_heldout.py --data`` read these folders; the
repository ships no images. From two local clones (``git clone https://github.com/cszn/DnCNN``,
``.../cszn/FFDNet``) this copies:

- ``train_gray``: DnCNN ``TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400`` (400 BSD
  training images, 180x180 gray);
- ``train_colour``: FFDNet ``testsets/Kodak24`` and ``testsets/McMaster``, DnCNN
  ``testsets/LIVE1`` (71 colour photos; test sets elsewhere, training data here);
- ``test``: DnCNN ``testsets/BSD68`` and ``testsets/Set12`` (gray), FFDNet ``testsets/CBSD68``
  (colour): the evaluation sets, never trained on.

    python tools/demo_data.py --dncnn ~/src/DnCNN --ffdnet ~/src/FFDNet -o .train/data
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

# (destination under the output folder, which clone, path inside it)
LAYOUT = (
    ("train_gray", "dncnn", "TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400"),
    ("train_colour/Kodak24", "ffdnet", "testsets/Kodak24"),
    ("train_colour/McMaster", "ffdnet", "testsets/McMaster"),
    ("train_colour/LIVE1", "dncnn", "testsets/LIVE1"),
    ("test/BSD68", "dncnn", "testsets/BSD68"),
    ("test/Set12", "dncnn", "testsets/Set12"),
    ("test/CBSD68", "ffdnet", "testsets/CBSD68"),
)
EVALUATION_SETS = ("BSD68", "CBSD68", "Set12")


def assemble(clones: dict[str, Path], out: Path) -> dict[str, int]:
    """Copy every folder of :data:`LAYOUT` (replacing what is there); returns files per folder.

    Raises:
        SystemExit: a source folder is missing (wrong clone path).
    """
    counts = {}
    for dest, clone, rel in LAYOUT:
        # The evaluation sets must never land in a training folder.
        assert not (dest.startswith("train") and any(s in rel for s in EVALUATION_SETS)), dest
        src = clones[clone] / rel
        if not src.is_dir():
            raise SystemExit(f"{src} is missing: is --{clone} a clone of cszn/{clone}?")
        target = out / dest
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
        counts[dest] = sum(1 for p in target.iterdir() if p.is_file())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dncnn", type=Path, required=True, help="clone of cszn/DnCNN")
    parser.add_argument("--ffdnet", type=Path, required=True, help="clone of cszn/FFDNet")
    parser.add_argument("-o", "--output", type=Path, default=Path(".train/data"))
    args = parser.parse_args()
    for dest, count in assemble({"dncnn": args.dncnn, "ffdnet": args.ffdnet}, args.output).items():
        print(f"{args.output / dest}: {count} files")


if __name__ == "__main__":
    main()

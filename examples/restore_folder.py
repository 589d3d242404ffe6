"""Restore every image of a folder into another folder with the Python API.

    python examples/restore_folder.py MODEL.onnx photos/ restored/

Images keep their name, bit depth and alpha channel; one unreadable file is reported and skipped.
(``restore-run MODEL.onnx photos/ -o restored/`` does the same from the shell, with progress bars.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

import restorekit

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("folder", type=Path)
    p.add_argument("output", type=Path)
    args = p.parse_args()

    args.output.mkdir(parents=True, exist_ok=True)
    failed = 0
    with restorekit.open(args.model) as model:
        for path in sorted(args.folder.iterdir()):
            if path.suffix.lower() not in SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGR(A) or gray, 8/16 bits
            if image is None:
                print(f"skipped {path.name}: not a readable image", file=sys.stderr)
                failed += 1
                continue
            restored = model.restore(image, bgr=True)
            cv2.imwrite(str(args.output / path.name), restored)
            print(
                f"{path.name}: {image.shape[1]}x{image.shape[0]} -> {restored.shape[1]}x{restored.shape[0]}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

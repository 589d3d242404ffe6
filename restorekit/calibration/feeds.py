"""Calibration tiles: cut from real images exactly as the runtime will cut them at inference.

The runtime's own tiling and pixel conversion produce them (same tile shape, reflect padding at
the borders, overlap grid, value range, channel order, gray/colour), then a seeded,
deterministic sample of ``count`` tiles. The set's fingerprint (files' hashes + how tiles were cut)
goes into the INT8 manifest, so a calibration can be traced to its data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit.errors import InputError
from restorekit.files import file_sha256
from restorekit.manifest import Manifest
from restorekit.runtime.imageio import read_image
from restorekit.runtime.restore import input_batches, plan_for

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class CalibrationSet:
    """``tiles``: (N, C, H, W) float32 in the model's input convention."""

    tiles: np.ndarray
    fingerprint: str
    source: str
    images: int
    skipped: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return int(self.tiles.shape[0])

    def batches(self, batch: int):
        """Yield consecutive (b, C, H, W) batches of at most ``batch`` tiles."""
        for start in range(0, self.count, batch):
            yield self.tiles[start : start + batch]


def image_files(source: str | Path | Sequence[Path]) -> list[Path]:
    """The image files of a folder (sorted), or the given list.

    Raises:
        InputError: the folder does not exist or holds no images.
    """
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise InputError(f"calibration folder not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(
                f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); give a folder "
                "of photos like the ones the model will see"
            )
        return files
    return [Path(p) for p in source]


def runtime_tiles(image: np.ndarray, manifest: Manifest, tile: tuple[int, int]) -> list[np.ndarray]:
    """Every (C, H, W) model-input tile the runtime would cut from ``image`` for this manifest:
    the runtime's own plan and tile iterator, so the same grid, reflect padding and model units."""
    plan = plan_for(manifest, image.shape[:2], tile)
    return [tiles.array[0].copy() for tiles in input_batches(image, manifest, plan)]


def feeds_from_images(
    source: str | Path | Sequence[Path],
    manifest: Manifest,
    count: int = 32,
    seed: int = 0,
) -> CalibrationSet:
    """Cut every tile of every image as the runtime does, then draw ``count`` of them (seeded).

    Unreadable files are skipped and listed in ``skipped``.

    Raises:
        InputError: no usable images.
    """
    files = image_files(source)
    tile = tuple(manifest.tile or (256, 256))
    per_image: list[list[np.ndarray]] = []
    skipped: list[str] = []
    for path in files:
        try:
            per_image.append(runtime_tiles(read_image(path), manifest, tile))
        except InputError as exc:  # one bad file does not spoil the set; it is reported
            skipped.append(f"{path.name}: {exc}")
    if not per_image:
        raise InputError(f"none of the {len(files)} calibration images could be read: {skipped[0]}")
    candidates = [(i, k) for i, tiles in enumerate(per_image) for k in range(len(tiles))]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(candidates), size=min(count, len(candidates)), replace=False))
    tiles = np.stack([per_image[i][k] for i, k in (candidates[c] for c in chosen)])
    record = {
        "files": [file_sha256(p) for p in files],
        "tile": list(tile),
        "overlap": manifest.overlap,
        "input": [manifest.input.channels, manifest.input.color_order, manifest.input.value_range],
        "count": int(tiles.shape[0]),
        "seed": seed,
    }
    fingerprint = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    src = str(source) if isinstance(source, (str, Path)) else f"{len(files)} files"
    return CalibrationSet(tiles, fingerprint, src, len(per_image), tuple(skipped))

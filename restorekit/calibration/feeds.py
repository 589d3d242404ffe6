"""Calibration tiles: cut from real images exactly as the runtime will cut them at inference.

Same tile shape, same reflect padding at the borders, same overlap grid, same pixel convention
(value range, channel order, gray/colour) as the artifact's manifest says; then a seeded,
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
from restorekit.runtime.pixels import to_model_input

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


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length`` pixels (the last one flush with the end)."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _padded(chw: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Reflect-pad bottom/right so an image smaller than a tile still fills one."""
    _, h, w = chw.shape
    ph, pw = max(0, tile[0] - h), max(0, tile[1] - w)
    if not (ph or pw):
        return chw
    mode = "reflect" if ph < h and pw < w else "symmetric"
    out = np.pad(chw, ((0, 0), (0, ph), (0, pw)), mode=mode)
    return out if out.shape[1] >= tile[0] and out.shape[2] >= tile[1] else _padded(out, tile)


def feeds_from_images(
    source: str | Path | Sequence[Path],
    manifest: Manifest,
    count: int = 32,
    seed: int = 0,
) -> CalibrationSet:
    """Cut every tile of every image as the runtime would, then draw ``count`` of them (seeded).

    Unreadable files are skipped and listed in ``skipped``.

    Raises:
        InputError: no usable images.
    """
    files = image_files(source)
    tile = manifest.tile or (256, 256)
    candidates: list[tuple[int, int, int]] = []
    images: list[np.ndarray] = []
    skipped: list[str] = []
    for path in files:
        try:
            chw = _padded(to_model_input(read_image(path), manifest.input), tile)
        except InputError as exc:  # one bad file does not spoil the set; it is reported
            skipped.append(f"{path.name}: {exc}")
            continue
        i = len(images)
        images.append(chw)
        for y in tile_origins(chw.shape[1], tile[0], manifest.overlap):
            for x in tile_origins(chw.shape[2], tile[1], manifest.overlap):
                candidates.append((i, y, x))
    if not images:
        raise InputError(f"none of the {len(files)} calibration images could be read: {skipped[0]}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(candidates), size=min(count, len(candidates)), replace=False))
    tiles = np.stack(
        [
            images[i][:, y : y + tile[0], x : x + tile[1]]
            for i, y, x in (candidates[c] for c in chosen)
        ]
    ).astype(np.float32)
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
    return CalibrationSet(tiles, fingerprint, src, len(images), tuple(skipped))

"""Calibration tiles are cut as the runtime cuts them, deterministically, in the model's convention."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.calibration.feeds import feeds_from_images
from restorekit.errors import InputError
from restorekit.manifest import BatchRange, Manifest, PrecisionPlan, TensorSpec
from restorekit.runtime.imageio import write_image


def _manifest(tile=(32, 32), overlap=8, channels=3, value_range=1.0):
    spec = TensorSpec("input", channels, value_range=value_range,
                      color_order="RGB" if channels == 3 else "Y")  # fmt: skip
    return Manifest("toy.v", "toy", spec, spec, 1, 8, tile, BatchRange(), overlap, "feather",
                    PrecisionPlan(), 17, "random (seed 0)")  # fmt: skip


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "a.png", rng.integers(0, 256, (48, 70, 3), dtype=np.uint8))
    write_image(tmp_path / "b.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))  # < tile
    return tmp_path


def _grid(length, tile, overlap):
    """Tile origins written out independently: stride tile-overlap, last tile flush with the end."""
    if length <= tile:
        return [0]
    out, pos = [], 0
    while pos + tile < length:
        out.append(pos)
        pos += tile - overlap
    out.append(length - tile)
    return out


def test_all_tiles_equal_the_runtime_grid_crops(folder):
    m = _manifest()
    feeds = feeds_from_images(folder, m, count=10_000)
    image = (
        np.asarray(__import__("cv2").imread(str(folder / "a.png"))[:, :, ::-1], np.float32) / 255
    )
    want = [image[y : y + 32, x : x + 32].transpose(2, 0, 1)
            for y in _grid(48, 32, 8) for x in _grid(70, 32, 8)]  # fmt: skip
    assert feeds.tiles.shape[1:] == (3, 32, 32)
    got = [t for t in feeds.tiles]
    for w in want:
        assert any(np.array_equal(w, g) for g in got)
    assert feeds.count == len(want) + 1  # + the small image, padded to one tile
    assert feeds.images == 2 and not feeds.skipped


def test_deterministic_and_seeded(folder):
    m = _manifest()
    a, b = (
        feeds_from_images(folder, m, count=3, seed=1),
        feeds_from_images(folder, m, count=3, seed=1),
    )
    c = feeds_from_images(folder, m, count=3, seed=2)
    assert np.array_equal(a.tiles, b.tiles) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_model_convention_gray_and_range(folder):
    feeds = feeds_from_images(folder, _manifest(channels=1, value_range=255.0), count=4)
    assert feeds.tiles.shape[1] == 1 and feeds.tiles.max() > 1.5


def test_bad_files_are_skipped_and_reported(folder):
    (folder / "broken.png").write_bytes(b"garbage")
    feeds = feeds_from_images(folder, _manifest(), count=4)
    assert len(feeds.skipped) == 1 and "broken.png" in feeds.skipped[0]
    with pytest.raises(InputError, match="not found"):
        feeds_from_images(folder / "missing", _manifest())
    (folder / "empty").mkdir()
    with pytest.raises(InputError, match="no images in"):
        feeds_from_images(folder / "empty", _manifest())

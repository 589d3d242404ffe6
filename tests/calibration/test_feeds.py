"""Calibration tiles are cut as the runtime cuts them, deterministically, in the model's convention."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from restorekit.calibration.feeds import feeds_from_images
from restorekit.errors import InputError
from restorekit.manifest import BatchRange, Manifest, PrecisionPlan, TensorSpec
from restorekit.runtime.imageio import write_image
from restorekit.runtime.tiling import plan_tiles


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


def test_all_tiles_equal_crops_of_the_padded_image_at_the_runtime_grid(folder):
    """Each calibration tile is a crop of the reflect-padded image (numpy's own padding) at a
    position of the runtime's tile plan: what an engine sees at inference."""
    m = _manifest()
    feeds = feeds_from_images(folder, m, count=10_000)
    image = np.asarray(cv2.imread(str(folder / "a.png"))[:, :, ::-1], np.float32) / 255
    plan = plan_tiles(image.shape[:2], (32, 32), m.overlap)
    my, mx = plan.y.margin, plan.x.margin
    padded = np.pad(image, ((my, plan.y.canvas), (mx, plan.x.canvas), (0, 0)), mode="reflect")
    want = [padded[y : y + 32, x : x + 32].transpose(2, 0, 1) for y, x in plan.positions()]
    assert feeds.tiles.shape[1:] == (3, 32, 32)
    for w in want:
        assert any(np.abs(w - g).max() < 1e-6 for g in feeds.tiles)
    small = plan_tiles((20, 24), (32, 32), m.overlap).count
    assert feeds.count == len(want) + small
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

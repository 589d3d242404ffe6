"""Image files: permissions of written files, alpha carried through restoration."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from restorekit.runtime.imageio import keeps_alpha, read_image, write_image
from restorekit.runtime.ort_backend import OrtBackend
from restorekit.runtime.restore import Restorer
from tests.runtime import tinynet


def test_written_images_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", np.zeros((4, 5, 3), np.uint8))
        write_image(tmp_path / "b.jpg", np.zeros((4, 5), np.uint8))
    finally:
        os.umask(old)
    for name in ("a.png", "b.jpg"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg"]  # no temp left


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_rgba_round_trips_through_files(tmp_path, dtype, top):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, top + 1, size=(6, 7, 4)).astype(dtype)
    write_image(tmp_path / "x.png", rgba)
    back = read_image(tmp_path / "x.png")
    assert back.shape == (6, 7, 4) and back.dtype == dtype
    assert np.array_equal(back, rgba)  # channel order (RGBA in memory) survives BGRA on disk
    assert keeps_alpha("x.png") and keeps_alpha("x.TIF") and not keeps_alpha("x.JPG")


@pytest.mark.parametrize("scale", [1, 2])
def test_alpha_is_carried_and_colour_restored_as_without_it(tmp_path, scale):
    path, _, manifest = tinynet.export_net(tmp_path, scale=scale, batch=1)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(37, 41, 3), dtype=np.uint8)
    alpha = np.zeros((37, 41), np.uint8)
    alpha[5:30, 8:33] = 255  # an opaque square on a transparent ground
    with OrtBackend(path) as backend:
        restorer = Restorer(backend, manifest)
        plain = restorer.restore(rgb).image
        with_alpha = restorer.restore(np.dstack([rgb, alpha])).image
    assert with_alpha.shape == (37 * scale, 41 * scale, 4)
    assert np.array_equal(with_alpha[:, :, :3], plain)  # alpha does not touch the colour
    if scale == 1:
        assert np.array_equal(with_alpha[:, :, 3], alpha)
    else:  # resized with the image: opaque inside the square, transparent well outside it
        assert (with_alpha[12:58, 18:64, 3] == 255).all() and (with_alpha[:8, :, 3] == 0).all()


def test_missing_opencv_names_the_install_for_each_device():
    import subprocess
    import sys

    code = "import sys; sys.modules['cv2'] = None\nimport restorekit.runtime.imageio"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "MissingDependencyError" in last and "restorekit[ort]" in last
    assert "python3-opencv" in last and "--system-site-packages" in last

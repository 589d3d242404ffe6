"""Files shipped inside the package: sample photos and the demo weights (``weights/``).

The sample photos are 256x256 crops of scikit-image's public-domain / CC0 sample images (see
``samples/README.md``). Export verification and the default INT8 calibration set use them, so
every check runs on real images without a download.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np


def sample_paths() -> list[Path]:
    """Paths of the shipped sample photos, sorted by name."""
    folder = resources.files("restorekit.data") / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))


def sample_images() -> list[np.ndarray]:
    """The shipped sample photos as RGB ``uint8`` arrays of shape (256, 256, 3)."""
    from restorekit.runtime.imageio import read_image

    return [read_image(p) for p in sample_paths()]

"""The demo task of the bundled weights: Gaussian denoising at sigma 25 on 8-bit photos.

Official checkpoints cannot be downloaded at run time, so each architecture has a small
``<arch>.demo_dn_s25`` variant trained by ``tools/train_demo.py`` on public training images (the
400 BSD training images for gray; Kodak24, McMaster and LIVE1 for colour) and evaluated against
BM3D on standard test sets never trained on (BSD68 and Set12 gray, CBSD68 colour) and on the
package's five sample photos (``benchmarks/demo_heldout.py``). This module holds what training,
the held-out benchmark, the tests and the README's demo share: reading an image folder, the noise
model, tiled inference of a PyTorch model, and the noisy/restored image pair a person can look at.
The scikit-image photos listed here are no longer training data: they are the noisy calibration
photos of the INT8 benchmarks (:func:`write_noisy_photos`), kept apart from the sample photos.

The noise model is that of a saved noisy photo: ``clean + N(0, (25/255)^2)``, clipped to [0, 1]
and rounded to 8 bits, from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from restorekit.errors import InputError
from restorekit.metrics import psnr
from restorekit.models.build import BuiltModel, model_from_name
from restorekit.models.spec import ModelRef
from restorekit.runtime.pixels import gray_from_rgb
from restorekit.runtime.tiling import plan_tiles, run_tiled, tile_batches

SIGMA = 25.0 / 255.0
# Held out: the package's sample photos come from these scikit-image images (never train on them).
HELD_OUT_SOURCES = ("astronaut", "camera", "chelsea", "cat", "coffee", "rocket")
# Natural photos and textures in the scikit-image wheel (no download), RGB then gray: the INT8
# calibration photos of the demo variants (see write_noisy_photos).
COLOUR_IMAGES = (
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
GRAY_IMAGES = (
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "moon.png",
    "page.png",
    "text.png",
    "cell.png",
)


def training_images(channels: int) -> list[np.ndarray]:
    """The scikit-image calibration photos as float32 arrays in [0, 1], HWC, ``channels`` channels."""
    import skimage
    import skimage.io  # a dev dependency: training and benchmarks only

    folder = Path(skimage.__file__).parent / "data"
    images = []
    for name in COLOUR_IMAGES + GRAY_IMAGES:
        assert not any(name.startswith(h) for h in HELD_OUT_SOURCES), name
        img = skimage.io.imread(folder / name).astype(np.float32) / 255.0
        if img.ndim == 2:
            img = img[..., None]
        img = img[..., :3]
        if channels == 1 and img.shape[2] == 3:
            img = gray_from_rgb(img)[..., None]
        elif channels == 3 and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        images.append(np.ascontiguousarray(img))
    return images


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_folder(folder: Path, channels: int) -> list[tuple[Path, np.ndarray]]:
    """Every image file below ``folder`` (sorted by path) as float32 HWC in [0, 1].

    Colour images become BT.601 luma for a gray model; gray ones are repeated to three channels
    for a colour model. This is how training (``tools/train_demo.py --data``) and the held-out
    benchmark read the public image sets.

    Raises:
        InputError: ``folder`` is not a directory, or a file cannot be decoded.
    """
    from restorekit.runtime.imageio import read_image

    if not Path(folder).is_dir():
        raise InputError(f"{folder} is not a folder of images")
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for path in paths:
        raw = read_image(path)
        peak = 65535.0 if raw.dtype == np.uint16 else 255.0
        img = raw.astype(np.float32) / np.float32(peak)
        img = img[..., None] if img.ndim == 2 else img[..., :3]
        if channels == 1 and img.shape[2] == 3:
            img = gray_from_rgb(img)[..., None]
        elif channels == 3 and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        out.append((path, np.ascontiguousarray(img)))
    return out


def centre_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    """The centre ``size`` x ``size`` of an HW(C) image (the whole side where it is smaller)."""
    if size is None:
        return image
    top, left = max(0, (image.shape[0] - size) // 2), max(0, (image.shape[1] - size) // 2)
    return image[top : top + size, left : left + size]


def add_noise(clean: np.ndarray, seed: int, sigma: float = SIGMA) -> np.ndarray:
    """``clean`` (float in [0, 1]) plus seeded Gaussian noise, clipped and rounded to 8 bits."""
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0.0, sigma, clean.shape)
    return np.round(np.clip(noisy, 0.0, 1.0) * 255.0) / 255.0


def write_noisy_photos(folder: Path, channels: int, seed: int = 0) -> list[Path]:
    """The calibration photos with the demo noise, saved as 8-bit PNGs in ``folder`` (created).

    What a deployed demo denoiser is fed, so the INT8 calibration set of a demo variant: never
    the held-out sample photos. Photo ``i`` uses noise seed ``seed + i``.
    """
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, clean in enumerate(training_images(channels)):
        noisy = np.round(add_noise(clean.astype(np.float64), seed + i) * 255.0).astype(np.uint8)
        path = folder / f"noisy_{i:02d}.png"
        cv2.imwrite(str(path), noisy[..., 0] if channels == 1 else noisy[..., ::-1])
        paths.append(path)
    return paths


def to_model_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An RGB or gray float image as ``channels`` channels (HWC for 3, HW for 1).

    Raises:
        InputError: a gray image for a colour model.
    """
    if channels == 1:
        return gray_from_rgb(image) if image.ndim == 3 else image
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"this model restores RGB images; got shape {image.shape}")
    return image


def tiled_restore(
    ref: ModelRef, image: np.ndarray, forward: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Restore a float image in [0, 1] (HWC RGB or HW gray) with ``forward``, in [0, 1].

    ``forward`` maps an NCHW float32 batch in the model's value range to its output batch (a
    PyTorch module or an ONNX Runtime session). The image goes through the runtime's own tiler
    with the variant's default tile, overlap and blend, as ``restore-run`` cuts it for an
    artifact exported at that tile, so the demo shows what a deployed model gives (without the
    final rounding to 8 bits).

    Raises:
        InputError: the image's channels do not match the model.
    """
    hwc = image[:, :, None] if image.ndim == 2 else image
    if hwc.shape[2] != ref.variant.in_channels:
        raise InputError(
            f"{ref.name} takes {ref.variant.in_channels}-channel images, got {hwc.shape[2]}"
        )
    scale = np.float32(ref.variant.value_range)
    plan = plan_tiles(
        hwc.shape[:2], ref.variant.default_tile, ref.overlap, scale=ref.variant.scale,
        blend=ref.spec.blend,
    )  # fmt: skip

    def to_model(tile: np.ndarray, out: np.ndarray) -> None:
        out[...] = tile.transpose(2, 0, 1) * scale

    batches = tile_batches(hwc, plan, batch=8, pad_batch=False, prepare=to_model)
    result = run_tiled(plan, batches, lambda arrays: (forward(a) for a in arrays))
    out = np.clip(result.output.astype(np.float64) / scale, 0.0, 1.0)
    return out[0] if image.ndim == 2 else out.transpose(1, 2, 0)


def restore_array(built: BuiltModel, image: np.ndarray) -> np.ndarray:
    """Restore a float image in [0, 1] with a PyTorch model (see :func:`tiled_restore`).

    Raises:
        InputError: the image's channels do not match the model.
    """
    index = built.ref.spec.output_index

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = built.module(torch.from_numpy(batch))
        return (out if index is None else out[index]).numpy()

    return tiled_restore(built.ref, image, forward)


@dataclass(frozen=True)
class HeldOutRow:
    """PSNR (dB) of one held-out photo: the noisy input and the restored output vs the clean."""

    image: str
    noisy_psnr: float
    restored_psnr: float

    @property
    def gain(self) -> float:
        return self.restored_psnr - self.noisy_psnr


def heldout_rows(
    built: BuiltModel,
    crop: int | None = None,
    seed: int = 0,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[HeldOutRow]:
    """Noisy vs restored PSNR on each shipped sample photo (centre ``crop`` if given).

    The noise of photo ``i`` is drawn with seed ``seed + i``, so every run sees the same inputs.
    ``forward`` (an NCHW batch function, e.g. an ONNX Runtime session) replaces the PyTorch
    module when given.
    """
    from restorekit.data import sample_images, sample_paths

    rows = []
    for i, (path, rgb) in enumerate(zip(sample_paths(), sample_images(), strict=True)):
        clean = to_model_channels(rgb.astype(np.float64) / 255.0, built.ref.variant.in_channels)
        if crop is not None:
            top, left = (clean.shape[0] - crop) // 2, (clean.shape[1] - crop) // 2
            clean = clean[top : top + crop, left : left + crop]
        noisy = add_noise(clean, seed + i)
        if forward is None:
            restored = restore_array(built, noisy)
        else:
            restored = tiled_restore(built.ref, noisy, forward)
        rows.append(HeldOutRow(path.stem, psnr(noisy, clean), psnr(restored, clean)))
    return rows


def write_demo_pair(
    model: str, output_dir: str | Path, image: str | Path | None = None, seed: int = 0
) -> tuple[Path, Path, Path]:
    """Write ``clean.png``, ``noisy.png`` (sigma 25) and ``restored.png`` into ``output_dir``.

    Without ``image`` the shipped sample photo ``astronaut`` is used. The model is built by name,
    so a bare architecture name uses its bundled demo weights.

    Returns:
        The three written paths (clean, noisy, restored).

    Raises:
        InputError: the image cannot be read or does not fit the model.
        UnknownModelError: unknown model name.
    """
    from restorekit.data import sample_paths
    from restorekit.runtime.imageio import read_image, write_image

    built = model_from_name(model)
    path = Path(image) if image is not None else sample_paths()[0]
    raw = read_image(path)
    if raw.ndim == 3 and raw.shape[2] == 4:
        raw = raw[:, :, :3]  # the demo shows colour; alpha has no noise to remove
    peak = 65535.0 if raw.dtype == np.uint16 else 255.0
    clean = to_model_channels(raw.astype(np.float64) / peak, built.ref.variant.in_channels)
    noisy = add_noise(clean, seed)
    restored = restore_array(built, noisy)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "clean.png", out / "noisy.png", out / "restored.png")
    for p, img in zip(paths, (clean, noisy, restored), strict=True):
        write_image(p, np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8))
    return paths

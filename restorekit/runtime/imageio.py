"""Reading and writing still images with OpenCV. Images in memory are RGB, RGBA (when the file
has an alpha channel) or single-channel, ``uint8`` or ``uint16``: shape (H, W, 3), (H, W, 4) or
(H, W)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorekit.errors import InputError
from restorekit.files import atomic_target, write_bytes_atomic
from restorekit.runtime.opencv import cv2

# Formats OpenCV writes without an alpha channel.
NO_ALPHA_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".ppm", ".pgm", ".pnm"})


def keeps_alpha(path: str | Path) -> bool:
    """Whether writing to ``path`` keeps an image's alpha channel (PNG, TIFF, WebP, BMP do)."""
    return Path(path).suffix.lower() not in NO_ALPHA_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB (colour), RGBA (colour with alpha) or (H, W) (gray), keeping 8
    or 16 bits.

    Raises:
        InputError: the file is missing or OpenCV cannot decode it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    if str(path).isascii() and path.stat().st_size:
        # Decoding from the file avoids holding its bytes in memory beside the image.
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    else:  # OpenCV's file API mangles non-ASCII paths on some platforms
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"cannot decode {path} as an image (corrupt or unsupported format)")
    return _from_opencv(image, str(path))


def decode_image(data: bytes | memoryview, what: str = "the data") -> np.ndarray:
    """Decode an encoded image held in memory (a request body), as :func:`read_image` reads files.

    Args:
        data: the encoded file's bytes (PNG, JPEG, TIFF, WebP, BMP, ...).
        what: how messages name the data.

    Raises:
        InputError: OpenCV cannot decode it, or it is not 8- or 16-bit.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if image is None:
        raise InputError(f"cannot decode {what} as an image (corrupt or unsupported format)")
    return _from_opencv(image, what)


def _from_opencv(image: np.ndarray, what: str) -> np.ndarray:
    """OpenCV's BGR/BGRA/gray image in restorekit's layout (RGB/RGBA/gray), 8 or 16 bits."""
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{what}: {image.dtype} images are not supported; use 8- or 16-bit")
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA, dst=image)  # alpha is carried, not restored
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: no second copy
    return image


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """Encode ``image`` (RGB, RGBA or gray) in memory in the format of ``suffix`` (``.png``,
    ``.tif``, ...), as :func:`write_image` would write it to a file of that suffix.

    Raises:
        InputError: OpenCV cannot encode to that format.
    """
    ok, buf = cv2.imencode(suffix, _to_opencv(image))
    if not ok:
        raise InputError(f"cannot encode an image as {suffix!r}; use .png, .jpg or .tif")
    return buf.tobytes()


def _to_opencv(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Encode ``image`` (RGB, RGBA or gray) by the file's extension and write it atomically.

    Formats without an alpha channel (JPEG) drop it: see :func:`keeps_alpha`.

    OpenCV streams the encoded file to a temporary name beside ``path`` (no in-memory copy of the
    encoded image, which for a large PNG is bigger than the image), renamed into place at the end.

    Raises:
        InputError: OpenCV cannot encode to that format.
    """
    path = Path(path)
    suffix = path.suffix or ".png"
    bgr = _to_opencv(image)
    if not str(path).isascii():
        # OpenCV's file API mangles non-ASCII paths on some platforms: encode in memory instead.
        ok, buf = cv2.imencode(suffix, bgr)
        if not ok:
            raise InputError(f"cannot encode an image as {suffix!r}; use .png, .jpg or .tif")
        write_bytes_atomic(path, memoryview(buf))
        return
    with atomic_target(path, suffix=suffix) as tmp:
        try:
            ok = cv2.imwrite(str(tmp), bgr)
        except cv2.error:
            ok = False
        if not ok:
            raise InputError(f"cannot encode an image as {suffix!r}; use .png, .jpg or .tif")

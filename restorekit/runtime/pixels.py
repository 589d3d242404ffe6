"""Pixel conventions: images (RGB/gray, 8/16-bit) to and from a model's tensors, as the manifest's
:class:`~restorekit.manifest.TensorSpec` describes them (channels, colour order, value range)."""

from __future__ import annotations

import numpy as np

from restorekit.errors import InputError
from restorekit.manifest import TensorSpec
from restorekit.runtime.opencv import cv2

# ITU-R BT.601 luma weights of R, G, B, as OpenCV's RGB2GRAY.
LUMA_BT601 = (0.299, 0.587, 0.114)
# "Y" models (JPEG artefact removal, SR on Y) were trained on studio-range Y as MATLAB's rgb2ycbcr
# and scikit-image compute it: Y = (16 + 219 * luma) / 255. "GRAY" models take full-range luma.
_STUDIO_OFFSET, _STUDIO_GAIN = np.float32(16.0 / 255.0), np.float32(219.0 / 255.0)


def gray_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (..., 3) RGB float image: (...,), in the input's float type."""
    weights = np.asarray(LUMA_BT601, dtype=rgb.dtype if rgb.dtype.kind == "f" else np.float32)
    return rgb @ weights


def studio_from_full(y: np.ndarray) -> np.ndarray:
    """Full-range luma in [0, 1] -> studio-range Y (16..235 / 255)."""
    return y * _STUDIO_GAIN + _STUDIO_OFFSET


def full_from_studio(y: np.ndarray) -> np.ndarray:
    """Studio-range Y -> full-range luma (the inverse of :func:`studio_from_full`)."""
    return (y - _STUDIO_OFFSET) / _STUDIO_GAIN


def unit_float(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 (or float in [0, 1]) image -> float32 in [0, 1], same shape."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32, copy=False)
    raise InputError(f"unsupported image dtype {image.dtype}; use 8- or 16-bit images")


def to_model_input(
    image: np.ndarray, spec: TensorSpec, out: np.ndarray | None = None
) -> np.ndarray:
    """An RGB (H, W, 3), RGBA (H, W, 4: alpha ignored) or gray (H, W) image -> a (C, H, W)
    float32 tensor for the model.

    Colour images feed one-channel models through their BT.601 luma (studio range for
    ``color_order "Y"``, full range for ``"GRAY"``); gray images feed
    three-channel models replicated. BGR models get their channels reversed. With ``out`` (a
    (C, H, W) array of any float dtype, e.g. a slot of a batch buffer) the result is written
    there and returned.

    Raises:
        InputError: unsupported dtype or channel count.
    """
    if image.ndim == 3 and image.shape[2] == spec.channels and spec.color_order not in ("BGR", "Y"):
        # Fast path (the common case): one pass from HWC integers to CHW float32 model units.
        top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype)
        if top is not None:
            if out is None:
                out = np.empty((image.shape[2], *image.shape[:2]), dtype=np.float32)
            np.multiply(image.transpose(2, 0, 1), np.float32(spec.value_range / top), out=out)
            return out
    x = unit_float(image)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim == 3 and x.shape[2] == 4:
        x = x[:, :, :3]  # alpha is not the model's business
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise InputError(f"expected an RGB or gray image, got shape {image.shape}")
    if spec.channels == 1 and x.shape[2] == 3:
        x = gray_from_rgb(x)[:, :, None]
    elif spec.channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    if spec.channels == 1 and spec.color_order == "Y":
        x = studio_from_full(x)
    if spec.channels == 3 and spec.color_order == "BGR":
        x = x[:, :, ::-1]
    chw = np.ascontiguousarray(x.transpose(2, 0, 1))
    if spec.value_range != 1.0:
        chw *= np.float32(spec.value_range)
    if out is not None:
        out[...] = chw
        return out
    return chw


def to_unit_output(chw: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A model's (C, H, W) output -> (H, W, C) float32 RGB/gray in [0, 1] (clamped)."""
    x = chw.astype(np.float32, copy=False)
    if spec.value_range != 1.0:
        x = x / np.float32(spec.value_range)
    if spec.channels == 1 and spec.color_order == "Y":
        x = full_from_studio(x)
    if spec.channels == 3 and spec.color_order == "BGR":
        x = x[::-1]
    return np.clip(x.transpose(1, 2, 0), 0.0, 1.0)


def quantize(unit: np.ndarray, dtype: np.dtype = np.uint8) -> np.ndarray:
    """[0, 1] float image -> uint8/uint16 with rounding; a one-channel image becomes (H, W)."""
    top = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    out = np.rint(np.clip(unit, 0.0, 1.0) * top).astype(dtype)
    return out[:, :, 0] if out.ndim == 3 and out.shape[2] == 1 else out


def luma_chroma(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB image -> (Y (H, W), CrCb (H, W, 2)) in [0, 1] float32 (BT.601, OpenCV's YCrCb)."""
    ycrcb = cv2.cvtColor(unit_float(image), cv2.COLOR_RGB2YCrCb)
    return ycrcb[:, :, 0], ycrcb[:, :, 1:]


def recombine_luma(y: np.ndarray, crcb: np.ndarray) -> np.ndarray:
    """A restored luma (H, W) with the original chroma (resized to it if needed) -> RGB in [0, 1].

    Gray models restore only Y; colour comes back from the input's Cr/Cb (bicubic-upscaled for
    super-resolution), as the papers that train on Y evaluate colour images.
    """
    h, w = y.shape
    if crcb.shape[:2] != (h, w):
        crcb = cv2.resize(crcb, (w, h), interpolation=cv2.INTER_CUBIC)
    ycrcb = np.concatenate([y[:, :, None], crcb], axis=2).astype(np.float32)
    return np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), 0.0, 1.0)


def with_alpha(restored: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A restored RGB or gray image with the input's alpha channel attached as RGBA.

    The alpha is resized (bilinear) when the model changed the size (super-resolution); a gray
    result is spread to RGB, since RGBA is the only image-with-alpha layout kept end to end.
    """
    h, w = restored.shape[:2]
    if alpha.shape != (h, w):
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = restored if restored.ndim == 3 else np.repeat(restored[:, :, None], 3, axis=2)
    return np.concatenate([rgb, alpha[:, :, None].astype(rgb.dtype)], axis=2)


def output_to_image(chw: np.ndarray, spec: TensorSpec, dtype: np.dtype) -> np.ndarray:
    """A model's (C, H, W) float32 output -> (H, W, C) ``dtype`` image, clamped and rounded.

    Same result as ``quantize(to_unit_output(chw, spec), dtype)`` with fewer passes over the
    image; ``chw`` is modified in place (the tiler's accumulator, no longer needed).
    """
    top = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    if spec.channels == 1 and spec.color_order == "Y":
        vr = np.float32(spec.value_range)
        chw -= _STUDIO_OFFSET * vr
        chw /= _STUDIO_GAIN
    np.clip(chw, 0.0, spec.value_range, out=chw)
    chw *= np.float32(top / spec.value_range)
    np.rint(chw, out=chw)
    if spec.channels == 3 and spec.color_order == "BGR":
        chw = chw[::-1]
    return chw.transpose(1, 2, 0).astype(dtype)

"""Image-quality figures used by every accuracy check: max abs error, PSNR, SSIM, non-finite counts.

numpy only (the runtime's ``restore-check`` and INT8 calibration use them without PyTorch). Images
are float arrays in [0, ``data_range``], shape (H, W), (H, W, C) or (C, H, W) when ``channel_axis``
says so; SSIM follows Wang et al. (2004): Gaussian window of 11 taps, sigma 1.5, K1 0.01, K2 0.03,
population statistics, symmetric border handling, the 5-pixel border excluded from the mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

_SIGMA = 1.5
_RADIUS = 5  # 11 taps


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference over finite entries (non-finite ones are counted separately)."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else 0.0


def nonfinite(a: np.ndarray) -> int:
    """Number of NaN or +-Inf entries."""
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_kernel() -> np.ndarray:
    x = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / _SIGMA) ** 2)
    return k / k.sum()


def _filter2d(img: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of a (H, W) image with symmetric ('reflect' in scipy) borders."""
    k = _gaussian_kernel()
    padded = np.pad(img, _RADIUS, mode="symmetric")
    rows = sum(k[i] * padded[:, i : i + img.shape[1]] for i in range(k.size))
    return sum(k[i] * rows[i : i + img.shape[0], :] for i in range(k.size))


def _ssim_channel(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter2d(a), _filter2d(b)
    var_a = _filter2d(a * a) - mu_a**2
    var_b = _filter2d(b * b) - mu_b**2
    cov = _filter2d(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    r = _RADIUS
    inner = s[r:-r, r:-r] if s.shape[0] > 2 * r and s.shape[1] > 2 * r else s
    return float(inner.mean())


def ssim(
    a: np.ndarray, b: np.ndarray, data_range: float = 1.0, channel_axis: int | None = -1
) -> float:
    """Mean structural similarity; multi-channel images average over channels.

    ``channel_axis=None`` treats a 2-D array as one channel.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if a64.ndim == 2 or channel_axis is None:
        return _ssim_channel(a64, b64, data_range)
    a64, b64 = np.moveaxis(a64, channel_axis, 0), np.moveaxis(b64, channel_axis, 0)
    return float(np.mean([_ssim_channel(x, y, data_range) for x, y in zip(a64, b64, strict=True)]))


@dataclass(frozen=True)
class Agreement:
    """How closely one output matches a reference."""

    max_abs: float
    psnr: float
    ssim: float
    nonfinite: int

    def to_dict(self) -> dict[str, float | int | str]:
        d = asdict(self)
        if math.isinf(self.psnr):
            d["psnr"] = "inf"  # JSON has no infinity
        return d


def agreement(
    out: np.ndarray, ref: np.ndarray, data_range: float = 1.0, channel_axis: int | None = -1
) -> Agreement:
    """All four figures of ``out`` against ``ref`` (non-finite entries of ``out`` zeroed for PSNR/SSIM)."""
    bad = nonfinite(out)
    clean = np.nan_to_num(out, nan=0.0, posinf=data_range, neginf=0.0) if bad else out
    return Agreement(
        max_abs=max_abs(out, ref),
        psnr=psnr(clean, ref, data_range),
        ssim=ssim(clean, ref, data_range, channel_axis),
        nonfinite=bad,
    )


def rounded_db(value: float) -> float | str:
    """A PSNR for a JSON report: rounded to 0.001 dB, ``"inf"`` for identical outputs (JSON has
    no infinity)."""
    return "inf" if math.isinf(value) else round(value, 3)

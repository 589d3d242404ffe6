"""Our numpy metrics against scikit-image's independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from restorekit.data import sample_images
from restorekit.metrics import agreement, max_abs, nonfinite, psnr, ssim


@pytest.fixture(scope="module")
def pair():
    clean = sample_images()[0].astype(np.float64) / 255.0
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape), 0, 1)
    return clean, noisy


def test_psnr_matches_skimage(pair):
    clean, noisy = pair
    assert psnr(noisy, clean) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=1))
    assert math.isinf(psnr(clean, clean))


def test_ssim_matches_skimage_gaussian_wang(pair):
    clean, noisy = pair
    want = structural_similarity(clean, noisy, data_range=1, channel_axis=-1,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)  # fmt: skip
    assert ssim(noisy, clean) == pytest.approx(want, abs=1e-9)
    gray = structural_similarity(clean[..., 0], noisy[..., 0], data_range=1, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)  # fmt: skip
    assert ssim(noisy[..., 0], clean[..., 0]) == pytest.approx(gray, abs=1e-9)
    chw = ssim(noisy.transpose(2, 0, 1), clean.transpose(2, 0, 1), channel_axis=0)
    assert chw == pytest.approx(want, abs=1e-9)


def test_nonfinite_is_counted_not_hidden(pair):
    clean, noisy = pair
    broken = noisy.copy()
    broken[0, 0, 0], broken[1, 1, 1] = np.nan, np.inf
    fig = agreement(broken, clean)
    assert nonfinite(broken) == 2 and fig.nonfinite == 2
    assert fig.max_abs == pytest.approx(max_abs(np.nan_to_num(broken, nan=clean[0, 0, 0],
                                                             posinf=clean[1, 1, 1]), clean))  # fmt: skip
    assert fig.to_dict()["psnr"] != "inf"

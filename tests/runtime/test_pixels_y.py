"""Studio-range Y for "Y" models (trained on MATLAB / scikit-image rgb2ycbcr), full range for GRAY."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2ycbcr

from restorekit.manifest import TensorSpec
from restorekit.runtime.pixels import output_to_image, to_model_input, to_unit_output


def test_y_models_get_scikit_image_ycbcr_y():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    want = rgb2ycbcr(rgb)[:, :, 0] / 255.0  # skimage: Y in [16, 235]
    got = to_model_input(rgb, TensorSpec("input", 1, color_order="Y"))[0]
    assert np.abs(got - want).max() < 1e-5
    gray = to_model_input(rgb, TensorSpec("input", 1, color_order="GRAY"))[0]
    assert np.abs(gray - (rgb / 255.0) @ np.array([0.299, 0.587, 0.114])).max() < 1e-5


def test_y_outputs_go_back_to_full_range():
    spec = TensorSpec("output", 1, color_order="Y", value_range=255.0)
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    model_units = to_model_input(gray, spec)
    assert model_units.min() >= 16 - 1e-3 and model_units.max() <= 235 + 1e-3
    back = output_to_image(model_units.copy(), spec, np.uint8)[:, :, 0]
    assert np.array_equal(back, gray)
    unit = to_unit_output(model_units, spec)[:, :, 0]
    assert np.abs(unit - gray / 255.0).max() < 1e-5

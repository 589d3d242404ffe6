"""Our entropy threshold search against ONNX Runtime's own, on histograms its collector made."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.calibration.entropy_search import entropy_threshold, faster_entropy_search

calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")


def _collected(tiles: list[np.ndarray]) -> tuple:
    """The histogram ONNX Runtime's entropy collector keeps after these tiles (merged, grown)."""
    collector = calibrate.HistogramCollector("entropy", False, 128, 128, 99.99, "same")
    for tile in tiles:
        collector.collect({"t": [tile.astype(np.float32)]})
    return collector.histogram_dict["t"]


def _onnxruntime_search(histogram: tuple) -> tuple:
    return calibrate.HistogramCollector.get_entropy_threshold(None, histogram, 128)


def _tile_sets():
    rng = np.random.default_rng(7)
    yield "gaussian, one tile", [rng.normal(0, 1, 20_000)]
    yield "relu output (half zeros)", [np.maximum(rng.normal(0, 1, 20_000), 0)]
    yield "laplace, widening tiles", [rng.laplace(0, s, 30_000) for s in (0.5, 1, 2, 4)]
    yield "heavy tail, many tiles", [rng.standard_t(2, 40_000) * s for s in (1, 3, 1, 9, 2)]
    yield "sparse, few values", [rng.choice([-3.0, 0.0, 0.5, 7.0], 5_000)]
    yield "skewed", [rng.gamma(2.0, 1.0, 25_000) - 0.2, rng.gamma(2.0, 3.0, 25_000)]
    yield "constant zero then data", [np.zeros(1000), rng.normal(0, 2, 10_000)]


@pytest.mark.parametrize("tiles", [t for _, t in _tile_sets()], ids=[n for n, _ in _tile_sets()])
def test_same_range_as_onnxruntime_bit_for_bit(tiles):
    histogram = _collected(tiles)
    ours, theirs = entropy_threshold(histogram), _onnxruntime_search(histogram)
    assert len(histogram[0]) >= 128
    assert [np.asarray(v).tobytes() for v in ours] == [np.asarray(v).tobytes() for v in theirs]
    assert [np.asarray(v).dtype for v in ours] == [np.asarray(v).dtype for v in theirs]


def test_grown_histogram_is_searched_over_every_candidate():
    """A histogram grown to hundreds of bins (what makes ONNX Runtime's search slow) still gives
    its range, and the range is not simply the full one (the search clips)."""
    rng = np.random.default_rng(3)
    tiles = [rng.normal(0, 1, 50_000), np.concatenate([rng.normal(0, 1.5, 50_000), [18.0, -17.0]])]
    histogram = _collected(tiles)
    assert 400 < len(histogram[0]) < 700
    low, high = entropy_threshold(histogram)
    assert (low, high) == _onnxruntime_search(histogram)
    assert histogram[2] < low < 0 < high < histogram[3]


def test_hook_is_scoped():
    original = calibrate.HistogramCollector.get_entropy_threshold
    collect_value = calibrate.HistogramCollector.collect_value
    histogram = _collected([np.random.default_rng(1).normal(0, 1, 5000)])
    with faster_entropy_search():
        assert calibrate.HistogramCollector.get_entropy_threshold is not original
        inside = calibrate.HistogramCollector("entropy", False, 128, 128, 99.99, "same")
        assert inside.get_entropy_threshold(histogram, 128) == _onnxruntime_search(histogram)
    assert calibrate.HistogramCollector.get_entropy_threshold is original
    assert calibrate.HistogramCollector.collect_value is collect_value


@pytest.mark.parametrize("tiles", [t for _, t in _tile_sets()], ids=[n for n, _ in _tile_sets()])
def test_collection_without_copies_keeps_the_same_histograms(tiles):
    """Same counts, edges, extremes and threshold as ONNX Runtime's collection, tile by tile
    (first histogram, merges that keep and that widen the range), for batched outputs too."""
    theirs = calibrate.HistogramCollector("entropy", False, 128, 128, 99.99, "same")
    with faster_entropy_search():
        ours = calibrate.HistogramCollector("entropy", False, 128, 128, 99.99, "same")
        for k, tile in enumerate(tiles):
            data = tile.astype(np.float32).reshape(1, -1)
            batch = [data, data[:, ::-1].copy()] if k % 2 else [data]  # two outputs of one tile
            ours.collect({"t": batch})
    for k, tile in enumerate(tiles):
        data = tile.astype(np.float32).reshape(1, -1)
        theirs.collect({"t": [data, data[:, ::-1].copy()] if k % 2 else [data]})
    for mine, reference in zip(ours.histogram_dict["t"], theirs.histogram_dict["t"], strict=True):
        mine, reference = np.asarray(mine), np.asarray(reference)
        assert mine.dtype == reference.dtype and mine.tobytes() == reference.tobytes()

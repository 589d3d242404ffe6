"""ONNX Runtime's entropy (KL) threshold search, computed with array operations.

ONNX Runtime's entropy calibrator picks, per tensor, the clipping range whose 128-level
quantisation loses the least information (smallest KL divergence between the clipped histogram and
its quantised form; TensorRT's "entropy calibration"). Its search adds up histogram bins with
Python's ``sum`` one element at a time, for every candidate range: as the histogram widens
(it grows bins whenever a later tile reaches further), the search costs quadratic time in Python
and took most of an INT8 export of MPRNet's demo network.

:func:`entropy_threshold` computes the same candidates with numpy: the integer counts are exact in
either form, and the floating-point steps (the smoothing and the divergence) are ONNX Runtime's
own functions called on the same arrays, so the chosen range is the same bit for bit
(tested against ONNX Runtime's search on real and synthetic histograms).
:func:`faster_entropy_search` makes ONNX Runtime's calibrator use it for the duration of a call,
together with :func:`collect_without_copies`, its histogram collection without the two copies of
every calibrated tensor it makes per tile (80 of the 713 s of a full MPRNet-deblur calibration).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def entropy_threshold(
    histogram: tuple, num_quantized_bins: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) range ONNX Runtime's entropy search chooses for one tensor.

    Args:
        histogram: ``(counts, edges, min, max, ...)`` as ONNX Runtime's histogram collector
            keeps it: symmetric bins around zero, ``len(edges) == len(counts) + 1``.
        num_quantized_bins: levels of the quantised form (ONNX Runtime's default, 128).

    Returns:
        The range as two 0-d arrays of the edges' dtype.
    """
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    counts = np.asarray(histogram[0], dtype=np.int64)
    edges = histogram[1]
    bins = counts.size
    centre = bins // 2
    half = num_quantized_bins // 2
    dtype = edges.dtype
    # Bins left of each start / right of each end, as exact integer prefix sums.
    prefix = np.concatenate(([0], np.cumsum(counts)))
    total = prefix[-1]

    candidates = range(half, centre + 1)
    divergence = np.zeros(len(candidates))
    ranges = []
    for k, i in enumerate(candidates):
        start, end = centre - i, min(centre + i + 1, bins)
        ranges.append((edges[start], edges[end]))
        window = counts[start:end]
        p = window.copy()
        p[0] += prefix[start]  # outliers fold into the outermost bins
        p[-1] += total - prefix[end]
        merged = window.size // num_quantized_bins
        covered = merged * num_quantized_bins
        levels = window[:covered].reshape(num_quantized_bins, merged).sum(axis=1)
        levels[-1] += window[covered:].sum()
        occupied = (p[:covered] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
        # Each level's count divided by its occupied bins and given to all its bins, an integer as
        # ONNX Runtime stores it (the quotient truncated); zero past the last whole level.
        q = np.zeros(window.size, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(occupied != 0, levels / np.maximum(occupied, 1), 0.0)
        q[:covered] = np.repeat(share.astype(np.int64), merged)
        p_s, q_s = smooth_distribution(p), smooth_distribution(q)
        if p_s is None or q_s is None:
            divergence[k] = np.array(np.inf, dtype=dtype)
        else:
            divergence[k] = np.array(entropy(p_s, q_s), dtype=dtype)

    low, high = ranges[int(np.argmin(divergence))]
    lowest, highest = histogram[2], histogram[3]
    if low < lowest:
        low = lowest
    if high > highest:
        high = highest
    return low, high


def collect_without_copies(collector, name_to_arr: dict) -> None:
    """ONNX Runtime's value-histogram collection (entropy method) for one call of its calibrator.

    The same statistics from the same arrays: per tensor the values in the order ONNX Runtime
    flattens them, NaN-ignoring min and max, a first histogram of ``num_bins`` bins over
    ``[-t, t]`` (``t`` the largest magnitude) and later tiles merged by the collector's own
    ``merge_histogram``; only the values are read in place instead of copied twice.
    """
    for tensor, data in name_to_arr.items():
        parts = data if isinstance(data, list) else [data]
        arrays = [np.asarray(a) for a in parts]
        values = (
            arrays[0].reshape(-1)
            if len(arrays) == 1
            else np.concatenate([a.reshape(-1) for a in arrays])
        )
        if values.size:
            low, high = np.nanmin(values), np.nanmax(values)
        else:
            low = high = np.array(0, dtype=values.dtype)
        threshold = np.array(max(abs(low), abs(high)), dtype=values.dtype)
        kept = collector.histogram_dict.get(tensor)
        if kept is not None:
            collector.histogram_dict[tensor] = collector.merge_histogram(
                kept, values, low, high, threshold
            )
        else:
            counts, edges = np.histogram(values, collector.num_bins, range=(-threshold, threshold))
            collector.histogram_dict[tensor] = (counts, edges, low, high, threshold)


@contextlib.contextmanager
def faster_entropy_search() -> Iterator[None]:
    """Within the block, ONNX Runtime's entropy calibrator searches with :func:`entropy_threshold`
    and collects with :func:`collect_without_copies`.

    Without the expected hooks (another ONNX Runtime release) its own code runs unchanged.
    """
    from onnxruntime.quantization import calibrate

    collector = getattr(calibrate, "HistogramCollector", None)
    hooks = ("get_entropy_threshold", "collect_value", "merge_histogram")
    if collector is None or not all(callable(getattr(collector, h, None)) for h in hooks):
        yield
        return
    originals = {h: getattr(collector, h) for h in hooks[:2]}

    def search(self, histogram, num_quantized_bins):
        return entropy_threshold(histogram, num_quantized_bins)

    collector.get_entropy_threshold = search
    collector.collect_value = collect_without_copies
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(collector, name, original)

"""ONNX Runtime's entropy calibrator with and without ``calibration/entropy_search.py``.

Two parts, each timed in CPU seconds in this process and checked for identical results:

- the threshold search on histograms grown to about 540 and 1120 bins (a tile reaching three
  and nine times further than the first widens the histogram);
- the histogram collection of six 64x256x256 activations over three tiles.

    python benchmarks/entropy_calibration.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from onnxruntime.quantization import calibrate

from restorekit.calibration.entropy_search import entropy_threshold, faster_entropy_search


def grown_histogram(peak: float, seed: int = 3) -> tuple:
    rng = np.random.default_rng(seed)
    collector = calibrate.HistogramCollector("entropy", False, 128, 128, 99.99, "same")
    tiles = [rng.normal(0, 1, 50_000), np.concatenate([rng.normal(0, 1.5, 50_000), [peak, -peak]])]
    for tile in tiles:
        collector.collect_value({"t": [tile.astype(np.float32)]})
    return collector.histogram_dict["t"]


def cpu_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print("| part | ONNX Runtime CPU s | ours CPU s | ratio | same result |")
    print("|---|---|---|---|---|")
    for peak in (18.0, 40.0):
        histogram = grown_histogram(peak)
        theirs_s, theirs = cpu_seconds(
            lambda h=histogram: calibrate.HistogramCollector.get_entropy_threshold(None, h, 128),
            args.repeats,
        )
        ours_s, ours = cpu_seconds(lambda h=histogram: entropy_threshold(h), args.repeats)
        print(f"| threshold search, {len(histogram[0])} bins | {theirs_s:.3f} | {ours_s:.3f} | "
              f"{ours_s / theirs_s:.2f} | {ours == theirs} |")  # fmt: skip

    rng = np.random.default_rng(0)
    tiles = [{f"t{i}": [rng.normal(0, 1 + k, (1, 64, 256, 256)).astype(np.float32)]
              for i in range(6)} for k in range(3)]  # fmt: skip

    def collect() -> dict:
        collector = calibrate.HistogramCollector("entropy", False, 128, 128, 99.99, "same")
        for tile in tiles:
            collector.collect_value(tile)
        return collector.histogram_dict

    theirs_s, theirs = cpu_seconds(collect, args.repeats)
    with faster_entropy_search():
        ours_s, ours = cpu_seconds(collect, args.repeats)
    same = all(
        np.asarray(a).tobytes() == np.asarray(b).tobytes()
        for k in theirs
        for a, b in zip(theirs[k], ours[k], strict=True)
    )
    print(f"| collection, 6 x 64x256x256 over 3 tiles | {theirs_s:.3f} | {ours_s:.3f} | "
          f"{ours_s / theirs_s:.2f} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()

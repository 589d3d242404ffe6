"""ONNX Runtime's entropy calibrator with and without ``calibration/entropy_search.py``.

Two parts, each timed in CPU seconds in this process and checked for identical results:

- the threshold search on histograms grown to about 540 and 1120 bins (a tile reaching three
  and nine times further than the first widens the histogram);
- the histogram collection of six 64x256x256 activations over three tiles.

    python benchmarks/entropy_calibration.py --repeats 3

With ``--model FP32.onnx`` a third part: the whole TensorRT-layout calibration of that graph
(``qdq_from_model``, entropy, ``--tiles`` shipped-photo tiles), calibrating ONNX Runtime's choice
of tensors (inputs and outputs of every Conv/MatMul) against only the inputs the layout quantizes
(``QuantizerSettings.calibrated``), wall and CPU seconds, and whether the Q/DQ graphs are the same:

    restore-export mprnet.deblur -o /tmp/deblur
    python benchmarks/entropy_calibration.py --model /tmp/deblur/mprnet.deblur.fp32.256x256.onnx --tiles 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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
    parser.add_argument("--model", type=Path, help="an FP32 ONNX artifact: time its calibration")
    parser.add_argument("--tiles", type=int, default=4, help="calibration tiles for --model")
    args = parser.parse_args()
    if args.model is not None:
        whole_calibration(args.model, args.tiles)
        return

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


def whole_calibration(path: Path, tiles: int) -> None:
    """The TensorRT layout's entropy calibration of ``path`` with ONNX Runtime's tensor choice and
    with the layout's (inputs of the quantized operators only), one after the other."""
    import contextlib
    import hashlib

    import onnx

    from restorekit.calibration import qdq
    from restorekit.calibration.feeds import feeds_from_images
    from restorekit.data import sample_paths
    from restorekit.manifest import read_manifest
    from restorekit.onnx_graph import name_nodes

    model = onnx.load(str(path))
    del model.metadata_props[:]
    name_nodes(model)
    calibration = feeds_from_images(sample_paths(), read_manifest(path), tiles)
    settings = qdq.layout_named("tensorrt").quantizer_settings(
        model, qdq.quantizable_nodes(model, "tensorrt")
    )
    print(f"{path.name}: {calibration.count} tiles; the layout calibrates "
          f"{len(settings.calibrated)} tensors")  # fmt: skip
    print("| tensors calibrated | wall s | CPU s | Q/DQ graph sha256 |")
    print("|---|---|---|---|")
    original = qdq._calibrating_only
    for label, only in (("ONNX Runtime's choice", False), ("quantized inputs only", True)):
        qdq._calibrating_only = original if only else (lambda _t: contextlib.nullcontext())
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            result = qdq.qdq_from_model(model, calibration, "entropy", layout="tensorrt")
        finally:
            qdq._calibrating_only = original
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        digest = hashlib.sha256(result.model.SerializeToString()).hexdigest()[:16]
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {digest} |", flush=True)


if __name__ == "__main__":
    main()

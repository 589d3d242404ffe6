"""Cost of measuring activation ranges (FP16 planning) against a plain forward pass, per tile.

The ranges are reduced inside the graph (``restorekit.calibration.ranges``): one ONNX Runtime
session whose outputs are two scalars per measured tensor. This times, in one process, a plain
session and the statistics session on the same tiles (medians), and reports peak memory of each
(resident set, measured in a child process each so the two do not mix).

    python benchmarks/activation_ranges.py out/grl-t.dn_c3s25.fp32.256x256.onnx --runs 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import numpy as np
import onnx


def _timed(which: str, path: str, runs: int, queue) -> None:
    from restorekit.calibration.ranges import (
        graph_order_session,
        measured_and_derived,
        statistics_graph,
    )

    model = onnx.load(path)
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    measured, derived = measured_and_derived(model)
    graph = model if which == "plain" else statistics_graph(model, measured)
    start = time.perf_counter()
    session = graph_order_session(graph, None, optimize=True)
    setup = time.perf_counter() - start
    name = model.graph.input[0].name
    session.run(None, {name: x})  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    queue.put((statistics.median(times), setup, peak, len(measured), len(derived)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for which in ("plain", "ranges"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_timed, args=(which, args.onnx, args.runs, queue))
        proc.start()
        results[which] = queue.get()
        proc.join()
    plain, ranges = results["plain"], results["ranges"]
    print(f"{args.onnx}: {ranges[3]} tensors measured, {ranges[4]} derived; "
          f"median of {args.runs} runs, batch 1")  # fmt: skip
    print(f"{'session':<10} {'median s':>9} {'setup s':>8} {'peak GB':>8}")
    for label, (t, setup, peak, *_rest) in results.items():
        print(f"{label:<10} {t:>9.2f} {setup:>8.2f} {peak:>8.2f}")
    print(f"ranges / plain: {ranges[0] / plain[0]:.2f}x time, {ranges[2] / plain[2]:.2f}x memory")


if __name__ == "__main__":
    main()

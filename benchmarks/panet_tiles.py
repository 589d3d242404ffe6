"""Peak memory and ONNX Runtime CPU latency of full-size PANet per tile size (random weights).

Each measurement runs in its own subprocess, because peak RSS (``ru_maxrss``) only ever grows: a
worker records its peak just before the forward pass (model or session loaded, input made) and
after it, and reports the difference as the memory the pass needed. Alongside, the predicted size
of one attention score matrix (``attention_bytes``).

    PYTHONPATH=$PWD python benchmarks/panet_tiles.py --tiles 48 64 80 --runs 3

Prints one Markdown table. Latency is the median of ``--runs`` timed ORT runs after one warm-up,
with ``--threads`` intra-op threads. The machine's load average is printed too: on a shared
machine latencies are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _worker_torch(name: str, tile: int, threads: int) -> dict:
    import torch

    from restorekit.models.registry import resolve

    torch.set_num_threads(threads)
    ref = resolve(name)
    model = ref.build().eval()
    x = torch.rand(1, ref.variant.in_channels, tile, tile)
    before = _maxrss_bytes()
    with torch.inference_mode():
        model(x)  # the first pass gives the peak (and pays one-off kernel set-up)
        peak = _maxrss_bytes()
        start = time.perf_counter()
        model(x)
        seconds = time.perf_counter() - start
    return {"before": before, "peak": peak, "seconds": seconds}


def _worker_export(name: str, tile: int, path: str, simplify: bool) -> dict:
    import torch

    from restorekit.export.simplify import simplify_graph
    from restorekit.export.trace import onnx_from_model
    from restorekit.models.registry import resolve

    torch.manual_seed(0)
    ref = resolve(name)
    graph = onnx_from_model(ref.build().eval(), (tile, tile), ref.variant.in_channels)
    if simplify:
        graph = simplify_graph(graph).model
    Path(path).write_bytes(graph.SerializeToString())
    return {"nodes": len(graph.graph.node)}


def _worker_ort(path: str, tile: int, channels: int, runs: int, threads: int) -> dict:
    import numpy as np

    from restorekit.runtime.ort_backend import OrtOptions, ort_session

    sess = ort_session(path, OrtOptions(threads=threads))
    x = np.random.default_rng(0).random((1, channels, tile, tile), dtype=np.float32)
    before = _maxrss_bytes()
    sess.run(None, {"input": x})  # warm-up: ORT plans its memory on the first run
    peak_first = _maxrss_bytes()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    return {"before": before, "peak": peak_first, "seconds": statistics.median(times), "all": times}


def _spawn(options: argparse.Namespace, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--runs", str(options.runs), "--threads", str(options.threads)]
    cmd += ["--worker", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="panet.dn_s30")
    parser.add_argument("--tiles", type=int, nargs="+", default=[48, 64, 80])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--simplify", action="store_true", help="onnxsim the graph first")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, *rest = args.worker
        if kind == "torch":
            result = _worker_torch(rest[0], int(rest[1]), args.threads)
        elif kind == "export":
            result = _worker_export(rest[0], int(rest[1]), rest[2], rest[3] == "1")
        else:
            result = _worker_ort(rest[0], int(rest[1]), int(rest[2]), args.runs, args.threads)
        print(json.dumps(result))
        return

    from restorekit.models.pyramid_attention import attention_bytes
    from restorekit.models.registry import resolve

    channels = resolve(args.model).variant.in_channels
    mb = 1e6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tile in args.tiles:
            path = str(Path(tmp) / f"panet_{tile}.onnx")
            exp = _spawn(args, "export", args.model, str(tile), path, "1" if args.simplify else "0")
            pt = _spawn(args, "torch", args.model, str(tile))
            ox = _spawn(args, "ort", path, str(tile), str(channels))
            rows.append(
                f"| {tile}x{tile} | {attention_bytes((tile, tile)) / mb:.0f} "
                f"| {(pt['peak'] - pt['before']) / mb:.0f} | {pt['seconds']:.2f} "
                f"| {(ox['peak'] - ox['before']) / mb:.0f} | {ox['seconds']:.2f} "
                f"| {' '.join(f'{t:.2f}' for t in ox['all'])} | {exp['nodes']} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)  # progress on a long run
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{args.model}, batch 1, random weights, {args.threads} threads, load average {load}\n"
        "| tile | scores MB (predicted) | torch peak MB | torch s (2nd run) | ORT peak MB | ORT s (median) "
        "| ORT runs s | ONNX nodes |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()

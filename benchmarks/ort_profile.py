"""Where an ONNX graph's time goes under ONNX Runtime on this CPU: per operator type.

Runs the graph ``--runs`` times on a real tile with ONNX Runtime's profiler on, and prints, per
operator type of the *optimised* graph (after ONNX Runtime's fusions and layout changes), the node
count, the summed median node time and its share of the run. Use it to find what to change in an
exported graph before measuring the change with ``benchmarks/precision.py``.

    python benchmarks/ort_profile.py out/mprnet.demo_dn_s25.fp32.256x256.onnx
    python benchmarks/ort_profile.py out/model.int8cpu.256x256.onnx --runs 10 --top 25
    python benchmarks/ort_profile.py out/grl-t.demo_dn_s25.fp32.256x256.onnx --nodes 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from restorekit.data import sample_paths
from restorekit.export.verify import image_batch
from restorekit.manifest import INPUT_NAME, read_manifest
from restorekit.runtime.ort_backend import OrtOptions, ort_session


def profile(
    path: Path, runs: int, threads: int
) -> tuple[dict[str, list[float]], list[float], dict[str, str]]:
    """Per node, its durations (µs) over the runs; each run's total (µs); per node, its shapes."""
    m = read_manifest(path)
    _, tiles = image_batch(sample_paths()[-1:], m.input, m.tile)
    with tempfile.TemporaryDirectory() as tmp:
        options = OrtOptions(threads=threads, quiet=True, profile_prefix=str(Path(tmp) / "profile"))
        session = ort_session(path, options)
        session.run(None, {INPUT_NAME: tiles[:1]})  # warm-up
        for _ in range(runs):
            session.run(None, {INPUT_NAME: tiles[:1]})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, list[float]] = defaultdict(list)
    shapes: dict[str, str] = {}
    totals = [e["dur"] for e in events if e.get("name") == "model_run"][1:]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            key = f"{op}\t{e['name'][: -len('_kernel_time')]}"
            nodes[key].append(e["dur"])
            shapes[key] = _shapes(e["args"])
    # the warm-up's node events come first: keep the last `runs` of each node
    return {k: v[-runs:] for k, v in nodes.items()}, totals, shapes


def _shapes(args: dict) -> str:
    """``in (1,16,256,256) (16,16,3,3) -> out (1,16,256,256)`` from a profiler event's args."""

    def dims(entries: list[dict]) -> str:
        return " ".join("(" + ",".join(map(str, s)) + ")" for e in entries for s in e.values())

    return f"{dims(args.get('input_type_shape', []))} -> {dims(args.get('output_type_shape', []))}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx", type=Path, help="a graph restore-export wrote (its manifest is read)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=20, help="operator types to list")
    p.add_argument("--nodes", type=int, default=0, help="also list the N slowest nodes")
    args = p.parse_args()
    nodes, totals, shapes = profile(args.onnx, args.runs, args.threads)
    by_op: dict[str, list[float]] = defaultdict(list)
    for key, durations in nodes.items():
        by_op[key.split("\t")[0]].append(statistics.median(durations))
    run_us = statistics.median(totals)
    node_us = sum(sum(v) for v in by_op.values())
    print(f"{args.onnx.name}: median run {run_us / 1e3:.2f} ms over {args.runs} runs, "
          f"{sum(len(v) for v in by_op.values())} nodes after optimisation, "
          f"node time {node_us / 1e3:.2f} ms")  # fmt: skip
    print(f"  {'operator':<28} {'nodes':>6} {'ms':>9} {'share':>6}")
    for op, times in sorted(by_op.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"  {op:<28} {len(times):>6} {sum(times) / 1e3:>9.2f} {sum(times) / node_us:>6.1%}")
    if args.nodes:
        print(f"\n  slowest nodes: {'ms':>9} {'share':>6}  operator  node  shapes")
        medians = {key: statistics.median(d) for key, d in nodes.items()}
        for key, us in sorted(medians.items(), key=lambda kv: -kv[1])[: args.nodes]:
            op, name = key.split("\t")
            print(f"  {us / 1e3:>24.2f} {us / node_us:>6.1%}  {op}  {name}  {shapes[key]}")


if __name__ == "__main__":
    main()

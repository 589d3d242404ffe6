"""Where an ONNX graph's time goes under ONNX Runtime on this CPU: per operator type.

Runs each graph ``--runs`` times on a real tile with ONNX Runtime's profiler on, and prints, per
operator type of the *optimised* graph (after ONNX Runtime's fusions, layout changes and constant
folding at session creation), the node count, the summed median node time and its share of the
run. Given two graphs (ours and another export of the same network, e.g. the plain export of the
official code that ``benchmarks/vs_naive_export.py`` writes with ``--keep``), it prints the two
profiles side by side. Use it to find what to change in an exported graph before measuring the
change with ``benchmarks/precision.py`` or ``benchmarks/vs_naive_export.py``.

    python benchmarks/ort_profile.py out/mprnet.demo_dn_s25.fp32.256x256.onnx
    python benchmarks/ort_profile.py out/model.int8cpu.256x256.onnx --runs 10 --top 25
    python benchmarks/ort_profile.py out/grl-t.demo_dn_s25.fp32.256x256.onnx --nodes 20
    python benchmarks/ort_profile.py ours.onnx naive.onnx --runs 3

A graph without a restorekit manifest (a plain export) takes its input shape from the first
graph's manifest, or from ``--shape C H W``; its first input is fed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit.data import sample_paths
from restorekit.errors import ManifestError
from restorekit.export.verify import image_batch
from restorekit.manifest import read_manifest
from restorekit.runtime.ort_backend import OrtOptions, ort_session


@dataclass(frozen=True)
class Profile:
    """One graph's profile: per node, its durations (µs) over the runs, and its shapes."""

    name: str
    nodes: dict[str, list[float]]  # "op\tnode" -> durations
    totals: list[float]  # each run's total (µs)
    shapes: dict[str, str]

    @property
    def run_us(self) -> float:
        return statistics.median(self.totals)

    def by_op(self) -> dict[str, list[float]]:
        """Per operator type, the median time of each of its nodes (µs)."""
        out: dict[str, list[float]] = defaultdict(list)
        for key, durations in self.nodes.items():
            out[key.split("\t")[0]].append(statistics.median(durations))
        return out

    @property
    def node_us(self) -> float:
        return sum(sum(v) for v in self.by_op().values())


def real_tile(path: Path, shape: tuple[int, int, int] | None) -> np.ndarray:
    """A (1, C, H, W) tile of a bundled photo: the manifest's input convention and tile, else a
    [0, 1] RGB/gray tile of ``shape``."""
    try:
        m = read_manifest(path)
    except (ManifestError, OSError, ValueError):
        m = None
    if m is not None and m.tile is not None:
        return image_batch(sample_paths()[-1:], m.input, m.tile)[1][:1]
    if shape is None:
        raise SystemExit(
            f"{path.name} has no restorekit manifest: give its input with --shape C H W"
        )
    from restorekit.runtime.imageio import read_image

    c, h, w = shape
    img = read_image(sample_paths()[-1]).astype(np.float32)
    img = img / (65535.0 if img.max() > 255 else 255.0)
    img = img[:h, :w].mean(axis=2, keepdims=True) if c == 1 else img[:h, :w, :3]
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def profile(path: Path, tile: np.ndarray, runs: int, threads: int) -> Profile:
    with tempfile.TemporaryDirectory() as tmp:
        options = OrtOptions(threads=threads, quiet=True, profile_prefix=str(Path(tmp) / "profile"))
        session = ort_session(path, options)
        feed = {session.get_inputs()[0].name: tile}
        session.run(None, feed)  # warm-up
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, list[float]] = defaultdict(list)
    shapes: dict[str, str] = {}
    totals = [e["dur"] for e in events if e.get("name") == "model_run"][1:]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = f"{e['args']['op_name']}\t{e['name'][: -len('_kernel_time')]}"
            nodes[key].append(e["dur"])
            shapes[key] = _shapes(e["args"])
    # the warm-up's node events come first: keep the last `runs` of each node
    return Profile(path.name, {k: v[-runs:] for k, v in nodes.items()}, totals, shapes)


def _shapes(args: dict) -> str:
    """``in (1,16,256,256) (16,16,3,3) -> out (1,16,256,256)`` from a profiler event's args."""

    def dims(entries: list[dict]) -> str:
        return " ".join("(" + ",".join(map(str, s)) + ")" for e in entries for s in e.values())

    return f"{dims(args.get('input_type_shape', []))} -> {dims(args.get('output_type_shape', []))}"


def print_profiles(profiles: list[Profile], top: int) -> None:
    """Operator types by time, one column group (nodes, ms, share) per graph."""
    for i, p in enumerate(profiles):
        print(f"[{i + 1}] {p.name}: median run {p.run_us / 1e3:.2f} ms, "
              f"{sum(len(v) for v in p.by_op().values())} nodes after optimisation, "
              f"node time {p.node_us / 1e3:.2f} ms")  # fmt: skip
    ops = [p.by_op() for p in profiles]
    order = sorted(
        {op for o in ops for op in o}, key=lambda op: -max(sum(o.get(op, [0.0])) for o in ops)
    )
    head = "".join(
        f" | {'[' + str(i + 1) + '] nodes':>9} {'ms':>9} {'share':>6}" for i in range(len(ops))
    )
    print(f"  {'operator':<28}{head}")
    for op in order[:top]:
        cols = ""
        for o, p in zip(ops, profiles, strict=True):
            times = o.get(op, [])
            cols += f" | {len(times):>9} {sum(times) / 1e3:>9.2f} {sum(times) / p.node_us:>6.1%}"
        print(f"  {op:<28}{cols}")


def print_slowest(p: Profile, count: int) -> None:
    print(f"\n  slowest nodes of {p.name}: {'ms':>9} {'share':>6}  operator  node  shapes")
    medians = {key: statistics.median(d) for key, d in p.nodes.items()}
    for key, us in sorted(medians.items(), key=lambda kv: -kv[1])[:count]:
        op, name = key.split("\t")
        print(f"  {us / 1e3:>24.2f} {us / p.node_us:>6.1%}  {op}  {name}  {p.shapes[key]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "onnx", type=Path, nargs="+", help="one or two graphs (the first with a manifest)"
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", type=int, nargs=3, metavar=("C", "H", "W"),
                   help="input shape when the first graph has no restorekit manifest")  # fmt: skip
    p.add_argument("--top", type=int, default=20, help="operator types to list")
    p.add_argument("--nodes", type=int, default=0, help="also list the N slowest nodes of each")
    args = p.parse_args()
    if len(args.onnx) > 2:
        p.error("give one graph, or two to compare")
    tile = real_tile(args.onnx[0], tuple(args.shape) if args.shape else None)
    profiles = [profile(path, tile, args.runs, args.threads) for path in args.onnx]
    print_profiles(profiles, args.top)
    for prof in profiles if args.nodes else []:
        print_slowest(prof, args.nodes)


if __name__ == "__main__":
    main()

"""Our FP32 graphs against what a user gets by hand: a plain export of the official code.

For each model, in one process: our network and the official one with the SAME random weights (ours
loaded into the official module with ``strict=True``; our parameter names are the official ones),
our FP32 graph as ``restore-export`` writes it (trace at a free batch, onnxsim, the graph edits
that follow it) and a plain ``torch.onnx.export`` of the official module (opset 17, TorchScript
exporter, no simplification) at the same tile; both run in ONNX Runtime on the CPU, beside
PyTorch eager of both modules, on the same tile of a bundled photo at batch 1. Prints median
latencies (calls alternate, so all share the same machine load), the ratios ours/naive and
ours/eager, the outputs' agreement (max abs) and the file sizes against the parameter bytes.

The official code is imported at run time from checkouts outside this repository
(``--official DIR``: a checkout, or a folder that holds checkouts, of swz30/MPRNet,
ofsoundof/GRL-Image-Restoration and SHI-Labs/Pyramid-Attention-Networks); a model whose
repository is not found is skipped with the name of the repository it needs.

    python benchmarks/vs_naive_export.py --official /work/ext
    python benchmarks/vs_naive_export.py --official /work/ext --models grl-t.dn_c3s25 --keep out/naive

PANet's official attention convolves with weights computed from its input, which the exporter
refuses: its row compares our graph with the official code in eager PyTorch only.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import timing
import torch
from official_code import (
    GRL_REPO,
    MPRNET_REPO,
    PANET_REPO,
    Repository,
    load_strict,
    official_grl,
    official_mprnet,
    official_panet,
)
from torch import nn

from restorekit.data import sample_paths
from restorekit.export.cpu_speed import alternating_medians
from restorekit.export.simplify import compact_graph, scalar_prelu_as_leaky_relu, simplify_graph
from restorekit.export.trace import ResultOnly, onnx_from_model
from restorekit.models.build import model_from_name
from restorekit.runtime.imageio import read_image
from restorekit.runtime.ort_backend import OrtOptions, ort_session

DEFAULT_MODELS = {
    # model: tile side (the issue's tiles: GRL-T and MPRNet 128, PANet 48)
    "mprnet.deblur": 128,
    "mprnet.denoise": 128,
    "mprnet.derain": 128,
    "grl-t.dn_c3s25": 128,
    "panet.dn_s30": 48,
}
_GRL_BUFFERS = re.compile(r"^(table|index|mask)_")


@dataclass(frozen=True)
class Row:
    model: str
    tile: int
    ours_ms: float | None  # None: not timed in this run (--graphs naive)
    naive_ms: float | None  # None: the official code does not export
    eager_ms: float  # the official module in PyTorch eager
    ours_eager_ms: float  # our module in PyTorch eager
    ours_mb: float
    naive_mb: float | None
    param_mb: float
    max_abs_naive: float | None  # our graph vs the naive graph, both in ONNX Runtime
    max_abs_eager: float  # our graph vs the official module in eager
    note: str = ""


def _repository(model: str) -> Repository:
    arch = model.split(".")[0]
    return {"mprnet": MPRNET_REPO, "panet": PANET_REPO}.get(arch, GRL_REPO)


def _official(model: str, ours: nn.Module, config: dict, checkout: Path, tile: int) -> nn.Module:
    arch, variant = model.split(".")
    if arch == "mprnet":
        module = official_mprnet(checkout, variant)
    elif arch == "panet":
        module = official_panet(
            checkout, config["n_resblocks"], config["n_feats"], config["n_colors"]
        )
    else:
        module = official_grl(checkout, config, (tile, tile))
    load_strict(
        module, ours, lambda name: arch.startswith("grl") and bool(_GRL_BUFFERS.match(name))
    )
    return module


def photo_tile(side: int) -> np.ndarray:
    """A (1, 3, side, side) RGB tile in [0, 1] from the top-left of a bundled photo."""
    img = read_image(sample_paths()[-1])[:side, :side, :3].astype(np.float32)
    img /= 65535.0 if img.max() > 255 else 255.0
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def our_graph(built, tile: int) -> onnx.ModelProto:
    """Our FP32 graph as restore-export makes it (trace, onnxsim and the edits after it)."""
    ref = built.ref
    traced = onnx_from_model(
        built.module, (tile, tile), ref.variant.in_channels, ref.spec.output_index
    )
    simp = simplify_graph(traced)
    graph = simp.model
    if simp.simplified:
        scalar_prelu_as_leaky_relu(graph)
    compact_graph(graph)
    return graph


def naive_export(official: nn.Module, x: torch.Tensor, path: Path) -> str:
    """A plain ``torch.onnx.export`` of the official module; '' or why it failed."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(official, (x,), str(path), opset_version=17, dynamo=False)
    except Exception as exc:  # the exporter raises many types
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
    return ""


def measure(
    model: str, tile: int, checkout: Path, runs: int, threads: int, keep: Path | None, graphs: str
) -> Row:
    built = model_from_name(model, seed=0)
    ours = built.module
    official = _official(model, ours, built.ref.variant.config, checkout, tile)
    pick = ResultOnly(official, built.ref.spec.output_index).eval()
    x_np = photo_tile(tile)
    x = torch.from_numpy(x_np)
    with torch.inference_mode():
        eager_out = pick(x).numpy()
    param_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ours_path = folder / f"{model}.ours.{tile}.onnx"
        naive_path = folder / f"{model}.naive.{tile}.onnx"
        onnx.save(our_graph(built, tile), str(ours_path))
        failure = naive_export(official, x, naive_path)
        options = OrtOptions(threads=threads, quiet=True)
        ours_out, naive_out, fns = None, None, []
        if graphs in ("both", "ours"):
            ours_sess = ort_session(ours_path, options)
            ours_out = ours_sess.run(None, {ours_sess.get_inputs()[0].name: x_np})[0]
            fns.append(lambda: ours_sess.run(None, {ours_sess.get_inputs()[0].name: x_np}))
        if not failure and graphs in ("both", "naive"):
            naive_sess = ort_session(naive_path, options)
            feed = {naive_sess.get_inputs()[0].name: x_np}
            out_index = built.ref.spec.output_index or 0
            naive_out = naive_sess.run(None, feed)[out_index]
            fns.append(lambda: naive_sess.run(None, feed))

        def eager(module: nn.Module) -> None:
            with torch.inference_mode():
                module(x)

        fns += [lambda: eager(pick), lambda: eager(ours)]
        times: list[float | None] = [t * 1e3 for t in alternating_medians(fns, runs)]
        sizes = (ours_path.stat().st_size, None if failure else naive_path.stat().st_size)
    if ours_out is None:
        times.insert(0, None)
    if naive_out is None:
        times.insert(1, None)
    return Row(
        model=model,
        tile=tile,
        ours_ms=times[0],
        naive_ms=times[1],
        eager_ms=times[2],
        ours_eager_ms=times[3],
        ours_mb=sizes[0] / 1e6,
        naive_mb=None if sizes[1] is None else sizes[1] / 1e6,
        param_mb=param_bytes / 1e6,
        max_abs_naive=None
        if naive_out is None or ours_out is None
        else float(np.abs(ours_out - naive_out).max()),
        # with --graphs naive: the naive graph against the official module in eager
        max_abs_eager=float("nan")
        if ours_out is None and naive_out is None
        else float(np.abs((naive_out if ours_out is None else ours_out) - eager_out).max()),
        note=f"official code does not export ({failure})" if failure else "",
    )


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_table(rows: list[Row], threads: int, runs: int) -> None:
    print(f"\nONNX Runtime CPU, {threads} threads, batch 1, median of {runs}; PyTorch eager "
          f"{torch.__version__}, same threads")  # fmt: skip
    print("| model, tile | ours ms | naive ms | ours/naive | official eager ms | ours/eager "
          "| our eager ms | ours vs naive max abs | ours vs eager max abs "
          "| ours MB | naive MB | params MB | ours/params |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        both = r.naive_ms is not None and r.ours_ms is not None
        ratio_naive = r.ours_ms / r.naive_ms if both else None
        ratio_eager = None if r.ours_ms is None else r.ours_ms / r.eager_ms
        print(
            f"| {r.model}, {r.tile}² | {_fmt(r.ours_ms, '.0f')} | {_fmt(r.naive_ms, '.0f')} "
            f"| {_fmt(ratio_naive, '.2f')} | {r.eager_ms:.0f} | {_fmt(ratio_eager, '.2f')} "
            f"| {r.ours_eager_ms:.0f} | {_fmt(r.max_abs_naive, '.1e')} | {r.max_abs_eager:.1e} "
            f"| {r.ours_mb:.2f} | {_fmt(r.naive_mb, '.1f')} | {r.param_mb:.2f} "
            f"| {r.ours_mb / r.param_mb:.2f} |"
        )
    for r in rows:
        if r.note:
            print(f"- {r.model}: {r.note}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", type=Path, action="append", default=[],
                   help="a checkout of an official repository, or a folder holding checkouts "
                        "(repeatable)")  # fmt: skip
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help=f"registry names (default: {' '.join(DEFAULT_MODELS)})")  # fmt: skip
    p.add_argument("--tile", type=int, help="tile side for every model (default: per model)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--keep", type=Path, help="write both graphs here (for benchmarks/ort_profile.py)"
    )
    p.add_argument(
        "--graphs",
        choices=("both", "ours", "naive"),
        default="both",
        help="ONNX Runtime sessions to open and time beside eager (both: one process; ours or "
        "naive: when the two sessions do not fit in memory together, as GRL-T at 128x128 on a "
        "shared 24 GB machine; then compare through the eager column)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not timing.keep_freed_memory():
        print("note: not glibc; PyTorch eager pays page faults on its large tensors each run")
    rows, missing = [], []
    for model in args.models:
        repo = _repository(model)
        checkout = repo.find(args.official)
        if checkout is None:
            missing.append(f"{model}: needs a checkout of github.com/{repo.name} (--official DIR)")
            continue
        tile = args.tile or DEFAULT_MODELS.get(model, 128)
        print(f"{model} at {tile}x{tile} ...", flush=True)
        rows.append(measure(model, tile, checkout, args.runs, args.threads, args.keep, args.graphs))
    if rows:
        print_table(rows, args.threads, args.runs)
    for line in missing:
        print(line)


if __name__ == "__main__":
    main()

"""What ONNX Runtime's CPU kernels allow at best: a plain chain of 3x3 convolutions, by width.

The latency targets of ``benchmarks/precision.py`` (ONNX Runtime FP32 against PyTorch eager, INT8
against FP32) are bounded by the kernels, not only by the graphs. This measures the bound on the
operation that dominates the convolutional networks here: ``--depth`` 3x3 convolutions with ReLU
at ``--widths`` channels (one 3 -> C convolution in front, one C -> 3 behind), on a real photo
tile. For each width, all in one process (medians of ``--runs``):

- PyTorch eager (freed memory kept, as in ``precision.py``) and ONNX Runtime FP32: *FP32 × torch*;
- ONNX Runtime on the Q/DQ INT8 graphs this toolkit writes, calibrated min-max on the shipped
  photos: ``--int8-layout ort-cpu`` (*INT8 CPU × FP32*) and the TensorRT layout
  (*INT8 TRT × FP32*), each with its PSNR against the FP32 output;
- the FP32 and INT8 CPU rates in GFLOP/s and integer GOP/s (2 per multiply-add).

A graph made of such convolutions cannot beat these ratios by graph work; networks with other
operators (attention, resizes, channel attention) sit above them.

    python benchmarks/kernel_floor.py
    python benchmarks/kernel_floor.py --widths 16 32 64 96 128 --tile 256 --runs 9 --threads 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import keep_freed_memory, median_seconds
from torch import nn

from restorekit.calibration.feeds import CalibrationSet
from restorekit.calibration.qdq import qdq_from_model
from restorekit.data import sample_paths
from restorekit.export.compare import OrtSession
from restorekit.export.trace import onnx_from_model
from restorekit.export.verify import image_batch
from restorekit.manifest import INPUT_NAME, TensorSpec
from restorekit.metrics import psnr
from restorekit.onnx_graph import name_nodes


class ConvChain(nn.Module):
    """3 -> C, then ``depth`` C -> C 3x3 convolutions with ReLU, then C -> 3 (seeded weights)."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def flops(self, tile: tuple[int, int]) -> float:
        """Multiply-adds × 2 of one forward pass at batch 1."""
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        per_pixel = sum(c.in_channels * c.out_channels * 9 for c in convs)
        return 2.0 * per_pixel * tile[0] * tile[1]


def measure(width: int, args: argparse.Namespace, tiles: np.ndarray) -> dict[str, float]:
    tile = (args.tile, args.tile)
    chain = ConvChain(width, args.depth).eval()
    fp32 = onnx_from_model(chain, tile, in_channels=3)
    name_nodes(fp32)  # the quantizer addresses nodes by name
    calibration = CalibrationSet(tiles=tiles, fingerprint="", source="samples", images=len(tiles))
    graphs = {"fp32": fp32}
    for layout in ("ort-cpu", "tensorrt"):
        graphs[layout] = qdq_from_model(fp32, calibration, method="minmax", layout=layout).model
    x = tiles[:1]
    sessions = {
        k: OrtSession(g.SerializeToString(), threads=args.threads) for k, g in graphs.items()
    }
    times = {}
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        times["torch"] = median_seconds(lambda: chain(xt), args.runs)
    for key, session in sessions.items():
        times[key] = median_seconds(lambda s=session: s.run(x), args.runs)
    ref = sessions["fp32"].run(x)
    figures = {f"t_{k}": v for k, v in times.items()}
    for layout in ("ort-cpu", "tensorrt"):
        figures[f"psnr_{layout}"] = psnr(
            sessions[layout].run(x), ref, data_range=float(np.ptp(ref))
        )
    figures["flops"] = chain.flops(tile)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--depth", type=int, default=6, help="C -> C convolutions (default 6)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()
    spec = TensorSpec(name=INPUT_NAME, channels=3)
    _, tiles = image_batch(sample_paths(), spec, (args.tile, args.tile))
    print(
        f"{args.depth} x 3x3 conv + ReLU at {args.tile}x{args.tile}, batch 1, {args.threads} threads, "
        f"medians of {args.runs}; freed memory {'kept' if kept else 'returned (not glibc)'}"
    )
    head = (
        f"{'width':>5} {'torch ms':>9} {'fp32 ms':>8} {'×torch':>7} {'GFLOP/s':>8} "
        f"{'int8cpu ms':>10} {'×fp32':>6} {'GOP/s':>6} {'dB':>6} {'int8trt ms':>10} {'×fp32':>6} {'dB':>6}"
    )
    print(head)
    for width in args.widths:
        f = measure(width, args, tiles)
        print(
            f"{width:>5} {f['t_torch'] * 1e3:9.1f} {f['t_fp32'] * 1e3:8.1f} "
            f"{f['t_fp32'] / f['t_torch']:7.2f} {f['flops'] / f['t_fp32'] / 1e9:8.0f} "
            f"{f['t_ort-cpu'] * 1e3:10.1f} {f['t_ort-cpu'] / f['t_fp32']:6.2f} "
            f"{f['flops'] / f['t_ort-cpu'] / 1e9:6.0f} {f['psnr_ort-cpu']:6.1f} "
            f"{f['t_tensorrt'] * 1e3:10.1f} {f['t_tensorrt'] / f['t_fp32']:6.2f} "
            f"{f['psnr_tensorrt']:6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""How much time and memory the runtime itself costs, outside the network (ONNX Runtime, CPU).

1. Overhead: ``restore-run``'s work on one large image (read, tile gathering, pixel conversion,
   blending, clamping, quantisation, atomic write) is timed against the time spent inside the
   backend's inference calls. The figure is (total - inference) / total.
2. Memory: peak RSS of a child process that restores an image, at two image sizes. The runtime
   keeps the input, two tile batches and a blend band one tile row high; finished rows go
   straight into the output image. So the growth between sizes should be only the
   image-proportional buffers (uint8 input and output, the file's bytes and the encoder's
   buffers), nothing that scales with the number of tiles and no float copy of the image.

The network is a small residual conv net exported here with PyTorch (``--width``/``--depth`` set
its cost; the default is in the range of light restoration nets). Run:

    PYTHONPATH=$PWD python benchmarks/runtime_overhead.py --mp 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def export_net(folder: Path, width: int, depth: int, tile: int, batch: int) -> Path:
    """A residual conv net (``depth`` 3x3 convs of ``width`` channels) as a static-tile ONNX."""
    import torch
    from torch import nn

    from restorekit.manifest import BatchRange, Manifest, PrecisionPlan, TensorSpec, write_manifest

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
            for _ in range(depth - 2):
                layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
            layers.append(nn.Conv2d(width, 3, 3, padding=1))
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return x + 0.1 * self.body(x)

    torch.manual_seed(0)
    path = folder / "bench.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Net().eval(), (torch.rand(batch, 3, tile, tile),), str(path),
            input_names=["input"], output_names=["output"], opset_version=17, dynamo=False,
        )  # fmt: skip
    manifest = Manifest(
        model="bench.conv", task="benchmark", input=TensorSpec("input", 3),
        output=TensorSpec("output", 3), scale=1, multiple_of=1, tile=(tile, tile),
        batch=BatchRange(batch, batch, batch), overlap=32, blend="feather",
        precision=PrecisionPlan(), opset=17, weights="random (seed 0)",
    )  # fmt: skip
    write_manifest(path, manifest)
    return path


def export_mprnet_tiny(folder: Path, tile: int, batch: int) -> Path:
    """The tiny MPRNet configuration through restorekit's exporter (random weights, seed 0)."""
    from restorekit.export import ExportOptions, export_model
    from restorekit.models import resolve

    options = ExportOptions(
        model="mprnet.deblur",
        tile=(tile, tile),
        batch=batch,
        output_dir=folder,
        build_overrides=resolve("mprnet").spec.tiny,
    )
    return export_model(options).onnx_path  # fmt: skip


def make_image(path: Path, height: int, width: int) -> None:
    """A smooth photo-like test image (PNG), so encode/decode costs are realistic."""
    from restorekit.runtime.imageio import write_image

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([np.sin(xx / 97 + c) * np.cos(yy / 61 - c) for c in range(3)], axis=2)
    noise = rng.normal(0, 0.05, size=(height, width, 3)).astype(np.float32)
    image = np.clip((base * 0.4 + 0.5 + noise) * 255, 0, 255).astype(np.uint8)
    write_image(path, image)


def measure_runtime_only(onnx_path: Path, inputs: list[Path], out_path: Path) -> dict:
    """The same job with a backend that returns a ready output at once: the runtime's own wall
    time (I/O, tiling, conversion, blending) with no network running beside it."""
    from restorekit.manifest import read_manifest
    from restorekit.runtime.backend import Backend, IOSpec
    from restorekit.runtime.jobs import run_job
    from restorekit.runtime.ort_backend import OrtBackend
    from restorekit.runtime.restore import Restorer

    with OrtBackend(onnx_path) as real:
        spec_in, spec_out = real.input_spec, real.output_spec
        n = spec_in.static_batch or 2
        canned = real.infer(np.full((n, *spec_in.shape[1:]), 0.5, np.float32))

    class NullBackend(Backend):
        name = "null"

        @property
        def input_spec(self) -> IOSpec:
            return spec_in

        @property
        def output_spec(self) -> IOSpec:
            return spec_out

        def _activate(self) -> None: ...

        def _deactivate(self) -> None: ...

        def _infer(self, batch):
            return canned[: batch.shape[0]]

    with NullBackend() as null:
        restorer = Restorer(null, read_manifest(onnx_path))
        t0 = time.perf_counter()
        summary = run_job(restorer, [str(p) for p in inputs], out_path, progress=False)
        total = time.perf_counter() - t0
    return {"seconds": total, "ms_per_mp": 1e3 * total / summary.megapixels}


def measure_overhead(onnx_path: Path, inputs: list[Path], out_path: Path, threads: int) -> dict:
    from restorekit.runtime.artifact import backend_from_artifact
    from restorekit.runtime.jobs import run_job
    from restorekit.runtime.ort_backend import OrtOptions
    from restorekit.runtime.restore import Restorer

    backend, manifest = backend_from_artifact(onnx_path, "ort", OrtOptions(threads=threads))
    infer_seconds = 0.0
    with backend:
        inner = backend._infer

        def timed(batch):
            nonlocal infer_seconds
            t0 = time.perf_counter()
            out = inner(batch)
            infer_seconds += time.perf_counter() - t0
            return out

        backend._infer = timed  # time exactly the session.run calls
        restorer = Restorer(backend, manifest)
        restorer.restore(np.zeros((manifest.tile[0], manifest.tile[1], 3), np.uint8))  # warm-up
        infer_seconds = 0.0
        t0 = time.perf_counter()
        summary = run_job(restorer, [str(p) for p in inputs], out_path, progress=False)
        total = time.perf_counter() - t0
    if summary.failures:
        raise RuntimeError(summary.failures)
    return {
        "images": summary.images,
        "megapixels": summary.megapixels,
        "total_s": total,
        "infer_s": infer_seconds,
        "overhead_s": total - infer_seconds,
        "overhead_fraction": (total - infer_seconds) / total,
        "overhead_ms_per_mp": 1e3 * (total - infer_seconds) / summary.megapixels,
    }


def child_peak_rss(onnx_path: Path, image_path: Path, out_path: Path, threads: int) -> int:
    """Peak RSS (bytes) of a fresh process that restores one image.

    Read from the child's ``VmHWM`` (high-water mark of its own address space): ``ru_maxrss``
    would not do, Linux carries it over from the forking parent across ``exec``.
    """
    argv = [
        str(onnx_path),
        str(image_path),
        "-o",
        str(out_path),
        "--quiet",
        "--threads",
        str(threads),
    ]
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from restorekit.cli.run import main\n"
        f"code = main({argv!r})\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return int(proc.stdout.strip().splitlines()[-1]) * 1024  # Linux reports KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mp", type=float, default=3.0, help="megapixels of the timing image (2-8)")
    p.add_argument("--model", choices=("conv", "mprnet-tiny"), default="conv")
    p.add_argument("--width", type=int, default=32, help="conv channels")
    p.add_argument("--depth", type=int, default=8, help="conv layers")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--memory-sizes",
        default="2000x1500,4000x3000",
        help="two image sizes HxW for the peak-RSS comparison",
    )
    p.add_argument(
        "--folder", type=int, default=3, help="also time a folder job of this many copies (0: skip)"
    )
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model == "mprnet-tiny":
            onnx_path = export_mprnet_tiny(folder, args.tile, args.batch)
        else:
            onnx_path = export_net(folder, args.width, args.depth, args.tile, args.batch)
        h = int(round((args.mp * 1e6 * 3 / 4) ** 0.5))
        w = int(round(h * 4 / 3))
        image = folder / "photo.png"
        make_image(image, h, w)
        label = args.model if args.model != "conv" else f"conv {args.depth}x{args.width}"
        result = {"model": label, "tile": args.tile,
                  "batch": args.batch, "threads": args.threads, "image": f"{h}x{w}"}  # fmt: skip
        if not args.skip_overhead:
            result["single"] = measure_overhead(
                onnx_path, [image], folder / "out.png", args.threads
            )
            alone = measure_runtime_only(onnx_path, [image], folder / "null.png")
            single = result["single"]
            alone["fraction_if_serial"] = alone["seconds"] / (alone["seconds"] + single["infer_s"])
            result["runtime_only"] = alone
        if args.folder > 1 and not args.skip_overhead:
            # A folder job: decoding/encoding overlap with inference (read-ahead, write-behind).
            copies = []
            for k in range(args.folder):
                copy = folder / "in" / f"photo{k}.png"
                copy.parent.mkdir(exist_ok=True)
                copy.write_bytes(image.read_bytes())
                copies.append(copy)
            result["folder"] = measure_overhead(onnx_path, copies, folder / "out", args.threads)
        if not args.skip_memory:
            rows = []
            for size in args.memory_sizes.split(","):
                mh, mw = (int(v) for v in size.split("x"))
                big = folder / f"big{mh}x{mw}.png"
                make_image(big, mh, mw)
                peak = child_peak_rss(onnx_path, big, folder / f"out{mh}.png", args.threads)
                # image-proportional: uint8 input and output (3 + 3 bytes per pixel) plus the
                # PNG bytes read and the encoder's BGR copy and output buffer while writing
                rows.append({"image": size, "megapixels": mh * mw / 1e6,
                             "peak_rss_mb": peak / 1e6})  # fmt: skip
            a, b = rows
            growth = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["megapixels"] - a["megapixels"])
            result["memory"] = {"runs": rows, "growth_mb_per_mp": growth}
        print(json.dumps(result, indent=2))
        for kind in ("single", "folder"):
            if kind in result:
                ov = result[kind]
                print(
                    f"{kind}: overhead {100 * ov['overhead_fraction']:.2f}% of "
                    f"{ov['total_s']:.2f} s for {ov['images']} image(s) "
                    f"({ov['overhead_ms_per_mp']:.0f} ms/MP outside inference)"
                )
        if "runtime_only" in result:
            ro = result["runtime_only"]
            print(
                f"runtime alone (null backend): {ro['seconds']:.2f} s, {ro['ms_per_mp']:.0f} ms/MP; "
                f"{100 * ro['fraction_if_serial']:.2f}% of total if nothing overlapped"
            )
        if "memory" in result:
            m = result["memory"]
            print(
                "peak RSS: "
                + ", ".join(f"{r['image']}: {r['peak_rss_mb']:.0f} MB" for r in m["runs"])
                + f"; growth {m['growth_mb_per_mp']:.1f} MB per MP"
            )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()

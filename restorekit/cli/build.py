"""``restore-build MODEL.onnx``: build a TensorRT engine on this device from a restorekit ONNX.

Torch-free: runs on a Jetson with only TensorRT, a CUDA binding, numpy and this package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorekit.cli.entry import positive_int, run, tile_shape
from restorekit.export.engine import DEFAULT_DYNAMIC_HW


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of GiB, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-build",
        description="Build a TensorRT engine from an ONNX written by restore-export (its "
        ".onnx.json manifest beside it). Run it on the device that will run the engine.",
    )
    p.add_argument("onnx", type=Path, help="the .onnx file (with its .onnx.json)")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: the ONNX's)")
    p.add_argument("--workspace", type=_positive_float, metavar="GiB",
                   help="builder workspace limit (default 1 on Jetson, else 4)")  # fmt: skip
    p.add_argument("--batch", type=positive_int, help="largest batch (default: the manifest's)")
    for end, side in zip(("min", "opt", "max"), DEFAULT_DYNAMIC_HW, strict=True):
        p.add_argument(f"--{end}-shape", type=tile_shape, metavar="HxW",
                       help=f"{end} tile of a dynamic-size ONNX (default {side}x{side})")  # fmt: skip
    p.add_argument("--timing-cache", type=Path, metavar="PATH",
                   help="timing cache file (default: one per TensorRT version and GPU under "
                   "~/.cache/restorekit/timing)")  # fmt: skip
    p.add_argument("--hardware-compatible", action="store_true",
                   help="engine runs on any Ampere-or-newer desktop GPU (slower)")  # fmt: skip
    p.add_argument("--version-compatible", action="store_true",
                   help="engine runs on later TensorRT releases of the same major")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def options_from_args(args: argparse.Namespace):
    """The :class:`EngineBuildOptions` the parsed arguments ask for."""
    from restorekit.export.engine import EngineBuildOptions

    return EngineBuildOptions(
        output_dir=args.output, workspace_gib=args.workspace, batch=args.batch,
        min_shape=args.min_shape, opt_shape=args.opt_shape, max_shape=args.max_shape,
        timing_cache=args.timing_cache, hardware_compatible=args.hardware_compatible,
        version_compatible=args.version_compatible,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> int:
        from restorekit.export.engine import build_summary, engine_from_onnx

        result = engine_from_onnx(args.onnx, options_from_args(args), progress=not args.no_progress)
        print("\n".join(build_summary(result)))
        return 0

    return run(command)


if __name__ == "__main__":
    sys.exit(main())

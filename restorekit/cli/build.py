"""``restore-build MODEL.onnx``: build a TensorRT engine on this device from a restorekit ONNX.

Also what the CLI shows around a build, for ``restore-build`` and ``restore-export --engine``:
tqdm bars for TensorRT's build phases (:class:`BuildProgress`), the plan and the summary as text,
and the ``restore-build`` command to run on the target when TensorRT is not installed here. The
build itself is :func:`restorekit.tensorrt.builder.engine_from_onnx`.

Torch-free: runs on a Jetson with only TensorRT, a CUDA binding, numpy and this package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from restorekit.cli.entry import positive_float, positive_int, run, tile_shape
from restorekit.tensorrt import builder
from restorekit.tensorrt.builder import EngineBuildResult
from restorekit.tensorrt.device import GIB
from restorekit.tensorrt.plan import (
    DEFAULT_DYNAMIC_HW,
    BuildPlan,
    EngineBuildOptions,
    build_command,
    shape_text,
)


class BuildProgress:
    """tqdm bars for TensorRT's nested build phases (fed by ``trt.IProgressMonitor``).

    Plain Python so it is testable; :mod:`restorekit.tensorrt.builder` forwards the monitor's
    calls here. Call :meth:`close` when the build is over (bars of unfinished phases stay open).
    """

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bars: dict[str, Any] = {}
        self.cancelled = False

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        depth = len(self.bars)
        self.bars[phase_name] = tqdm(
            total=num_steps, desc=phase_name, position=depth, leave=depth == 0,
            file=self.stream, unit="step", dynamic_ncols=True,
        )  # fmt: skip

    def step_complete(self, phase_name: str, step: int) -> bool:
        bar = self.bars.get(phase_name)
        if bar is not None:
            bar.update(max(step + 1 - bar.n, 0))
        return not self.cancelled  # False asks TensorRT to stop the build

    def phase_finish(self, phase_name: str) -> None:
        bar = self.bars.pop(phase_name, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        for name in list(self.bars):
            self.phase_finish(name)


def describe_plan(plan: BuildPlan) -> list[str]:
    """Short lines for the CLI: what will be built and how."""
    typing_ = "strongly typed" if plan.strongly_typed else "weakly typed (legacy flags)"
    flags = ", ".join(plan.network_flags + plan.builder_flags) or "none"
    p = plan.profile
    lines = [
        f"network: {typing_}; flags: {flags}",
        f"profile {plan.input_name}: min {shape_text(p.min)}, opt {shape_text(p.opt)}, "
        f"max {shape_text(p.max)}",
        f"workspace: {plan.workspace_bytes / GIB:g} GiB; timing cache: {plan.timing_cache_path}",
    ]
    if plan.hardware_compatibility:
        lines.append(f"hardware compatibility: {plan.hardware_compatibility}")
    return lines + [f"note: {n}" for n in plan.notes]


def build_summary(result: EngineBuildResult) -> list[str]:
    """Lines the CLI prints after a successful build."""
    size_mb = result.engine_path.stat().st_size / 1e6
    rec = result.manifest.engine
    assert rec is not None
    lines = [
        *describe_plan(result.plan),
        f"built for {rec.gpu_name} (sm_{rec.compute_capability.replace('.', '')}), TensorRT "
        f"{rec.tensorrt_version}, in {result.seconds:.1f} s",
        f"wrote {result.engine_path} ({size_mb:.1f} MB), manifest {result.manifest_path.name}",
    ]
    if result.trt_warnings:
        n = len(result.trt_warnings)
        lines.append(f"TensorRT warned {n} time(s); first: {result.trt_warnings[0]}")
    return lines


def build_with_progress(
    onnx_path: str | Path, options: EngineBuildOptions | None = None, progress: bool = True
) -> EngineBuildResult:
    """:func:`~restorekit.tensorrt.builder.engine_from_onnx` with tqdm bars for its phases.

    Raises:
        Same as :func:`~restorekit.tensorrt.builder.engine_from_onnx`.
    """
    bars = BuildProgress(enabled=progress)
    try:
        return builder.engine_from_onnx(onnx_path, options, progress=bars)
    finally:
        bars.close()


def engine_or_command(
    onnx_path: str | Path, options: EngineBuildOptions | None = None, progress: bool = True
) -> list[str]:
    """For ``restore-export --engine``: build the engine if TensorRT is here, else say how to.

    Returns:
        Lines to print: the build summary, or the ``restore-build`` command to run on the target.

    Raises:
        Same as :func:`~restorekit.tensorrt.builder.engine_from_onnx`, except a missing TensorRT.
    """
    if not builder.tensorrt_available():
        name = Path(onnx_path).name
        return [
            "TensorRT is not installed here, so no engine was built (the ONNX above is verified).",
            f"Copy {name} and {name}.json to the target device and run there:",
            "  " + build_command(name, options),
        ]
    return build_summary(build_with_progress(onnx_path, options, progress))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-build",
        description="Build a TensorRT engine from an ONNX written by restore-export (its "
        ".onnx.json manifest beside it). Run it on the device that will run the engine.",
    )
    p.add_argument("onnx", type=Path, help="the .onnx file (with its .onnx.json)")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: the ONNX's)")
    p.add_argument("--workspace", type=positive_float("GiB"), metavar="GiB",
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


def options_from_args(args: argparse.Namespace) -> EngineBuildOptions:
    """The :class:`EngineBuildOptions` the parsed arguments ask for."""
    return EngineBuildOptions(
        output_dir=args.output, workspace_gib=args.workspace, batch=args.batch,
        min_shape=args.min_shape, opt_shape=args.opt_shape, max_shape=args.max_shape,
        timing_cache=args.timing_cache, hardware_compatible=args.hardware_compatible,
        version_compatible=args.version_compatible,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        result = build_with_progress(args.onnx, options_from_args(args), not args.no_progress)
        print("\n".join(build_summary(result)))
        return 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

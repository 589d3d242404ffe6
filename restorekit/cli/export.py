"""``restore-export MODEL``: trace a registry model to a verified ONNX with manifest and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from restorekit.cli.entry import positive_int, run, tile_shape
from restorekit.manifest import INT8_LAYOUTS

if TYPE_CHECKING:
    from restorekit.export.pipeline import ExportResult


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-export",
        description="Export a restoration model to a simplified, verified ONNX graph with a "
        "manifest and an accuracy report.",
    )
    p.add_argument("model", nargs="?", help="registry name, e.g. mprnet or mprnet.deblur")
    p.add_argument("--list", action="store_true", help="list every known model and exit")
    p.add_argument("--weights", type=Path, help="checkpoint (.pth/.ckpt/.safetensors); "
                   "without it the weights are random (said plainly)")  # fmt: skip
    p.add_argument("--tile", type=tile_shape, help="tile HxW or N (default: the model's)")
    p.add_argument("--batch", type=positive_int, default=1, help="largest batch (default 1)")
    p.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic height/width (only where verified at a second shape)")  # fmt: skip
    p.add_argument("--images", type=Path, nargs="+", help="verification images (default: samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument(
        "--fp16",
        action="store_true",
        help="also write a mixed-precision FP16 graph (fragile nodes kept FP32)",
    )
    prec.add_argument(
        "--int8",
        action="store_true",
        help="also write a calibrated INT8 Q/DQ graph (+ TensorRT calib cache)",
    )
    p.add_argument("--calib", type=Path, help="folder of calibration photos (default: samples)")
    p.add_argument(
        "--calib-method",
        choices=("entropy", "minmax", "percentile"),
        help="INT8 calibration method (default entropy; minmax for --int8-layout ort-cpu, whose "
        "uint8 skip paths lose more to entropy's clipping)",
    )
    p.add_argument(
        "--calib-count", type=positive_int, default=32, help="calibration tiles (default 32)"
    )
    p.add_argument(
        "--min-psnr",
        type=float,
        help="PSNR target in dB vs PyTorch FP32 (default: per-model table)",
    )
    p.add_argument(
        "--int8-layout",
        choices=INT8_LAYOUTS,
        default="tensorrt",
        help="INT8 graph for TensorRT (default) or for ONNX Runtime on a CPU (uint8, integer "
        "between convolutions; file *.int8cpu.*, no engine)",
    )
    p.add_argument("--engine", action="store_true",
                   help="also build a TensorRT engine here (without TensorRT: print the "
                   "restore-build command to run on the target)")  # fmt: skip
    p.add_argument("--triton", type=Path, metavar="DIR",
                   help="also write the exported ONNX as a model of the Triton model repository "
                   "DIR (restore-triton has the options)")  # fmt: skip
    return p


def list_models() -> list[str]:
    """One line per model: name, task, size rule, weights."""
    from restorekit.models.registry import REGISTRY

    lines = []
    for ref in REGISTRY:
        rule = ref.size_rule
        size = f"multiple of {rule.multiple_of}" if rule.multiple_of > 1 else "any size"
        if rule.max_tile_area:
            size += f", tile <= {rule.max_tile_area} px"
        tile = "x".join(map(str, ref.variant.default_tile))
        default = " (default)" if ref.variant.name == ref.spec.default_variant else ""
        lines.append(
            f"{ref.name}{default}\t{ref.variant.task}\t{size}, tile {tile}\t"
            f"{ref.variant.weights or 'no published weights'}"
        )
    return lines


def _openvino_row(report_path: Path) -> list[str]:
    """The FP32 graph's row in OpenVINO, from the report (none without OpenVINO)."""
    import json

    from restorekit.export.openvino_check import summary_row

    row = summary_row(json.loads(report_path.read_text())["fp32"].get("openvino"))
    return [row] if row else []


def export_summary(result: ExportResult) -> list[str]:
    """Lines printed after a successful export: each check, then one row per artifact, then what
    ONNX-TensorRT's published rules say of the graphs written for TensorRT."""
    lines = [result.fp32.report.table()]
    if result.lowered:
        lines.append(result.lowered.report.table())
    lines.append(f"nodes: {result.nodes_before} traced -> {result.fp32.nodes} after simplification")
    if result.stage_seconds:
        from restorekit.export.stage_times import stage_line

        lines.append(stage_line(result.stage_seconds))
    lines.append("")
    artifacts = [a for a in (result.fp32, result.lowered) if a is not None]
    trt = f"TRT {result.tensorrt_version}"
    lines.append(
        f"{'artifact':<44} {'MB':>6} {'nodes':>6} {'PSNR dB':>8} {'SSIM':>7} {'max abs':>9} "
        f"{'kept hi':>7} {trt:>9}"
    )
    for art in artifacts:
        w = art.report.worst
        psnr = "inf" if w.psnr == float("inf") else f"{w.psnr:.2f}"
        kept = len(art.manifest.precision.kept_fp32)
        rules = art.tensorrt_rules
        parser = "-" if rules is None else ("ok" if not rules else f"{len(rules)} issues")
        lines.append(
            f"{art.onnx_path.name:<44} {art.onnx_path.stat().st_size / 1e6:>6.1f} {art.nodes:>6} "
            f"{psnr:>8} {w.ssim:>7.5f} {w.max_abs:>9.2e} {kept:>7} {parser:>9}"
        )
    lines += _openvino_row(result.report_path)
    lines.append(
        f"(figures vs PyTorch FP32; {trt}: ONNX-TensorRT's published rules, checked without "
        f"TensorRT; report {result.report_path})"
    )
    for art in artifacts:
        for violation in (art.tensorrt_rules or ())[:5]:
            lines.append(f"warning: {art.onnx_path.name}: {violation}")
        if art.tensorrt_rules and len(art.tensorrt_rules) > 5:
            lines.append(f"  ... {len(art.tensorrt_rules) - 5} more in the report")
    if result.lowered:
        lines += [f"note: {n}" for n in result.lowered.report.notes if n.startswith("calibration:")]
    if result.cpu_speed and result.lowered:
        lines += result.cpu_speed.lines(result.fp32.onnx_path.name, result.lowered.onnx_path.name)
    if result.built.random:
        lines.append(
            f"NOTE: {result.manifest.model} was exported with RANDOM weights "
            f"({result.manifest.weights}); pass --weights PATH with the official checkpoint for a "
            "useful model."
        )
    return lines


def _write_triton(onnx_path: Path, repository: Path) -> None:
    """restore-export --triton: the exported ONNX as a model of a Triton repository."""
    from restorekit.cli.triton import describe
    from restorekit.errors import InputError
    from restorekit.triton.repository import write_triton_model

    try:
        model = write_triton_model(onnx_path, repository)
    except InputError as exc:
        raise InputError(
            f"{onnx_path.name} is exported, but no Triton model was written: {exc}. Write it with "
            f"`restore-triton {onnx_path} -o {repository} [--force | --name NAME]`"
        ) from exc
    print("\n".join(describe(model)))


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        if args.list:
            print("\n".join(list_models()))
            return 0
        if not args.model:
            build_parser().error("give a MODEL (see --list)")
        from tqdm import tqdm

        from restorekit.errors import ExportError
        from restorekit.export.pipeline import ExportOptions, export_model, stages_for
        from restorekit.models.registry import resolve

        ref = resolve(args.model)
        ref.size_rule.check_tile(args.tile or ref.variant.default_tile, ref.name)
        options = ExportOptions(
            model=ref, weights=args.weights, tile=args.tile, batch=args.batch,
            output_dir=args.output, opset=args.opset, simplify=not args.no_simplify,
            dynamic=args.dynamic, images=tuple(args.images) if args.images else None,
            seed=args.seed, precision="fp16" if args.fp16 else "int8" if args.int8 else "fp32",
            calib=args.calib, calib_count=args.calib_count, calib_method=args.calib_method,
            min_psnr=args.min_psnr, int8_layout=args.int8_layout,
        )  # fmt: skip
        cpu_int8 = args.int8_layout == "ort-cpu"
        if cpu_int8 and args.engine:
            raise ExportError(
                "--engine builds TensorRT engines, and TensorRT does not build the ort-cpu INT8 "
                "layout; drop --engine or --int8-layout ort-cpu"
            )
        stages = stages_for(options.precision)
        if args.weights is None and not ref.variant.bundled_weights:
            print(f"note: no --weights given: exporting {ref.name} with RANDOM weights "
                  f"(seed {args.seed})", file=sys.stderr)  # fmt: skip
        with tqdm(total=len(stages), desc="export", unit="stage", file=sys.stderr) as bar:

            def on_stage(name: str) -> None:
                bar.set_postfix_str(name)  # sub-steps ("fp16: trying Softmax") only relabel
                if name in stages and name != stages[0]:
                    bar.update(1)

            result = export_model(options, on_stage)
            bar.update(bar.total - bar.n)
        print("\n".join(export_summary(result)))
        if args.triton is not None:
            _write_triton(result.onnx_path, args.triton)
        from restorekit.cli.build import engine_or_command
        from restorekit.tensorrt.plan import build_command

        if args.engine:
            print("\n".join(engine_or_command(result.onnx_path)))
        elif cpu_int8:
            slow = result.cpu_speed is not None and not result.cpu_speed.worth_it
            chosen = result.fp32 if slow else result.main  # the faster graph on this CPU
            print(f"next: restore-run {chosen.onnx_path.name} IMAGES... -o OUT "
                  "(ONNX Runtime on a CPU)")  # fmt: skip
        else:
            print(f"next: on the target GPU, {build_command(result.onnx_path.name)}")
        return 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

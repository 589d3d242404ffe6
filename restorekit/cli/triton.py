"""``restore-triton ARTIFACT -o DIR [--name NAME] [--instances N] [--max-batch N]``: write an
artifact as a model of an NVIDIA Triton Inference Server model repository (``config.pbtxt`` +
``1/model.onnx`` or ``1/model.plan``), checked against Triton's ModelConfig schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorekit.cli.entry import positive_int, run


def add_triton_options(p: argparse.ArgumentParser, *, with_output: bool) -> None:
    """The options restore-triton and restore-export --triton share."""
    if with_output:
        p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                       help="the model repository folder (created if needed)")  # fmt: skip
    p.add_argument("--name", help="model name in Triton (default: from the artifact's file name)")
    p.add_argument("--instances", type=positive_int, help="model instances (default 1)")
    p.add_argument("--cpu", action="store_true",
                   help="CPU instances (KIND_CPU) instead of GPU ones; ONNX only")  # fmt: skip
    p.add_argument("--max-batch", type=positive_int,
                   help="max_batch_size for a free batch (default: an engine's profile maximum; "
                   "8 for an ONNX)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing model folder")


def triton_options(args: argparse.Namespace):
    from restorekit.triton.config import TritonOptions

    return TritonOptions(name=args.name, instances=args.instances,
                         kind="cpu" if args.cpu else None, max_batch=args.max_batch)  # fmt: skip


def describe(model) -> list[str]:
    """Lines printed after writing a model."""
    check = (
        "checked against Triton's ModelConfig schema"
        if model.validated
        else "NOT checked: install restorekit[triton] to check it against Triton's schema"
    )
    return [
        f"wrote {model.path}/config.pbtxt and {model.model_file.relative_to(model.path)} ({check})",
        f"next: tritonserver --model-repository={model.path.parent.resolve()} (not run here)",
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-triton",
        description="Write an exported .onnx or built .engine as a model of an NVIDIA Triton "
        "model repository: <name>/config.pbtxt and <name>/1/model.onnx|model.plan, with the "
        "manifest beside the model.",
    )
    p.add_argument("artifact", help="an .onnx or .engine file with its manifest (<file>.json)")
    add_triton_options(p, with_output=True)
    return p


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        from restorekit.triton.repository import write_triton_model

        model = write_triton_model(
            args.artifact, args.output, triton_options(args), force=args.force
        )
        print("\n".join(describe(model)))
        return 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

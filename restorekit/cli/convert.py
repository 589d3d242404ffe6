"""``restore-convert ARCH CHECKPOINT -o OUT``: official non-PyTorch checkpoints to safetensors.

Only NLRN needs it (its authors released TensorFlow checkpoints); the other architectures publish
PyTorch checkpoints that ``restore-export --weights`` reads directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorekit.cli.entry import run
from restorekit.errors import WeightsError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-convert",
        description="Convert an official TensorFlow NLRN checkpoint (prefix, .index file, "
        "checkpoint folder, SavedModel folder or .zip) to .safetensors for --weights. "
        "TensorFlow is not needed.",
    )
    p.add_argument("model", help="nlrn, or a variant to check the weights against (nlrn.dn_s25)")
    p.add_argument("checkpoint", type=Path, help="the TensorFlow checkpoint or SavedModel")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors to write")
    return p


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        from restorekit.models.registry import resolve

        arch = resolve(args.model).spec.name
        if arch != "nlrn":
            raise WeightsError(
                f"restore-convert converts NLRN's TensorFlow checkpoints only; {arch} weights are "
                f"PyTorch checkpoints: pass them to `restore-export {args.model} --weights FILE`"
            )
        from restorekit.models.nlrn_convert import convert_nlrn

        result = convert_nlrn(args.checkpoint, args.output, args.model)
        cfg = result.weights.config
        print(
            f"wrote {result.output}: NLRN, {cfg['num_steps']} recurrent states, "
            f"{cfg['num_features']} features, {len(result.weights.state_dict)} tensors "
            f"({len(result.weights.skipped)} non-weight tensors skipped)"
        )
        if result.checked_against:
            print(f"weights fit {result.checked_against}")
        elif result.fits:
            print(
                f"fits {', '.join(result.fits)}; export with e.g. `restore-export {result.fits[0]} "
                f"--weights {result.output}` (dn_s*/sr: original release with correlation "
                "propagation; dn15_s*: later release without)"
            )
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        return 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

"""``restore-check ARTIFACT [IMAGE...]``: compare the deployed artifact, run tiled like
``restore-run``, with the PyTorch model run on whole images; prints a table, writes JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorekit.cli.entry import positive_int, run, tile_shape


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-check",
        description="Check an exported artifact (tiled, any backend) against the PyTorch model "
        "on whole real images: max abs error, PSNR, SSIM, NaN/Inf, overall and near tile seams.",
    )
    p.add_argument("artifact", help="an .onnx or .engine file with its manifest")
    p.add_argument(
        "images",
        nargs="*",
        type=Path,
        help="images to check (default: the sample photos shipped with restorekit)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="the checkpoint the artifact was exported from (not needed for random weights, "
        "which the manifest's seed rebuilds, nor for the demo weights shipped with restorekit)",
    )
    p.add_argument("--backend", choices=("ort", "trt", "openvino"),
                   help="default: from the artifact's suffix")  # fmt: skip
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"),
                   help="OpenVINO precision (default: the artifact's own); an FP32 ONNX's int8 is "
                   "the OpenVINO INT8 model made beside it by restore-run")  # fmt: skip
    p.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu")
    p.add_argument("--tile", type=tile_shape, help="tile HxW (dynamic-shape ONNX only)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: manifest)")
    p.add_argument(
        "--batch", type=positive_int, help="tiles per inference call (default: manifest)"
    )
    p.add_argument("--threads", type=positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument(
        "--seam-band",
        type=int,
        default=4,
        help="pixels on each side of a tile seam counted as near it (default: 4)",
    )
    p.add_argument(
        "--json",
        type=Path,
        dest="json_path",
        help="where to write the JSON report (default: <artifact>.check.json)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        from restorekit.errors import require

        require("torch", "export", "restore-check (the PyTorch reference)")
        from restorekit.export.deployed_check import DeployedCheckOptions, check_deployed
        from restorekit.files import write_text_atomic
        from restorekit.runtime.ort_backend import OrtOptions
        from restorekit.runtime.restore import TileOptions

        options = DeployedCheckOptions(
            artifact=Path(args.artifact),
            images=tuple(args.images) or None,
            weights=args.weights,
            backend=args.backend,
            ort=OrtOptions(provider=args.provider, threads=args.threads),
            tiles=TileOptions(tile=args.tile, overlap=args.overlap, batch=args.batch),
            seam_band=args.seam_band,
            precision=args.precision,
        )
        from tqdm import tqdm

        count = len(options.images) if options.images else None
        with tqdm(total=count, desc="images", unit="image", leave=False) as bar:
            report = check_deployed(options, on_image=lambda _name: bar.update(1))
        artifact = Path(args.artifact)
        json_path = args.json_path or artifact.with_name(artifact.name + ".check.json")
        write_text_atomic(json_path, report.to_json() + "\n")
        tile = f"{report.tile[0]}x{report.tile[1]}"
        print(
            f"{report.model} ({report.weights}) on {report.backend}, tile {tile}, overlap "
            f"{report.overlap}, seam band +-{report.seam_band} px; reference: PyTorch, whole image"
        )
        print(report.table())
        print(f"wrote {json_path}")
        return 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

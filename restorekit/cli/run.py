"""``restore-run ARTIFACT INPUT... -o OUT``: restore images, folders, videos or a camera stream
with an exported ``.onnx`` (ONNX Runtime) or a built ``.engine`` (TensorRT)."""

from __future__ import annotations

import argparse
import sys

from restorekit.cli.entry import positive_int, run, tile_shape


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-run",
        description="Restore images, folders, globs, videos or a camera with an exported model.",
    )
    p.add_argument("artifact", help="an .onnx or .engine file with its manifest (<file>.json)")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders, globs, video files, camera:N or a GStreamer pipeline",
    )
    p.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    p.add_argument("--backend", choices=("ort", "trt"), help="default: from the artifact's suffix")
    p.add_argument(
        "--provider",
        choices=("cpu", "cuda", "tensorrt"),
        default="cpu",
        help="ONNX Runtime execution provider (default: cpu)",
    )
    p.add_argument("--tile", type=tile_shape, help="tile HxW (dynamic-shape ONNX only)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: manifest)")
    p.add_argument(
        "--batch", type=positive_int, help="tiles per inference call (default: manifest)"
    )
    p.add_argument("--threads", type=positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument("--frames", type=positive_int, help="stop videos/cameras after this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        from restorekit.runtime.jobs import run_job
        from restorekit.runtime.session import open_artifact

        session = open_artifact(
            args.artifact, backend=args.backend, provider=args.provider, threads=args.threads,
            tile=args.tile, overlap=args.overlap, batch=args.batch,
        )  # fmt: skip
        with session:
            summary = run_job(
                session.restorer, args.inputs, args.output, progress=not args.quiet,
                max_frames=args.frames,
            )  # fmt: skip
        for source, message in summary.warnings:
            print(f"warning: {source}: {message}", file=sys.stderr)
        for source, message in summary.failures:
            print(f"failed: {source}: {message}", file=sys.stderr)
        print(summary.line())
        return 1 if summary.failures else 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

"""``restore-run ARTIFACT INPUT... [-o OUT] [--sink PIPELINE] [--rtsp-serve PORT] [--show]``:
restore images, folders, videos, cameras and network streams with an exported ``.onnx`` (ONNX
Runtime) or a built ``.engine`` (TensorRT), into files, GStreamer pipelines, an RTSP server or a
window. With ``--cluster [ADDRESS]`` files are restored on a Ray cluster instead
(``restorekit.cluster.batch``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from restorekit.cli.entry import positive_int, run, tcp_port, tile_shape
from restorekit.cli.run_cluster import add_cluster_arguments, refuse_cluster_options, run_on_cluster


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-run",
        description="Restore images, folders, globs, videos, cameras or network streams with an "
        "exported model; write files, stream through GStreamer or RTSP, or show a window.",
    )
    p.add_argument("artifact", help="an .onnx or .engine file with its manifest (<file>.json); "
                   "with --server, the first input")  # fmt: skip
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files, folders, globs, video files; live: camera:N, /dev/videoN, an RTSP/HTTP "
        "URL or a GStreamer pipeline ending in appsink",
    )
    p.add_argument("-o", "--output", help="output file (one input) or folder")
    p.add_argument("--sink", action="append", default=[], metavar="PIPELINE",
                   help="also send streams to this GStreamer pipeline, starting with appsrc "
                   "(repeatable), e.g. 'appsrc ! videoconvert ! x264enc tune=zerolatency ! "
                   "rtph264pay ! udpsink host=127.0.0.1 port=5600'")  # fmt: skip
    p.add_argument("--rtsp-serve", type=tcp_port, metavar="PORT",
                   help="serve streams over RTSP at rtsp://127.0.0.1:PORT/restored")  # fmt: skip
    p.add_argument("--rtsp-address", default="127.0.0.1", metavar="ADDR",
                   help="address the RTSP server listens on (default 127.0.0.1; 0.0.0.0 for "
                   "every interface)")  # fmt: skip
    p.add_argument("--show", action="store_true", help="show streams in a window")
    p.add_argument("--every-frame", action="store_true",
                   help="read live sources frame by frame like files (by default a live source "
                   "gives its newest frame and counts the dropped ones)")  # fmt: skip
    p.add_argument("--stall-timeout", type=_seconds, metavar="SECONDS",
                   help="end a live source that sends no frame for this long (default 10; "
                   "0 waits for ever)")  # fmt: skip
    p.add_argument("--stats", type=Path, metavar="FILE",
                   help="write the figures (fps, latency, drops, per-stage time) as JSON")  # fmt: skip
    p.add_argument("--fallback", metavar="FP32_ARTIFACT",
                   help="FP32 artifact that recomputes tiles whose output is NaN/Inf (default: "
                   "the FP32 ONNX beside an FP16/INT8 artifact, if there)")  # fmt: skip
    p.add_argument("--no-fallback", action="store_true", help="no FP32 fallback")
    p.add_argument("--backend", choices=("ort", "trt", "openvino", "auto"),
                   help="default: from the artifact's suffix; auto: the fastest CPU backend and "
                   "precision verified for this artifact here (timed once, remembered beside it)")  # fmt: skip
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"),
                   help="OpenVINO precision (default: the artifact's own); bf16 needs AMX-BF16 or "
                   "AVX512-BF16; int8 of an FP32 ONNX is made once beside it with NNCF")  # fmt: skip
    p.add_argument("--calib", type=Path, metavar="DIR",
                   help="photos to calibrate OpenVINO INT8 on when it is made (default: the "
                   "sample photos)")  # fmt: skip
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
    p.add_argument("--threads", type=positive_int,
                   help="ONNX Runtime intra-op threads (with --cluster: per worker, default 1)")  # fmt: skip
    p.add_argument("--frames", type=positive_int, help="stop videos/cameras after this many frames")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--server", metavar="URL",
                   help="send the images to a restore-serve server at URL (e.g. "
                   "http://127.0.0.1:8000) instead of restoring here; no ARTIFACT then")  # fmt: skip
    p.add_argument("--concurrency", type=positive_int,
                   help="with --server: requests in flight at once (default 4)")  # fmt: skip
    add_cluster_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        from restorekit.errors import InputError
        from restorekit.files import write_text_atomic
        from restorekit.runtime.jobs import StreamOptions, run_job
        from restorekit.runtime.session import open_artifact

        refuse_cluster_options(args)
        if args.server is not None:
            return _run_on_server(args)
        if not args.inputs:
            raise InputError("give the inputs to restore after the artifact")
        if args.fallback and args.no_fallback:
            raise InputError("--fallback and --no-fallback contradict each other; give one")
        if args.cluster is not None:
            return run_on_cluster(args)
        if args.show:
            from restorekit.runtime.sinks import require_display

            require_display()  # before anything is opened
        if args.output is None and not (args.sink or args.rtsp_serve or args.show):
            raise InputError(
                "nowhere to write: give -o FILE/FOLDER, or for streams --sink PIPELINE, "
                "--rtsp-serve PORT or --show"
            )
        fallback = False if args.no_fallback else args.fallback
        if args.backend == "openvino" and args.precision == "int8":
            make_openvino_int8(args.artifact, args.calib, args.threads, args.quiet)
        session = open_artifact(
            args.artifact, backend=args.backend, provider=args.provider, threads=args.threads,
            tile=args.tile, overlap=args.overlap, batch=args.batch, fallback=fallback,
            precision=args.precision,
        )  # fmt: skip
        if session.choice is not None and not args.quiet:
            remembered = " (remembered)" if session.choice.remembered else ""
            print(f"auto{remembered}: {session.choice.reason}", file=sys.stderr)
        stream = StreamOptions(tuple(args.sink), args.rtsp_serve, args.show, args.every_frame,
                               args.rtsp_address, args.stall_timeout)  # fmt: skip
        if args.rtsp_serve and not args.quiet:
            print(f"serving rtsp://{args.rtsp_address}:{args.rtsp_serve}/restored",
                  file=sys.stderr)  # fmt: skip
        with session:
            if session.fallback_path is not None and not args.quiet:
                print(f"fallback: {session.fallback_path.name} recomputes NaN/Inf tiles",
                      file=sys.stderr)  # fmt: skip
            summary = run_job(
                session.restorer, args.inputs, args.output, progress=not args.quiet,
                max_frames=args.frames, stream=stream,
            )  # fmt: skip
        for source, message in summary.warnings:
            print(f"warning: {source}: {message}", file=sys.stderr)
        for source, message in summary.failures:
            print(f"failed: {source}: {message}", file=sys.stderr)
        for stats in summary.streams:
            print(stream_line(stats))
        if args.stats is not None:
            doc = {"summary": summary.line(), "streams": [s.to_dict() for s in summary.streams],
                   "failures": [{"input": i, "error": e} for i, e in summary.failures]}  # fmt: skip
            write_text_atomic(args.stats, json.dumps(doc, indent=2) + "\n")
        print(summary.line())
        return 1 if summary.failures else 0

    return run(build_parser(), argv, command)


def _run_on_server(args: argparse.Namespace) -> int:
    """``restore-run --server URL INPUT... -o OUT``: the inputs go to a restore-serve server."""
    from restorekit.cluster.client import ClientOptions, restore_via_server
    from restorekit.errors import InputError

    if args.output is None:
        raise InputError(
            "--server restores images into files: give -o FILE (one image) or -o FOLDER"
        )
    summary = restore_via_server(
        args.server, [args.artifact, *args.inputs], args.output,
        options=ClientOptions(concurrency=args.concurrency), progress=not args.quiet,
    )  # fmt: skip
    for source, message in summary.failures:
        print(f"failed: {source}: {message}", file=sys.stderr)
    print(summary.line())
    return 1 if summary.failures else 0


def make_openvino_int8(artifact: str, calib: Path | None, threads: int | None, quiet: bool) -> None:
    """Make the OpenVINO INT8 model of an FP32 artifact once, if it is not beside it yet."""
    from restorekit.manifest import read_manifest
    from restorekit.runtime.openvino_backend import ov_int8_path

    if read_manifest(artifact).precision.precision != "fp32" or ov_int8_path(artifact).is_file():
        return
    from restorekit.calibration.openvino_int8 import ov_int8_from_onnx

    def say(line: str) -> None:
        if not quiet:
            print(f"openvino int8: {line}", file=sys.stderr)

    say(f"making {ov_int8_path(artifact).name} once (NNCF, PSNR gate against FP32)")
    ov_int8_from_onnx(artifact, calib, threads=threads, progress=say)


def stream_line(stats) -> str:
    """One line per stream for the end of a run."""
    p50, p95 = stats.latency_ms(0.5), stats.latency_ms(0.95)
    parts = [
        f"{stats.source}: {stats.frames_out} frames written of {stats.frames_in} read",
        f"{stats.dropped} dropped" if stats.live else "",
        f"{stats.fps_out:.1f} fps",
        f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms" if stats.latency else "",
        f"ended: {stats.ended}",
    ]
    return "; ".join(p for p in parts if p)


if __name__ == "__main__":
    sys.exit(main())

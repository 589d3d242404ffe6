"""``restore-serve ARTIFACT [--replicas N] [--port P] [--host ADDR]``: restore images over HTTP
(``POST /restore``, ``GET /health``) on Ray Serve, tiles of concurrent requests batched together.
Ctrl-C stops the server."""

from __future__ import annotations

import argparse
import sys

from restorekit.cli.entry import positive_float, positive_int, run, tcp_port


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restore-serve",
        description="Serve an exported model over HTTP on Ray Serve: POST an image file to "
        "/restore, get the restored image back; GET /health. Tiles of concurrent requests share "
        "engine calls. Ctrl-C stops it.",
    )
    p.add_argument("artifact", help="an .onnx or .engine file with its manifest (<file>.json)")
    p.add_argument("--replicas", type=positive_int, help="replicas to run (default 1)")
    p.add_argument("--max-replicas", type=positive_int, metavar="N",
                   help="autoscale between --replicas and N replicas by load")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")  # fmt: skip
    p.add_argument("--port", type=tcp_port, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--max-request-mb", type=positive_float("MiB"), metavar="M",
                   help="largest request body in MiB (default 50); larger ones get 413")  # fmt: skip
    p.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="largest image in pixels (default 64000000); larger ones get 413")  # fmt: skip
    p.add_argument("--threads", type=positive_int,
                   help="ONNX Runtime threads per replica, and the CPUs each reserves (default: "
                   "all cores, reserving 1)")  # fmt: skip
    p.add_argument("--batch", type=positive_int,
                   help="tiles per engine call (default: the artifact's batch)")  # fmt: skip
    p.add_argument("--batch-wait-ms", type=float, metavar="MS",
                   help="how long a partial batch waits for tiles of other requests (default 5)")  # fmt: skip
    p.add_argument("--no-fallback", action="store_true",
                   help="no FP32 fallback for NaN/Inf tiles of an FP16/INT8 artifact")  # fmt: skip
    p.add_argument("--address", metavar="ADDR",
                   help="join this running Ray cluster: HOST:PORT of its head, auto, or "
                   "ray://HOST:10001 (default: start one on this machine)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    def command(args: argparse.Namespace) -> int:
        from restorekit.cluster.serve import ServeOptions, serve_artifact

        options = ServeOptions(
            replicas=args.replicas, max_replicas=args.max_replicas, host=args.host,
            port=args.port, threads=args.threads, max_request_mb=args.max_request_mb,
            max_pixels=args.max_pixels, batch=args.batch, batch_wait_ms=args.batch_wait_ms,
            fallback=not args.no_fallback,
        )  # fmt: skip

        def ready(url: str) -> None:
            print(f"serving {args.artifact} at {url}/restore (GET {url}/health); Ctrl-C stops",
                  flush=True)  # fmt: skip

        serve_artifact(args.artifact, options, address=args.address, ready=ready)
        print("stopped", flush=True)
        return 0

    return run(build_parser(), argv, command)


if __name__ == "__main__":
    sys.exit(main())

"""``restore-run ARTIFACT INPUT... -o FOLDER --cluster [ADDRESS]``: the cluster half of
``restore-run``, kept beside it so the command itself stays a thin parser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from restorekit.cli.entry import positive_float, positive_int


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """``--cluster [ADDRESS]``, ``--workers N``, ``--gpus-per-worker G``."""
    p.add_argument("--cluster", nargs="?", const="", metavar="ADDRESS",
                   help="restore files on a Ray cluster: at ADDRESS (host:port, ray://host:port "
                   "or auto), or without one on a Ray instance started here; -o must be a "
                   "folder every node sees; re-runs skip finished outputs")  # fmt: skip
    p.add_argument("--workers", type=positive_int,
                   help="with --cluster: workers (one backend each; default: the cluster's CPUs "
                   "/ --threads)")  # fmt: skip
    p.add_argument(
        "--gpus-per-worker",
        type=positive_float("GPUs"),
        metavar="G",
        help="with --cluster: GPUs Ray reserves per worker (default 0: CPU workers)",
    )


def refuse_cluster_options(args: argparse.Namespace) -> None:
    """Cluster-only options without ``--cluster`` are a mistake worth saying.

    Raises:
        InputError: ``--workers`` or ``--gpus-per-worker`` without ``--cluster``, ``--cluster``
            with ``--server``, or ``--cluster`` followed by a file (argparse took it as the
            address).
    """
    from restorekit.errors import InputError

    if args.cluster is None and (args.workers or args.gpus_per_worker):
        raise InputError("--workers and --gpus-per-worker apply to --cluster runs; add --cluster")
    if args.cluster is not None and getattr(args, "server", None) is not None:
        raise InputError("--cluster and --server are two ways to run remotely; give one")
    if args.cluster and Path(args.cluster).exists():
        raise InputError(
            f"--cluster took {args.cluster!r} as the cluster's address: put --cluster after the "
            "inputs, or give an address (--cluster 127.0.0.1:6379, --cluster auto)"
        )


def run_on_cluster(args: argparse.Namespace) -> int:
    """Run the job with :func:`restorekit.cluster.batch.restore_collection`; exit 1 when an item
    failed, as ``restore-run`` does.

    Raises:
        InputError: stream sinks or a window asked for, or no output folder.
        ClusterError: the cluster cannot be reached or started.
    """
    from restorekit.cluster.batch import print_summary, restore_collection
    from restorekit.errors import InputError
    from restorekit.files import write_text_atomic

    if args.sink or args.rtsp_serve or args.show or args.frames:
        raise InputError(
            "--cluster restores files into a folder; --sink, --rtsp-serve, --show and --frames "
            "are for streams on one machine: run those without --cluster"
        )
    if args.output is None:
        raise InputError(
            "--cluster writes into a folder: give -o FOLDER (the same path on every node)"
        )
    if args.backend is not None or args.provider != "cpu":
        raise InputError(
            "with --cluster each worker chooses its backend (an engine that fits its GPU, else "
            "the ONNX on ONNX Runtime); leave out --backend and --provider"
        )
    fallback = False if args.no_fallback else args.fallback
    summary = restore_collection(
        args.artifact, args.inputs, args.output, address=args.cluster or None,
        workers=args.workers, threads_per_worker=args.threads,
        gpus_per_worker=args.gpus_per_worker, tile=args.tile, overlap=args.overlap,
        batch=args.batch, fallback=fallback, progress=not args.quiet,
    )  # fmt: skip
    print_summary(summary, sys.stderr)
    if args.stats is not None:
        write_text_atomic(args.stats, json.dumps(summary.to_dict(), indent=2) + "\n")
    print(summary.line())
    return 1 if summary.failures else 0

"""Restore a collection of images and videos on a Ray cluster: ``restorekit.restore_collection``
and ``restore-run ... --cluster [ADDRESS]``.

How it works:

- The driver (this process) expands the inputs the way ``restore-run`` does, reads the outputs
  ledger of the output folder and leaves out every item whose output is already complete
  (:mod:`restorekit.cluster.ledger`).
- The remaining items become a Ray Dataset, one row per file; ``map_batches`` sends them to an
  actor pool. Each actor (a worker) chooses the artifact that fits its node
  (:func:`restorekit.cluster.placement.choose_artifact`), opens it once, and restores each item
  with :func:`restorekit.runtime.jobs.run_job`, the code ``restore-run`` runs: same decoding,
  tiling, blending and atomic writers, so outputs are byte-identical to a plain run with the same
  artifact and options. Videos are one task per file.
- Workers return a record per item (output size and sha256, or the error); the driver appends
  finished items to the ledger as they arrive and shows items/s and MP/s.
- A bad item is a record with its error, never an exception that stops the job. A worker that
  dies is restarted by Ray (actor restarts and task retries are Ray Data's defaults for actor
  pools), and its items run again; the atomic writers mean no output is ever half-written.

Outputs go to one folder that every node sees at the same path (a shared filesystem).
Torch-free; Ray is imported only when a job runs.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from restorekit.cluster.connect import ray_connection
from restorekit.cluster.ledger import (
    InputIdentity,
    Ledger,
    LedgerEntry,
    job_fingerprint,
    output_record,
)
from restorekit.cluster.placement import candidate_artifacts, choose_artifact
from restorekit.errors import ClusterError, InputError, RestoreKitError
from restorekit.runtime.media import Source, expand_sources, output_path

# Items per Ray task (block). One item per task costs a task's scheduling, an output block and
# a transfer per item, which on two loaded cores was a third of a 1-second item; a few items per
# task amortise that. Small enough that the last tasks finish close together, a killed worker
# redoes little, and the driver hears of results (ledger, progress) every few items.
MAX_ITEMS_PER_TASK = 8
TASKS_PER_WORKER = 4
# The pool waits this long for every worker to start before handing out work: otherwise the
# first worker up (often the one beside the driver) takes the whole queue of a short job while
# the others are still loading.
WORKER_START_TIMEOUT_S = 600
_RECORD_FIELDS = ("input", "output", "size", "sha256", "megapixels", "frames", "error",
                  "warnings", "worker", "artifact", "seconds", "finished", "cpu_seconds",
                  "open_cpu_seconds")  # fmt: skip


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker needs to open its backend: the candidate artifacts (absolute paths on the
    shared filesystem) and the runtime options, ``None`` meaning the manifest's default."""

    artifacts: tuple[str, ...]
    output: str
    threads: int | None = 1
    tile: tuple[int, int] | None = None
    overlap: int | None = None
    batch: int | None = None
    fallback: str | bool | None = None


class RestoreWorker:
    """A Ray Data actor: one open backend, reused for every item sent to it."""

    def __init__(self, spec: WorkerSpec) -> None:
        from restorekit.runtime.session import RestorationSession

        self.spec = spec
        choice = choose_artifact(spec.artifacts)
        self.session = RestorationSession(
            choice.path, backend=choice.backend, provider=choice.provider or "cpu",
            threads=spec.threads, tile=spec.tile, overlap=spec.overlap, batch=spec.batch,
            fallback=spec.fallback,
        ).__enter__()  # fmt: skip
        self.worker = f"{choice.host or platform.node()}:{os.getpid()}"
        self.artifact = choice.describe()
        # CPU this process spent to get here (Ray's worker start, imports, opening the model).
        self.open_cpu_seconds = time.process_time()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        records: dict[str, list[Any]] = {k: [] for k in _RECORD_FIELDS}
        for location in batch["input"]:
            for key, value in self._restore_one(str(location)).items():
                records[key].append(value)
        return records

    def _restore_one(self, location: str) -> dict[str, Any]:
        from restorekit.runtime.jobs import run_job

        started, cpu_started = time.perf_counter(), time.process_time()
        record: dict[str, Any] = {"input": location, "output": "", "size": -1, "sha256": "",
                                  "megapixels": 0.0, "frames": 0, "error": "", "warnings": "",
                                  "worker": self.worker, "artifact": self.artifact}  # fmt: skip
        try:
            summary = run_job(self.session.restorer, [location], self.spec.output, progress=False)
            record["warnings"] = "\n".join(m for _, m in summary.warnings)
            if summary.failures:
                record["error"] = "; ".join(m for _, m in summary.failures)
            elif summary.written:
                target = summary.written[0]
                record["size"], record["sha256"] = output_record(target)
                record.update(output=str(target), megapixels=summary.megapixels,
                              frames=summary.frames)  # fmt: skip
            else:
                record["error"] = "nothing was written"
        except (RestoreKitError, OSError) as exc:
            record["error"] = str(exc)
        except Exception as exc:  # a bug on one item must not end the job: report it with it
            record["error"] = f"internal error: {type(exc).__name__}: {exc}"
        record["seconds"] = time.perf_counter() - started
        record["cpu_seconds"] = time.process_time() - cpu_started  # every thread of the worker
        record["open_cpu_seconds"] = self.open_cpu_seconds
        record["finished"] = time.time()  # the driver sees results a task at a time
        return record

    def __del__(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.__exit__(None, None, None)


@dataclass
class WorkerUse:
    """One worker process as the summary reports it."""

    worker: str
    artifact: str
    items: int = 0
    open_cpu_seconds: float = 0.0  # starting the worker process and opening the model
    cpu_seconds: float = 0.0  # restoring its items


@dataclass
class ClusterSummary:
    """What a cluster job did. ``images``/``frames``/``megapixels`` count the work done in this
    run; items whose outputs were already complete are counted in ``skipped``."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    skipped: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    steady_seconds: float = 0.0
    address: str = ""
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    workers: dict[str, WorkerUse] = field(default_factory=dict)

    @property
    def items(self) -> int:
        return self.images + self.videos

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_items_per_second(self) -> float:
        """Throughput once the first item is done (Ray and the workers started): items 2..n over
        the time from the first item's end to the last's, as the workers timed them."""
        return (self.items - 1) / self.steady_seconds if self.steady_seconds > 0 else 0.0

    def line(self) -> str:
        """One line for the end of a run, like ``restore-run``'s."""
        parts = [f"{self.images} images"]
        if self.videos:
            parts.append(f"{self.videos} videos ({self.frames} frames)")
        parts += [f"{self.megapixels:.2f} MP", f"{self.seconds:.2f} s",
                  f"{self.megapixels_per_second:.2f} MP/s",
                  f"{self.items_per_second:.2f} items/s"]  # fmt: skip
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already done)")
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        if self.workers:
            artifacts = sorted({w.artifact for w in self.workers.values()})
            parts.append(f"{len(self.workers)} workers: " + " | ".join(artifacts))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (``--stats``): ``restore-run``'s keys plus the cluster's."""
        return {
            "summary": self.line(),
            "images": self.images,
            "videos": self.videos,
            "frames": self.frames,
            "skipped": self.skipped,
            "megapixels": round(self.megapixels, 6),
            "seconds": round(self.seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "steady_items_per_second": round(self.steady_items_per_second, 4),
            "megapixels_per_second": round(self.megapixels_per_second, 4),
            "items_per_second": round(self.items_per_second, 4),
            "address": self.address,
            "workers": [vars(w) for w in self.workers.values()],
            "failures": [{"input": i, "error": e} for i, e in self.failures],
            "warnings": [{"input": i, "warning": w} for i, w in self.warnings],
        }


@dataclass(frozen=True)
class _Item:
    source: Source
    identity: InputIdentity
    target: Path


def restore_collection(
    artifact: str | Path | Sequence[str | Path],
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    gpus_per_worker: float | None = None,
    tile: tuple[int, int] | None = None,
    overlap: int | None = None,
    batch: int | None = None,
    fallback: str | Path | bool | None = None,
    progress: bool = True,
) -> ClusterSummary:
    """Restore images and videos on a Ray cluster into ``output``, skipping finished items.

    ::

        summary = restorekit.restore_collection("model.fp32.256x256.onnx", ["photos/"], "out/")
        print(summary.line())

    Args:
        artifact: an ``.onnx`` or ``.engine`` (its partners beside it are candidates too, see
            :func:`~restorekit.cluster.placement.candidate_artifacts`), or a list of candidates.
            Every node must see it at the same path.
        inputs: image files, folders, globs and video files (no cameras or streams).
        output: the output folder, at the same path on every node (a shared filesystem); it holds
            the outputs ledger that makes re-runs skip finished items.
        address: a running cluster (``host:port``, ``ray://host:port`` or ``auto``); ``None``
            starts a local Ray instance on this machine.
        workers: actors in the pool; default: the cluster's CPUs (GPUs with
            ``gpus_per_worker``) divided by what one worker takes.
        threads_per_worker: ONNX Runtime threads per worker (and CPUs Ray reserves); default 1.
        gpus_per_worker: GPUs Ray reserves per worker (e.g. 1 or 0.5); default 0.
        tile, overlap, batch, fallback: as for :func:`restorekit.open`.
        progress: show a progress bar with items/s and MP/s.

    Returns:
        The summary: counts, throughput, the artifact each worker used, and every failure;
        ``startup_seconds`` is the time until the first item was done (starting Ray and the
        workers, opening the model, that item's own work).

    Raises:
        InputError: no input matched, a camera or stream among the inputs, or a missing artifact.
        ClusterError: the cluster cannot be reached or started, or no worker could start.
        MissingDependencyError: Ray is not installed (the ``cluster`` extra).
    """
    started, started_at = time.perf_counter(), time.time()
    candidates = _candidates(artifact)
    output = Path(output).resolve()
    if output.suffix and output.is_file():
        raise InputError(f"--cluster writes into a folder; {output} is a file: give a folder")
    items, failures = _expand(inputs, output)
    output.mkdir(parents=True, exist_ok=True)
    threads = threads_per_worker or 1
    options = {"tile": tile, "overlap": overlap, "batch": batch, "fallback": str(fallback)}
    job = job_fingerprint(candidates, options)
    ledger = Ledger(output)
    done = ledger.read()
    todo = [i for i in items if not ledger.is_done(done.get((job, i.identity.path)), i.identity,
                                                    i.target)]  # fmt: skip
    summary = ClusterSummary(skipped=len(items) - len(todo), failures=failures,
                             address=address or "local")  # fmt: skip
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary  # nothing to compute: no cluster needed
    spec = WorkerSpec(tuple(str(p) for p in candidates), str(output), threads, tile, overlap,
                      batch, str(fallback) if isinstance(fallback, Path) else fallback)  # fmt: skip
    with ray_connection(address) as ray, Ledger(output) as appender:
        count = min(workers or _default_workers(ray, threads, gpus_per_worker), len(todo))
        summary.address = address or "local"
        records = _run_pool(ray, spec, todo, count, threads, gpus_per_worker)
        by_input = {str(i.source.location): i for i in todo}
        bar = tqdm(total=len(todo), unit="item", desc="cluster", disable=not progress,
                   dynamic_ncols=True)  # fmt: skip
        first_done, last_done = float("inf"), 0.0  # wall clock, as the workers timed them
        with bar:
            for record in records:
                first_done = min(first_done, float(record["finished"]))
                last_done = max(last_done, float(record["finished"]))
                _collect(record, by_input, job, output, summary, appender)
                bar.update(1)
                elapsed = time.perf_counter() - started
                bar.set_postfix_str(f"{summary.megapixels / elapsed:.2f} MP/s", refresh=False)
    _remove_partial_files(todo)
    summary.seconds = time.perf_counter() - started
    if last_done:
        summary.startup_seconds = max(0.0, first_done - started_at)
        summary.steady_seconds = max(0.0, last_done - first_done)
    return summary


def _remove_partial_files(items: list[_Item]) -> None:
    """Delete the temporary files a killed worker left beside this job's targets.

    The atomic writers write ``.<name>.<random><suffix>`` (images) or ``.<stem>.partial<suffix>``
    (videos) beside the target and rename it at the end; a worker killed mid-write never renames
    it. Once the pool is done, nothing of this job writes any more, so what is left is litter.
    """
    for item in items:
        target = item.target
        patterns = (f".{target.name}.*{target.suffix}", f".{target.stem}.partial{target.suffix}")
        for pattern in patterns:
            for path in target.parent.glob(pattern):
                path.unlink(missing_ok=True)


def _candidates(artifact: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(artifact, (str, Path)):
        return [p.resolve() for p in candidate_artifacts(artifact)]
    paths = [Path(p).resolve() for p in artifact]
    for p in paths:
        if not p.is_file():
            raise InputError(f"artifact not found: {p}")
    if not paths:
        raise InputError("no artifact given: pass an .onnx or .engine file")
    return paths


def _expand(
    inputs: Sequence[str | Path], output: Path
) -> tuple[list[_Item], list[tuple[str, str]]]:
    """The file items of ``inputs`` with their targets; refuses cameras and streams."""
    sources, failures = expand_sources([str(i) for i in inputs])
    live = [s.location for s in sources if s.kind == "camera"]
    if live:
        raise InputError(
            f"--cluster restores files (images, folders, videos), not cameras or streams "
            f"({', '.join(live)}): run live sources without --cluster, on the machine that "
            "reads them"
        )
    if not sources:
        detail = "; ".join(f"{i}: {r}" for i, r in failures)
        raise InputError(f"no inputs to restore ({detail})")
    items: list[_Item] = []
    claimed: dict[Path, str] = {}
    for source in sources:
        location = str(source.path.resolve())
        target = output_path(source.path, output, single=False)
        if target in claimed:
            failures.append((location, f"another input ({claimed[target]}) also writes "
                             f"{target.name}: rename one, or restore them into separate folders"))  # fmt: skip
            continue
        try:
            identity = InputIdentity.of(location)
        except OSError as exc:
            failures.append((location, str(exc)))
            continue
        claimed[target] = location
        items.append(_Item(Source(source.kind, location), identity, target))
    return items, failures


def _default_workers(ray: Any, threads: int, gpus_per_worker: float | None) -> int:
    resources = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // threads))


def _run_pool(
    ray: Any,
    spec: WorkerSpec,
    todo: list[_Item],
    workers: int,
    threads: int,
    gpus_per_worker: float | None,
) -> Iterator[dict[str, Any]]:
    context = ray.data.DataContext.get_current()  # read when the dataset is made: set it first
    saved_wait = context.wait_for_min_actors_s
    context.wait_for_min_actors_s = WORKER_START_TIMEOUT_S
    try:
        rows = [{"input": str(i.source.location)} for i in todo]
        per_task = max(1, min(MAX_ITEMS_PER_TASK, len(rows) // (workers * TASKS_PER_WORKER)))
        dataset = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // per_task))
        restored = dataset.map_batches(
            RestoreWorker,
            fn_constructor_args=(spec,),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads,
            num_gpus=gpus_per_worker or 0,
        )
        yield from restored.iter_rows()
    except RestoreKitError as exc:  # a worker's constructor refused (e.g. no artifact fits)
        raise ClusterError(f"workers could not start: {_first_line(exc)}") from exc
    except ray.exceptions.GetTimeoutError as exc:
        raise ClusterError(
            f"{workers} workers did not all start within {WORKER_START_TIMEOUT_S} s: the cluster "
            f"lacks free CPUs/GPUs for them (each takes {threads} CPU"
            f"{f' and {gpus_per_worker} GPU' if gpus_per_worker else ''}); ask for fewer with "
            "--workers"
        ) from exc
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"the Ray job failed: {_first_line(exc)}") from exc
    finally:
        context.wait_for_min_actors_s = saved_wait


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):  # Ray puts the remote error's own message last
        if "Error" in line and ":" in line:
            return line.strip()
    return lines[-1].strip() if lines else type(exc).__name__


def _collect(
    record: dict[str, Any],
    by_input: dict[str, _Item],
    job: str,
    output: Path,
    summary: ClusterSummary,
    ledger: Ledger,
) -> None:
    location = str(record["input"])
    item = by_input[location]
    worker = str(record["worker"])
    use = summary.workers.setdefault(
        worker, WorkerUse(worker, str(record["artifact"]), 0, float(record["open_cpu_seconds"]))
    )
    use.items += 1
    use.cpu_seconds += float(record["cpu_seconds"])
    for warning in filter(None, str(record["warnings"]).split("\n")):
        summary.warnings.append((location, warning))
    if record["error"]:
        summary.failures.append((location, str(record["error"])))
        return
    target = Path(str(record["output"]))
    megapixels = float(record["megapixels"])
    ledger.append(
        LedgerEntry(job, item.identity, os.path.relpath(target, output), int(record["size"]),
                    str(record["sha256"]), megapixels, worker, str(record["artifact"]))
    )  # fmt: skip
    summary.written.append(target)
    summary.megapixels += megapixels
    if item.source.kind == "video":
        summary.videos += 1
        summary.frames += int(record["frames"])
    else:
        summary.images += 1


def print_summary(summary: ClusterSummary, file: Any = None) -> None:
    """Warnings, failures, the workers and the summary line, as ``restore-run`` prints them."""
    err = file or sys.stderr
    for source, message in summary.warnings:
        print(f"warning: {source}: {message}", file=err)
    for source, message in summary.failures:
        print(f"failed: {source}: {message}", file=err)
    for use in summary.workers.values():
        print(f"worker {use.worker}: {use.artifact}, {use.items} items", file=err)


__all__ = ["ClusterSummary", "RestoreWorker", "WorkerSpec", "print_summary", "restore_collection"]

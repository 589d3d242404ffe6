"""Batch throughput: plain ``restore-run`` against ``restore-run --cluster`` with 1 and 2 workers on
this machine, one ONNX Runtime thread per worker (and for the plain run).

    restore-export mprnet -o bench-models
    python benchmarks/cluster.py bench-models/mprnet.demo_dn_s25.fp32.256x256.onnx --repeats 3

The collection: ``--items`` photos (default 64) made from the package's sample photos (crops of
3/4 ``--size`` to ``--size`` px a side, flips, 90-degree turns), written as PNG; with the tile as
large as the photos, each photo is one tile. Each configuration restores the whole
collection into a fresh output folder (a cluster re-run would skip finished items), ``--repeats``
times, interleaved; medians are reported.

- **plain**: ``restorekit.open(..., threads=1)`` + ``run_job``, in this process: what ``restore-run
  --threads 1`` does.
- **cluster, N workers**: ``restorekit.restore_collection(..., workers=N, threads_per_worker=1)``
  on a local Ray instance started for each run, as ``restore-run --cluster`` does.
  *end to end* includes starting Ray, the workers and opening the model; *steady* is the
  throughput once the first item is done (items 2..n over the time from the first item's end to
  the last's, as the workers timed them), which is what a long job sees. For the plain run,
  *steady* leaves out opening the model.

Overhead at 1 worker = plain items/s over cluster items/s, minus 1 (target <= 10%); scaling =
2 workers over 1 worker (target >= 1.7x).

``--cpu``: the same plain and 1-worker runs, counted in CPU seconds rather than wall time, which
holds on a machine busy with other work (wall-time ratios do not). Plain: this process. Cluster:
the worker's own CPU, as it reports it (starting and opening the model; restoring each item), and
the CPU the driver and Ray's long-lived processes (GCS, raylet, agents) spent during the job.
Ray is started by the benchmark (``restorekit.cluster.connect.ray_connection``, as the job itself
would), so starting Ray is counted apart. Worker processes Ray starts and ends during the job
other than the pool's own are not counted. Online serving figures are in ``benchmarks/serve.py``.
The machine is shared: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import restorekit
from restorekit.data import sample_images
from restorekit.runtime.imageio import write_image
from restorekit.runtime.jobs import run_job


def make_collection(folder: Path, count: int, size: int, seed: int = 0) -> float:
    """Write ``count`` photos of 3/4 ``size`` to ``size`` pixels a side; returns their megapixels."""
    rng = np.random.default_rng(seed)
    photos = sample_images()
    folder.mkdir(parents=True, exist_ok=True)
    megapixels = 0.0
    for k in range(count):
        image = photos[k % len(photos)]
        h, w = (int(v) for v in rng.integers(size * 3 // 4, size + 1, 2))
        y, x = int(rng.integers(0, 257 - h)), int(rng.integers(0, 257 - w))
        crop = image[y : y + h, x : x + w]
        if k // len(photos) % 2:
            crop = crop[:, ::-1]
        crop = np.rot90(crop, k // (2 * len(photos)) % 4)
        write_image(folder / f"photo{k:03d}.png", np.ascontiguousarray(crop))
        megapixels += crop.shape[0] * crop.shape[1] / 1e6
    return megapixels


def plain(artifact: Path, photos: Path, out: Path) -> dict[str, float]:
    started = time.perf_counter()
    with restorekit.open(artifact, threads=1) as model:
        opened = time.perf_counter()
        summary = run_job(model.restorer, [str(photos)], out, progress=False)
        done = time.perf_counter()
    assert not summary.failures, summary.failures
    # Steady: the job once the model is open (plain restore-run's only start-up).
    return {"items": summary.images, "seconds": done - started, "megapixels": summary.megapixels,
            "startup": opened - started, "steady": summary.images / (done - opened)}  # fmt: skip


def cluster(artifact: Path, photos: Path, out: Path, workers: int) -> dict[str, float]:
    summary = restorekit.restore_collection(
        artifact, [photos], out, workers=workers, threads_per_worker=1, progress=False
    )
    assert not summary.failures, summary.failures
    assert len(summary.workers) == workers, summary.workers
    return {"items": summary.images, "seconds": summary.seconds,
            "megapixels": summary.megapixels, "startup": summary.startup_seconds,
            "steady": summary.steady_items_per_second}  # fmt: skip


def own_cpu(proc) -> float:
    """User + system CPU seconds of one process (its threads, not its children)."""
    t = proc.cpu_times()
    return t.user + t.system


def live_cpu(procs) -> dict[int, float]:
    import psutil

    out = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            out[proc.pid] = own_cpu(proc)
    return out


def _name(proc) -> str:
    """``python`` (the driver), ``gcs_server``, ``raylet``, ``ray::IDLE``, ..."""
    try:
        return "driver" if proc.pid == os.getpid() else proc.cmdline()[0].split("/")[-1][:40]
    except Exception:  # gone, or no command line to read
        return "?"


def cpu_runs(artifact: Path, photos: Path, tmp: Path, repeats: int) -> None:
    import psutil

    from restorekit.cluster.connect import ray_connection

    me = psutil.Process()
    rows: dict[str, list[float]] = {k: [] for k in ("plain", "start", "ray", "open", "restore")}
    items = 0
    for r in range(repeats):
        before = own_cpu(me)
        with restorekit.open(artifact, threads=1) as model:
            summary = run_job(model.restorer, [str(photos)], tmp / f"cpu-plain-{r}", progress=False)
        rows["plain"].append(own_cpu(me) - before)
        items = summary.images
        before = own_cpu(me)
        with ray_connection(None):
            procs = [me, *me.children(recursive=True)]  # Ray's GCS, raylet, agents, idle workers
            at_start = live_cpu(procs)
            names = {p.pid: _name(p) for p in procs}
            rows["start"].append(sum(at_start.values()) - before)
            summary = restorekit.restore_collection(
                artifact, [photos], tmp / f"cpu-cluster-{r}", workers=1, threads_per_worker=1,
                progress=False,
            )  # fmt: skip
            at_end = live_cpu(procs)
        assert summary.images == items and not summary.failures
        # The pool's worker may have been one of Ray's idle workers when Ray started: it reports
        # its own CPU (open, restore), so it is left out here.
        pool = {int(w.worker.rpartition(":")[2]) for w in summary.workers.values()}
        others = (at_end.keys() & at_start.keys()) - pool
        rows["ray"].append(sum(at_end[p] - at_start[p] for p in others))
        by_name: dict[str, float] = {}
        for pid in others:
            by_name[names[pid]] = by_name.get(names[pid], 0.0) + at_end[pid] - at_start[pid]
        rows["open"].append(sum(w.open_cpu_seconds for w in summary.workers.values()))
        rows["restore"].append(sum(w.cpu_seconds for w in summary.workers.values()))
        print("  cpu repeat " + str(r + 1) + ": " + ", ".join(
            f"{k} {v[-1]:.1f} s" for k, v in rows.items()), flush=True)  # fmt: skip
    m = {k: statistics.median(v) for k, v in rows.items()}
    job = m["ray"] + m["open"] + m["restore"]
    print("\n| CPU seconds (median) | total | per item |")
    print("|---|---|---|")
    print(
        f"| plain: open the model + the job (this process) | {m['plain']:.1f} | "
        f"{m['plain'] / items:.3f} |"
    )
    print(f"| cluster, 1 worker: starting Ray (driver, GCS, raylet, agents) | {m['start']:.1f} | |")
    print(f"| cluster, 1 worker: the job | {job:.1f} | {job / items:.3f} |")
    print(f"| - the worker: start and open the model | {m['open']:.1f} | |")
    print(
        f"| - the worker: restoring its items | {m['restore']:.1f} | {m['restore'] / items:.3f} |"
    )
    print(
        f"| - driver and Ray's processes during the job | {m['ray']:.1f} | {m['ray'] / items:.3f} |"
    )
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
    print("\ndriver and Ray's processes during the job, last repeat: " + ", ".join(
        f"{name} {cpu:.1f} s" for name, cpu in top))  # fmt: skip
    print(f"\nCPU of the job at 1 worker over plain (Ray's start left out): {job / m['plain'] - 1:+.1%}; "
          f"restoring alone: {m['restore'] / m['plain'] - 1:+.1%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="an FP32 ONNX (e.g. the demo MPRNet's)")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", action="store_true",
                        help="count CPU seconds (plain and 1 worker) instead of wall time")  # fmt: skip
    parser.add_argument("--size", type=int, default=256,
                        help="largest photo side (<= 256, the sample photos' size; match the tile)")  # fmt: skip
    args = parser.parse_args()
    ray_tmp = tempfile.mkdtemp(prefix="rkb", dir="/tmp")  # short: Ray's socket paths
    os.environ.setdefault("RAY_TMPDIR", ray_tmp)
    configs = {"plain": None, "cluster, 1 worker": 1, "cluster, 2 workers": 2}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="rk-bench-") as tmp:
        photos = Path(tmp) / "photos"
        megapixels = make_collection(photos, args.items, args.size)
        print(f"{args.items} photos, {megapixels:.2f} MP; {args.artifact.name}; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
        if args.cpu:
            cpu_runs(args.artifact, photos, Path(tmp), args.repeats)
            shutil.rmtree(ray_tmp, ignore_errors=True)
            return
        for r in range(args.repeats):
            for name, workers in configs.items():
                out = Path(tmp) / f"out-{r}-{workers or 0}"
                result = (plain(args.artifact, photos, out) if workers is None
                          else cluster(args.artifact, photos, out, workers))  # fmt: skip
                runs[name].append(result)
                print(f"  repeat {r + 1} {name}: {result['seconds']:.1f} s (first item done after "
                      f"{result['startup']:.1f} s, then {result['steady']:.3f} items/s)",
                      flush=True)  # fmt: skip
    shutil.rmtree(ray_tmp, ignore_errors=True)
    table = {}
    for name, results in runs.items():
        end = statistics.median(r["items"] / r["seconds"] for r in results)
        steady = statistics.median(r["steady"] for r in results)
        startup = statistics.median(r["startup"] for r in results)
        table[name] = (end, steady, end * megapixels / args.items, startup)
    print(
        "\n| run | items/s end to end | items/s steady | MP/s end to end | first item done after |"
    )
    print("|---|---|---|---|---|")
    for name, (end, steady, mps, startup) in table.items():
        print(f"| {name} | {end:.2f} | {steady:.2f} | {mps:.3f} | {startup:.1f} s |")
    p_end, p_steady = table["plain"][0], table["plain"][1]
    one_end, one_steady = table["cluster, 1 worker"][0], table["cluster, 1 worker"][1]
    two_end, two_steady = table["cluster, 2 workers"][0], table["cluster, 2 workers"][1]
    print(
        f"\nRay overhead at 1 worker (target <= 10%): end to end {p_end / one_end - 1:+.1%}, "
        f"steady {p_steady / one_steady - 1:+.1%}"
    )
    print(
        f"scaling 1 -> 2 workers (target >= 1.7x): end to end {two_end / one_end:.2f}x, "
        f"steady {two_steady / one_steady:.2f}x"
    )


if __name__ == "__main__":
    main()

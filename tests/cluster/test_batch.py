"""``restore-run --cluster`` on a real local Ray cluster on 127.0.0.1: a head and a second node
(``ray.cluster_utils.Cluster`` starts real GCS and raylet processes), each with one CPU, so the two
workers run on different nodes.

Every output is compared byte for byte with plain ``restore-run`` on the same artifact and
options (one ONNX Runtime thread on both sides). Also: a worker killed mid-job, resume (nothing
recomputed, then only a damaged output recomputed), bad inputs among good ones, and the embedded
default (``--cluster`` without an address). Ray's temporary files go to a short private folder
(its socket paths are limited to ~107 characters) that is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from restorekit.cli.run import main as restore_run
from restorekit.cluster.ledger import LEDGER_NAME
from restorekit.runtime.imageio import write_image
from restorekit.runtime.opencv import cv2
from tests.runtime import tinynet

pytest.importorskip("ray.data", exc_type=ImportError)  # Ray Data needs pyarrow, which needs numpy 2
pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_tmp():
    folder = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder  # also for the restore-run subprocesses
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(ray_tmp):
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        c.add_node(**node)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()  # kills exactly the processes this cluster started


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The artifact, a folder of photos (8- and 16-bit, gray, sizes that need edge tiles) and
    plain restore-run's outputs of it."""
    root = tmp_path_factory.mktemp("cluster")
    artifact, _, _ = tinynet.export_net(root, batch=2, scale=2)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(16)
    for k in range(10):
        shape = (96 + 8 * k, 120 - 4 * k, 3)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        if k == 3:
            image = (image.astype(np.uint16) * 257)[:, :, :]  # 16-bit
        if k == 5:
            image = image[:, :, 0]  # gray
        write_image(photos / f"p{k:02d}.png", image)
    clip = root / "clip.avi"  # a video: one task per file
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (40, 24))
    for _ in range(5):
        writer.write(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    writer.release()
    reference = root / "reference"
    rc = restore_run([str(artifact), str(photos), str(clip), "-o", str(reference), "--threads",
                      "1", "--quiet"])  # fmt: skip
    assert rc == 0
    names = sorted(p.name for p in photos.iterdir())
    assert sorted(p.name for p in reference.iterdir()) == sorted([*names, clip.name])
    return artifact, photos, reference, names


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "restorekit.cli.run", *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def _same_as_reference(out: Path, reference: Path, names: list[str]) -> None:
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def _files(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of each output: a recomputed file is a new inode (atomic rename)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}


@pytest.fixture(scope="module")
def cluster_run(cluster, work, tmp_path_factory):
    artifact, photos, reference, names = work
    out = tmp_path_factory.mktemp("cluster_out")
    stats = out.parent / "cluster_stats.json"
    proc = _cli(str(artifact), str(photos), "-o", str(out), "--cluster", cluster.address,
                "--workers", "2", "--threads", "1", "--quiet", "--stats", str(stats))  # fmt: skip
    return out, proc, json.loads(stats.read_text()) if stats.is_file() else None


def test_job_on_two_nodes_equals_plain_restore_run(cluster_run, work, cluster):
    _, _, reference, names = work
    out, proc, report = cluster_run
    assert proc.returncode == 0, proc.stderr
    _same_as_reference(out, reference, names)
    assert report["images"] == len(names) and report["failures"] == []
    assert report["address"] == cluster.address
    # One worker per node (each node offers one CPU, each worker takes one), both on the ONNX.
    assert len(report["workers"]) == 2
    assert sum(w["items"] for w in report["workers"]) == len(names)
    assert {w["artifact"] for w in report["workers"]} == {"tiny.onnx (ONNX Runtime CPU)"}
    assert f"{len(names)} images" in proc.stdout and "MP/s" in proc.stdout
    assert 0 < report["startup_seconds"] <= report["seconds"]
    assert report["items_per_second"] == pytest.approx(len(names) / report["seconds"], rel=1e-3)


def test_rerun_recomputes_nothing_then_only_damaged_outputs(cluster_run, work, cluster):
    import restorekit

    artifact, photos, reference, names = work
    out, proc, _ = cluster_run
    assert proc.returncode == 0, proc.stderr
    before = _files(out)
    # Everything complete: skipped without even starting Ray (no address would start one).
    summary = restorekit.restore_collection(artifact, [photos], out, progress=False)
    assert (summary.skipped, summary.images, summary.failures) == (len(names), 0, [])
    assert not summary.workers and _files(out) == before
    # A truncated output and one altered in place (same size: only the hash tells).
    cut, altered = out / names[1], out / names[6]
    cut.write_bytes(cut.read_bytes()[:100])
    data = bytearray(altered.read_bytes())
    data[-20] ^= 0xFF
    altered.write_bytes(bytes(data))
    damaged = _files(out)
    summary = restorekit.restore_collection(
        artifact, [photos], out, address=cluster.address, threads_per_worker=1, progress=False
    )
    assert (summary.images, summary.skipped, summary.failures) == (2, len(names) - 2, [])
    assert sorted(p.name for p in summary.written) == sorted([cut.name, altered.name])
    after = _files(out)
    for name in names:
        if name in (cut.name, altered.name):
            assert after[name] != damaged[name]
        else:
            assert after[name] == before[name], f"{name} was recomputed"
    _same_as_reference(out, reference, names)


def test_worker_killed_mid_job_still_completes_every_output(cluster, work, tmp_path):
    artifact, photos, reference, names = work
    # More work per run: the same photos under several names, so the kill lands mid-job.
    many = tmp_path / "many"
    many.mkdir()
    for copy in range(4):
        for name in names:
            shutil.copy(photos / name, many / f"c{copy}_{name}")
    out = tmp_path / "out"
    stats = tmp_path / "stats.json"
    cmd = [sys.executable, "-m", "restorekit.cli.run", str(artifact), str(many), "-o", str(out),
           "--cluster", cluster.address, "--workers", "2", "--threads", "1", "--quiet",
           "--stats", str(stats)]  # fmt: skip
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    total = len(names) * 4
    killed, done_at_kill = None, None
    try:
        deadline = time.monotonic() + 200
        ledger = out / LEDGER_NAME
        while killed is None and time.monotonic() < deadline and job.poll() is None:
            lines = ledger.read_text().splitlines() if ledger.is_file() else []
            if lines:
                # A worker that has restored an item: kill its process (an actor on our cluster).
                killed = int(json.loads(lines[0])["worker"].rpartition(":")[2])
                done_at_kill = len(lines)
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        stdout, stderr = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    assert killed is not None, "the job ended before a worker could be killed"
    assert done_at_kill < total, "every item was done before the kill: nothing was tested"
    assert job.returncode == 0, stderr
    report = json.loads(stats.read_text())
    assert report["images"] == total and report["failures"] == []
    for copy in range(4):
        for name in names:
            assert (out / f"c{copy}_{name}").read_bytes() == (reference / name).read_bytes()
    # No leftovers of the killed worker's unfinished write under an output's name.
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"c{c}_{n}" for c in range(4) for n in names
    )
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)


def test_embedded_default_reports_bad_inputs_and_finishes_the_rest(work, ray_tmp, tmp_path):
    """``--cluster`` without an address starts (and stops) its own Ray instance on this machine;
    a video among the images is restored as one task, like plain restore-run does it."""
    artifact, photos, reference, names = work
    mixed = tmp_path / "mixed"
    shutil.copytree(photos, mixed)
    (mixed / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    truncated = (photos / names[0]).read_bytes()[:60]
    (mixed / "cut.png").write_bytes(truncated)
    out = tmp_path / "out"
    clip = photos.parent / "clip.avi"
    proc = _cli(str(artifact), str(mixed), str(clip), "-o", str(out), "--workers", "1",
                "--threads", "1", "--quiet", "--cluster")  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # partial failure, as plain restore-run says it
    assert f"failed: {mixed / 'broken.png'}: cannot decode" in proc.stderr
    assert f"failed: {mixed / 'cut.png'}:" in proc.stderr
    assert f"{len(names)} images, 1 videos (5 frames)" in proc.stdout
    assert "2 failed" in proc.stdout
    _same_as_reference(out, reference, [*names, clip.name])
    assert not (out / "broken.png").exists() and not (out / "cut.png").exists()


def test_more_workers_than_the_cluster_can_start_is_a_clear_error(
    cluster, work, tmp_path, monkeypatch
):
    """The pool waits for all its workers before handing out work (so a short job is shared, not
    taken whole by the first worker up); workers the cluster cannot host end the wait with a
    message that says what to do, and nothing is written."""
    import restorekit
    from restorekit.cluster import batch
    from restorekit.errors import ClusterError

    artifact, photos, _, _ = work
    monkeypatch.setattr(batch, "WORKER_START_TIMEOUT_S", 5)
    out = tmp_path / "out"
    with pytest.raises(ClusterError, match=r"3 workers did not all start within 5 s.*--workers"):
        restorekit.restore_collection(artifact, [photos], out, address=cluster.address, workers=3,
                                      threads_per_worker=1, progress=False)  # fmt: skip
    assert not list(out.glob("*.png"))

"""restore-serve throughput and latency: requests/s and p50/p95 latency at 1, 4 and 16 concurrent
clients, for 1 replica (all cores) and 2 replicas (one core each), against restoring the same
images in one local process.

    restore-export mprnet --batch 4 -o serve-models       # demo MPRNet, FP32, 256x256 tiles
    python benchmarks/serve.py serve-models/mprnet.demo_dn_s25.fp32.256x256.onnx

The server is the real one (``restore-serve`` in a subprocess, Ray Serve on 127.0.0.1); each client
is a thread that sends its images one after the other (closed loop) over its own keep-alive
connection, as ``restore-run --server`` does. Images are crops of the bundled sample photos,
``--size`` pixels square, sent as PNG; the default 224 px is one 256x256 tile with the demo
MPRNet's 32 px overlap, so every engine call with more than one tile joined tiles of different
requests (the "tiles/call" column, read from the replicas' /health counters). Latency is the
client's: request sent to restored PNG received (upload, decode, restoration, encode, download).
The local rows are ``restorekit.open(...).restore`` on the same images, one after the other, with
one thread and with all cores ("x local" is against the latter). Every response is checked against
that local result, pixel for pixel.

One run; the figures of a table come from one invocation. The machine is shared: pause other work
for the timed run (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import restorekit
from restorekit.cluster.client import ServerClient
from restorekit.data import sample_paths
from restorekit.runtime.imageio import decode_image, encode_image, read_image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images(size: int, count: int) -> list[np.ndarray]:
    """``count`` crops of ``size`` px from the sample photos (cycling through them)."""
    photos = [read_image(p) for p in sample_paths()]
    out = []
    for k in range(count):
        photo = photos[k % len(photos)]
        h, w = photo.shape[:2]
        y = (k * 37) % max(h - size, 1)
        x = (k * 53) % max(w - size, 1)
        crop = photo[y : y + size, x : x + size]
        out.append(np.ascontiguousarray(crop[..., :3] if crop.ndim == 3 else crop))
    return out


def start_server(artifact: Path, replicas: int, threads: int, batch: int | None):
    port = _free_port()
    cmd = [sys.executable, "-m", "restorekit.cli.serve", str(artifact), "--port", str(port),
           "--replicas", str(replicas), "--threads", str(threads)]  # fmt: skip
    if batch is not None:
        cmd += ["--batch", str(batch)]
    log = open(f"/tmp/restorekit-serve-bench-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    client = ServerClient(f"http://127.0.0.1:{port}", timeout_s=600)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.health()
            return proc, client
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"restore-serve did not start; see {log.name}") from None
            time.sleep(1)


def replica_counters(client: ServerClient, polls: int = 12) -> dict[str, tuple[int, int]]:
    """{replica: (engine calls, tiles)} from /health, polled until every replica answered."""
    seen: dict[str, tuple[int, int]] = {}
    for _ in range(polls):
        doc = client.health()
        seen[doc["replica"]] = (doc["engine_calls"], doc["tiles_computed"])
    return seen


def run_clients(
    client: ServerClient, bodies: list[bytes], clients: int, per_client: int
) -> tuple[list[float], float, list]:
    """``clients`` threads each sending ``per_client`` requests in turn; (latencies, wall, replies)."""
    latencies: list[float] = []
    replies: list = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def one(c: int) -> None:
        start.wait()
        for r in range(per_client):
            k = (c * per_client + r) % len(bodies)
            t0 = time.perf_counter()
            reply = client.restore(bodies[k])
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                replies.append((k, reply))

    threads = [threading.Thread(target=one, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0, replies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--clients", default="1,4,16", help="concurrent clients (default 1,4,16)")
    p.add_argument("--requests", type=int, default=24,
                   help="requests per concurrency level, at least one per client (default 24)")  # fmt: skip
    p.add_argument("--setups", default="1x2,2x1",
                   help="replicas x threads per replica (default 1x2,2x1)")  # fmt: skip
    p.add_argument("--batch", type=int, help="tiles per engine call (default: the artifact's)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    pool = images(args.size, 16)
    bodies = [encode_image(im, ".png") for im in pool]
    cores = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, cores}):
        with restorekit.open(args.artifact, threads=threads) as model:
            model.restore(pool[0])  # warm-up
            results, times = [], []
            for im in pool:
                t0 = time.perf_counter()
                results.append(model.restore(im))
                times.append(time.perf_counter() - t0)
        seconds = sum(times) / len(times)
        if threads == cores:
            expected, local_s = results, seconds
        ms = sorted(t * 1e3 for t in times)
        rows.append({"setup": f"local, {threads} thread{'s' if threads > 1 else ''}",
                     "clients": 1, "requests": len(pool), "rps": 1 / seconds,
                     "p50": statistics.median(ms), "p95": ms[round(0.95 * (len(ms) - 1))],
                     "tiles_per_call": None})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    for setup in args.setups.split(","):
        replicas, threads = (int(v) for v in setup.split("x"))
        proc, client = start_server(args.artifact, replicas, threads, args.batch)
        try:
            run_clients(client, bodies, min(4, max(levels)), 1)  # warm every replica up
            for clients in levels:
                per_client = max(1, -(-args.requests // clients))
                before = replica_counters(client)
                lat, wall, replies = run_clients(client, bodies, clients, per_client)
                after = replica_counters(client)
                for k, reply in replies:
                    assert reply.status == 200, reply.message
                    assert np.array_equal(decode_image(reply.body), expected[k]), "pixels differ"
                calls = sum(after[r][0] - before.get(r, (0, 0))[0] for r in after)
                tiles = sum(after[r][1] - before.get(r, (0, 0))[1] for r in after)
                lat_ms = sorted(x * 1e3 for x in lat)
                row = {
                    "setup": f"{replicas} replica{'s' if replicas > 1 else ''} x {threads} "
                    f"thread{'s' if threads > 1 else ''}",
                    "clients": clients,
                    "requests": len(lat),
                    "rps": len(lat) / wall,
                    "p50": statistics.median(lat_ms),
                    "p95": lat_ms[min(len(lat_ms) - 1, int(round(0.95 * (len(lat_ms) - 1))))],
                    "tiles_per_call": tiles / calls if calls else None,
                    "replicas_seen": len(after),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()  # SIGTERM: a background job ignores SIGINT
            proc.wait(timeout=120)
    print()
    print("| setup | clients | requests | req/s | x local | p50 ms | p95 ms | tiles/call |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p95 = "-" if r["p95"] is None else f"{r['p95']:.0f}"
        tpc = "-" if r["tiles_per_call"] is None else f"{r['tiles_per_call']:.2f}"
        print(f"| {r['setup']} | {r['clients']} | {r['requests']} | {r['rps']:.2f} | "
              f"{r['rps'] * local_s:.2f} | {r['p50']:.0f} | {p95} | {tpc} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

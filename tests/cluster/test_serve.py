"""restore-serve on a real Ray Serve on 127.0.0.1 (the CLI in a subprocess, one server for the
module, two replicas): concurrent requests equal local restoration, tiles of several requests
share engine calls, bad requests get 4xx while the server keeps serving, /health, restore-run --server end to
end, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import restorekit
from restorekit.cli import run as run_cli
from restorekit.cluster.client import ServerClient
from restorekit.runtime.imageio import decode_image, encode_image, read_image, write_image
from tests.ctrl_c import popen_for_ctrl_c
from tests.runtime import tinynet

pytest.importorskip("ray.serve")
pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MAX_REQUEST_MB = 0.25
STARTUP_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(artifact: Path, log) -> tuple[subprocess.Popen, ServerClient] | None:
    """restore-serve on a free port; ``None`` if it exited before answering (the port, free when
    chosen, can be taken by one of Ray's own processes before Serve binds it)."""
    port = _free_port()
    proc = popen_for_ctrl_c(
        [sys.executable, "-m", "restorekit.cli.serve", str(artifact), "--port", str(port),
         "--replicas", "2", "--threads", "1", "--max-request-mb", str(MAX_REQUEST_MB),
         "--batch-wait-ms", "20"],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"RAY_DEDUP_LOGS": "0"},
    )  # fmt: skip
    client = ServerClient(f"http://127.0.0.1:{port}", timeout_s=60)
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            client.health()
            return proc, client
        except Exception:
            if proc.poll() is not None:
                return None
            if time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail(f"restore-serve did not answer in {STARTUP_S} s:\n{log.read()[-3000:]}")
            time.sleep(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    # Tiles 32x48 with a dynamic batch (1..8, 4 per call): a 16x32 image is one tile.
    artifact, _, _ = tinynet.export_net(folder, batch=None, tile=(32, 48))
    log = open(folder / "server.log", "w+")  # noqa: SIM115 - read back in teardown
    started = _start(artifact, log) or _start(artifact, log)
    if started is None:
        log.seek(0)
        pytest.fail(f"restore-serve exited before answering, twice:\n{log.read()[-3000:]}")
    proc, client = started
    yield client.url, artifact, client
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        code = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("restore-serve did not stop within 90 s of Ctrl-C")
    log.seek(0)
    text = log.read()
    log.close()
    assert code == 0 and "stopped" in text, text[-3000:]


def _replicas(client: ServerClient) -> dict[str, dict]:
    """/health of each replica: polled until both answered (the router spreads requests)."""
    seen: dict[str, dict] = {}
    with ThreadPoolExecutor(8) as pool:  # concurrent: an idle router may favour one replica
        for _ in range(20):
            for doc in pool.map(lambda _: client.health(), range(8)):
                seen[doc["replica"]] = doc
            if len(seen) == 2:
                break
    return seen


def _local(artifact: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    with restorekit.open(artifact, threads=1) as model:
        return [model.restore(image) for image in images]


def test_health(server):
    url, artifact, client = server
    doc = client.health()
    assert doc["status"] == "ok" and doc["artifact"] == artifact.name
    assert doc["model"] == "tiny.test" and doc["precision"] == "fp32"
    assert "ONNX Runtime CPU" in doc["backend"] and doc["replicas"] == 2
    assert len(_replicas(client)) == 2  # two replicas answer
    assert doc["max_request_bytes"] == int(MAX_REQUEST_MB * 2**20)


def test_concurrent_requests_equal_local_restoration(server):
    url, artifact, client = server
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 256, (16, 32, 3), dtype=np.uint8) for _ in range(12)]  # 1 tile
    images += [
        rng.integers(0, 256, (50, 75, 3), dtype=np.uint8),
        rng.integers(0, 256, (40, 33), dtype=np.uint8),
        rng.integers(0, 256, (30, 45, 4), dtype=np.uint8),
        rng.integers(0, 65536, (37, 52, 3), dtype=np.uint16),
    ]
    suffixes = [".png"] * 15 + [".tif"]
    before = _replicas(client)
    start = threading.Barrier(len(images))

    def send(k: int):
        body = encode_image(images[k], suffixes[k])
        start.wait()  # all at once, so their tiles meet in the batch queue
        return client.restore(body)

    with ThreadPoolExecutor(len(images)) as pool:
        replies = list(pool.map(send, range(len(images))))
    expected = _local(artifact, images)
    for k, reply in enumerate(replies):
        assert reply.status == 200, reply.message
        assert reply.content_type == ("image/tiff" if suffixes[k] == ".tif" else "image/png")
        got = decode_image(reply.body)
        assert got.dtype == expected[k].dtype and np.array_equal(got, expected[k]), k
        assert reply.headers["x-restorekit-model"] == "tiny.test"
        assert "ONNX Runtime" in reply.headers["x-restorekit-backend"]
        assert float(reply.headers["x-restorekit-time-ms"]) > 0
    after = _replicas(client)
    # Twelve one-tile requests: an engine call with more than one tile took tiles of several
    # requests; fewer calls than tiles over both replicas shows the batching happened.
    assert max(doc["largest_batch"] for doc in after.values()) > 1
    assert len(after) == len(before) == 2
    calls = sum(after[r]["engine_calls"] - before[r]["engine_calls"] for r in after)
    computed = sum(after[r]["tiles_computed"] - before[r]["tiles_computed"] for r in after)
    tiles = sum(int(r.headers["x-restorekit-tiles"]) for r in replies)
    assert computed == tiles and calls < tiles, (calls, computed, tiles)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    url, artifact, client = server
    image = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    png = encode_image(image, ".png")
    cut = client.request("POST", "/restore", png[: len(png) // 2], "image/png")
    assert cut.status == 400 and "truncated PNG" in cut.message
    typed = client.request("POST", "/restore", png, "text/plain")
    assert typed.status == 415 and "content type" in cut.message + typed.message
    noise = np.random.default_rng(3).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    big = encode_image(noise, ".png")  # ~470 KB of noise, over the 0.25 MiB limit
    assert len(big) > MAX_REQUEST_MB * 2**20
    large = client.request("POST", "/restore", big, "image/png")
    assert large.status == 413 and "--max-request-mb" in large.message
    garbage = client.request("POST", "/restore", b"not an image at all", None)
    assert garbage.status == 400 and json.loads(garbage.body)["status"] == 400
    assert client.request("GET", "/restore").status == 405
    assert client.request("GET", "/nowhere").status == 404
    good = client.restore(png)
    assert good.status == 200
    assert np.array_equal(decode_image(good.body), _local(artifact, [image])[0])


def test_restore_run_server_end_to_end(server, tmp_path, capsys):
    url, artifact, _ = server
    rng = np.random.default_rng(4)
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = {
        "a.png": rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
        "b.png": rng.integers(0, 256, (25, 31), dtype=np.uint8),
        "c.jpg": rng.integers(0, 256, (33, 47, 3), dtype=np.uint8),
        "d.tif": rng.integers(0, 65536, (20, 22, 3), dtype=np.uint16),
    }
    for name, image in images.items():
        write_image(inputs / name, image)
    (inputs / "e.png").write_bytes(encode_image(images["a.png"], ".png")[:200])  # truncated
    code = run_cli.main(["--server", url, str(inputs), "-o", str(tmp_path / "out"),
                         "--concurrency", "3", "--quiet"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1  # one input failed
    assert "4 images" in captured.out and "1 failed" in captured.out
    assert "e.png: server answered 400: truncated PNG" in captured.err
    # The same folder restored locally by plain restore-run.
    assert run_cli.main([str(artifact), str(inputs / "a.png"), str(inputs / "b.png"),
                         str(inputs / "c.jpg"), str(inputs / "d.tif"), "-o",
                         str(tmp_path / "local"), "--threads", "1", "--quiet"]) == 0  # fmt: skip
    for name in images:
        ours, theirs = tmp_path / "out" / name, tmp_path / "local" / name
        assert ours.is_file(), name
        if name.endswith((".png", ".tif")):
            assert np.array_equal(read_image(ours), read_image(theirs)), name
        else:  # both encode the same pixels as JPEG with OpenCV's defaults
            assert ours.read_bytes() == theirs.read_bytes(), name
    assert not (tmp_path / "out" / "e.png").exists()


def test_restore_run_server_without_a_server(tmp_path, capsys):
    image = tmp_path / "a.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    url = f"http://127.0.0.1:{_free_port()}"
    assert run_cli.main(["--server", url, str(image), "-o", str(tmp_path / "o.png")]) == 2
    assert "no restore-serve server at" in capsys.readouterr().err

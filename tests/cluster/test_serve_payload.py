"""restore-serve's request rules and replica work without Ray: size, type and truncation checks,
the error mapping, the response formats, and the tile queue against local restoration."""

from __future__ import annotations

import concurrent.futures
import struct
import zlib

import numpy as np
import pytest

import restorekit
from restorekit.cluster.payload import (
    RequestError,
    RequestLimits,
    check_content_length,
    decode_request,
    encode_response,
    error_status,
    sniff_format,
)
from restorekit.cluster.serve import ReplicaCore, ServeOptions
from restorekit.errors import InputError, NonFiniteOutputError, TileSizeError
from restorekit.runtime.imageio import decode_image, encode_image
from tests.runtime import tinynet


def _png(image: np.ndarray) -> bytes:
    return encode_image(image, ".png")


RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (21, 30, 3), dtype=np.uint8)


def _status(call) -> RequestError:
    with pytest.raises(RequestError) as info:
        call()
    return info.value


def test_formats_decode_as_read_image_does():
    deep = RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    got = decode_request(encode_image(deep, ".tif"), "image/tiff")
    assert got.format == "tiff" and got.image.dtype == np.uint16
    assert np.array_equal(got.image, deep)
    rgba = RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    got = decode_request(_png(rgba), None)  # no Content-Type: recognised from the signature
    assert got.format == "png" and np.array_equal(got.image, rgba)
    jpeg = encode_image(RGB, ".jpg")
    got = decode_request(jpeg, "application/octet-stream")
    assert got.format == "jpeg" and np.array_equal(got.image, decode_image(jpeg))


def test_responses_are_lossless_and_keep_depth():
    deep = RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    body, media = encode_response(deep, "tiff")
    assert media == "image/tiff" and np.array_equal(decode_image(body), deep)
    body, media = encode_response(RGB, "jpeg")  # a JPEG comes back as PNG: no new artefacts
    assert media == "image/png" and sniff_format(body) == "png"
    assert np.array_equal(decode_image(body), RGB)


def test_bad_requests_get_4xx_with_a_message():
    png = _png(RGB)
    assert _status(lambda: decode_request(png, "text/plain")).status == 415
    cut = _status(lambda: decode_request(png[: len(png) // 2], "image/png"))
    assert cut.status == 400 and "truncated PNG" in str(cut)
    jpeg = encode_image(RGB, ".jpg")
    cut = _status(lambda: decode_request(jpeg[:-300], "image/jpeg"))
    assert cut.status == 400 and "truncated JPEG" in str(cut)
    wrong = _status(lambda: decode_request(png, "image/jpeg"))
    assert wrong.status == 400 and "is a PNG file" in str(wrong)
    assert _status(lambda: decode_request(b"hello world", None)).status == 400
    assert _status(lambda: decode_request(b"", "image/png")).status == 400
    # A PNG with a whole structure but a broken data stream: the decoder refuses it.
    broken = png[:60] + bytes(len(png) - 72) + png[-12:]
    assert _status(lambda: decode_request(broken, "image/png")).status == 400


def test_size_limits_are_413():
    png = _png(RGB)
    small = RequestLimits(max_bytes=len(png) - 1)
    assert _status(lambda: decode_request(png, "image/png", small)).status == 413
    assert _status(lambda: check_content_length(str(10**9), RequestLimits())).status == 413
    assert _status(lambda: check_content_length("ten", RequestLimits())).status == 400
    few = RequestLimits(max_pixels=21 * 30 - 1)
    assert _status(lambda: decode_request(png, "image/png", few)).status == 413
    assert _status(lambda: decode_request(encode_image(RGB, ".jpg"), None, few)).status == 413
    # A tiny PNG whose header claims 100000 x 100000 pixels is refused before decoding.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = (
        png[:8]
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + png[33:]
    )
    err = _status(lambda: decode_request(bomb, "image/png"))
    assert err.status == 413 and "100000x100000" in str(err)


def test_error_mapping():
    assert error_status(RequestError(415, "x")) == (415, "x")
    assert error_status(TileSizeError("too big"))[0] == 413
    assert error_status(InputError("bad"))[0] == 400
    assert error_status(NonFiniteOutputError("nan"))[0] == 500
    status, message = error_status(ZeroDivisionError("secret detail"))
    assert status == 500 and "secret" not in message


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path, _, _ = tinynet.export_net(tmp_path_factory.mktemp("serve"), batch=None, tile=(32, 48))
    return path


def _done(value) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(value)
    return future


def test_a_tile_output_does_not_depend_on_its_batch(artifact):
    """The property cross-request batching relies on: tiles computed together with other
    requests' tiles give the very bits they give alone."""
    core = ReplicaCore(artifact, ServeOptions(threads=1), submit=lambda t: None)
    try:
        rng = np.random.default_rng(3)
        tiles = [rng.random((3, 32, 48), dtype=np.float32) for _ in range(8)]
        together = core.run_batch(tiles)
        for k, tile in enumerate(tiles):
            alone = core.run_batch([tile])[0]
            assert np.array_equal(alone, together[k]), f"tile {k} differs in a batch"
        mixed = core.run_batch([tiles[5], tiles[0], tiles[5]])
        assert np.array_equal(mixed[1], together[0]) and np.array_equal(mixed[2], together[5])
    finally:
        core.close()


def test_replica_restores_as_restorekit_open(artifact):
    """ReplicaCore through its tile queue (each tile computed alone here) gives the bytes
    restorekit.open gives, for every layout the server accepts."""
    box: dict[str, ReplicaCore] = {}
    core = ReplicaCore(
        artifact, ServeOptions(threads=1), submit=lambda t: _done(box["c"].run_batch([t])[0])
    )
    box["c"] = core
    rng = np.random.default_rng(5)
    images = [
        (rng.integers(0, 256, (45, 70, 3), dtype=np.uint8), "png"),
        (rng.integers(0, 256, (33, 20), dtype=np.uint8), "png"),
        (rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "png"),
        (rng.integers(0, 65536, (40, 41, 3), dtype=np.uint16), "tiff"),
    ]
    try:
        with restorekit.open(artifact, threads=1) as model:
            for image, fmt in images:
                done = core.restore(decode_request(encode_image(image, "." + fmt), None))
                got = decode_image(done.body)
                expected = model.restore(image)
                assert got.dtype == expected.dtype and np.array_equal(got, expected)
                assert done.headers["X-Restorekit-Model"] == "tiny.test"
                h, w = image.shape[:2]
                assert done.headers["X-Restorekit-Size"] == f"{w}x{h}"
        assert core.health()["tiles_computed"] == core.engine_calls  # one tile per call here
    finally:
        core.close()


def test_bad_batch_option_is_refused(artifact):
    with pytest.raises(TileSizeError, match="outside the artifact's range"):
        ReplicaCore(artifact, ServeOptions(batch=9), submit=lambda t: None)


def test_options_refused_before_ray_starts(artifact, tmp_path):
    from restorekit.cluster.serve import _check_cpus, check_options

    with pytest.raises(InputError, match="below --replicas"):
        check_options(artifact, ServeOptions(replicas=3, max_replicas=2))
    with pytest.raises(InputError, match="artifact not found"):
        check_options(tmp_path / "missing.onnx", ServeOptions())

    class TwoCpuCluster:  # what ray.cluster_resources() reports on this 2-core machine
        @staticmethod
        def cluster_resources() -> dict:
            return {"CPU": 2.0}

    _check_cpus(TwoCpuCluster, ServeOptions(replicas=2, threads=1))
    with pytest.raises(InputError, match="need 4 CPUs; the Ray cluster has 2"):
        _check_cpus(TwoCpuCluster, ServeOptions(replicas=2, threads=2))


def test_bytes_after_the_end_are_not_truncation():
    """Some cameras and editors append data after a JPEG's end marker or a PNG's IEND."""
    for suffix in (".png", ".jpg"):
        body = encode_image(RGB, suffix) + b"trailing vendor data"
        got = decode_request(body, None)
        assert got.image.shape == RGB.shape


def test_tiles_gathered_while_the_engine_is_busy_go_together():
    """What Ray's @serve.batch hands over in small batches while the engine is busy is computed
    in full engine batches, in arrival order, each output for its own tile."""
    import asyncio
    import time

    from restorekit.cluster.serve import TileCombiner

    calls: list[list[float]] = []

    def engine(tiles):
        calls.append([float(t[0]) for t in tiles])
        time.sleep(0.2)
        if any(t[0] < 0 for t in tiles):
            raise RuntimeError("engine failed")
        return [t * 2 for t in tiles]

    async def scenario():
        combiner = TileCombiner(engine, 4, concurrent.futures.ThreadPoolExecutor(1))
        first = asyncio.create_task(combiner.compute([np.array([0.0])]))
        await asyncio.sleep(0.05)  # the engine is busy with tile 0 now
        rest = [asyncio.create_task(combiner.compute([np.array([float(k)])])) for k in range(1, 6)]
        outs = await asyncio.gather(first, *rest)
        failing = asyncio.create_task(combiner.compute([np.array([-1.0]), np.array([7.0])]))
        with pytest.raises(RuntimeError, match="engine failed"):
            await failing
        after = await combiner.compute([np.array([8.0])])  # the combiner goes on
        return outs, after

    outs, after = asyncio.run(scenario())
    assert [float(o[0][0]) for o in outs] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert calls[:3] == [[0.0], [1.0, 2.0, 3.0, 4.0], [5.0]]
    assert float(after[0][0]) == 16.0

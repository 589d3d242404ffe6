"""``restore-serve``: restore images over HTTP on Ray Serve, batching tiles across requests.

Routes (the server listens on 127.0.0.1 unless told otherwise):

* ``POST /restore``: the body is an image file (PNG, JPEG, TIFF, WebP, BMP); the answer is the
  restored image (PNG, or TIFF for TIFF; see :mod:`restorekit.cluster.payload`) with headers
  ``X-Restorekit-Model``, ``-Precision``, ``-Backend``, ``-Tiles`` and ``-Time-Ms``. A refused
  request gets a 4xx status and ``{"error": message, "status": code}``.
* ``GET /health``: ``200`` and JSON: artifact, model, precision, the answering replica's backend,
  the configured replicas, tiles per engine call and the request limits.

Each replica opens the artifact that fits its node (:func:`restorekit.cluster.placement.
choose_artifact`: an engine that fits the node's GPU and TensorRT, else the ONNX on ONNX Runtime).
A request's image is restored by the runtime's own :class:`~restorekit.runtime.restore.Restorer`
(tile plan, pixel conventions, blending, FP32 fallback) in a worker thread, over a backend that
hands each tile to a ``@serve.batch`` method: the tiles of every request in flight on the replica
queue there and go to the engine together, up to its batch size (:class:`TileCombiner` joins the
batches that gather while the engine is busy). A tile's output does not depend
on the batch it rode in (each tile is computed by the same per-sample kernels; the tests compare
responses with ``restorekit.open(...).restore`` byte for byte), so batching changes throughput,
never pixels.

Ray is imported only when a server starts (``pip install "restorekit[cluster]"``); the replica's
work is in :class:`ReplicaCore`, plain Python that the tests also drive without Ray.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.cluster.connect import ray_connection
from restorekit.cluster.payload import (
    ImageRequest,
    RequestLimits,
    check_body_size,
    check_content_length,
    decode_request,
    encode_response,
    error_body,
    error_status,
    format_for_content_type,
)
from restorekit.cluster.placement import Choice, candidate_artifacts, choose_artifact
from restorekit.errors import InputError, NonFiniteOutputError, TileSizeError, require
from restorekit.manifest import Manifest, read_manifest
from restorekit.runtime.artifact import backend_from_artifact
from restorekit.runtime.backend import Backend, IOSpec
from restorekit.runtime.ort_backend import OrtOptions
from restorekit.runtime.restore import Restorer, TileOptions
from restorekit.runtime.session import fallback_artifact
from restorekit.runtime.tiling import describe_tiles

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_BATCH_WAIT_MS = 5.0
# Requests one replica holds at once: enough that their tiles fill the engine's batch.
MAX_ONGOING_REQUESTS = 32
APP_NAME = "restorekit"


@dataclass(frozen=True)
class ServeOptions:
    """How ``restore-serve`` runs. ``None`` fields take the defaults.

    Attributes:
        replicas: replicas to start (default 1); with ``max_replicas`` the autoscaler's minimum.
        max_replicas: scale between ``replicas`` and this many by load (Ray Serve autoscaling).
        host: address to listen on (default ``127.0.0.1``; ``0.0.0.0`` for every interface).
        port: HTTP port (default 8000).
        threads: ONNX Runtime intra-op threads per replica (default: one per core); each replica
            reserves this many CPUs from Ray (default 1).
        max_request_mb: largest request body in MiB (default 50).
        max_pixels: largest image in pixels (default 64 MP).
        batch: tiles per engine call (default: the artifact's batch, its optimum for a dynamic
            batch); a static-batch engine runs exactly its own.
        batch_wait_ms: how long a partial batch waits for tiles of other requests (default 5).
        fallback: recompute NaN/Inf tiles of an FP16/INT8 artifact on the FP32 ONNX beside it
            (as ``restore-run``).
    """

    replicas: int | None = None
    max_replicas: int | None = None
    host: str | None = None
    port: int | None = None
    threads: int | None = None
    max_request_mb: float | None = None
    max_pixels: int | None = None
    batch: int | None = None
    batch_wait_ms: float | None = None
    fallback: bool = True

    @property
    def limits(self) -> RequestLimits:
        mb = self.max_request_mb
        return RequestLimits(None if mb is None else int(mb * 2**20), self.max_pixels)

    @property
    def min_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas

    @property
    def url(self) -> str:
        return f"http://{self.host or DEFAULT_HOST}:{self.port or DEFAULT_PORT}"


class TileQueue(Backend):
    """A backend that splits each batch into tiles and hands them to ``submit``, which returns a
    future of the tile's output (the replica's ``@serve.batch`` queue, where tiles of other
    requests join them). The :class:`Restorer` drives it as any backend.

    The next batch is sent before the current one's outputs are collected, so a lone request
    still fills the engine's batch; no further, because the tiler reuses its two batch buffers
    (and the FP32 fallback reads a batch's tiles when its output arrives). Trailing rows that
    repeat the row before them (a static batch's padding) are sent once.
    """

    name = "tile queue"

    def __init__(
        self, engine: Backend, submit: Callable[[np.ndarray], concurrent.futures.Future]
    ) -> None:
        super().__init__()
        self._engine = engine
        self._submit = submit

    def _activate(self) -> None:
        i, o = self._engine.input_spec, self._engine.output_spec
        self._in = IOSpec(i.name, (None, *i.shape[1:]), i.dtype)
        self._out = IOSpec(o.name, (None, *o.shape[1:]), o.dtype)

    def _deactivate(self) -> None:
        self._in = self._out = None

    def _send(self, batch: np.ndarray) -> tuple[list[concurrent.futures.Future], int]:
        rows = distinct = batch.shape[0]
        while distinct > 1 and np.array_equal(batch[distinct - 1], batch[distinct - 2]):
            distinct -= 1
        # Copies: the tiler refills this buffer two batches later.
        return [self._submit(np.array(batch[k])) for k in range(distinct)], rows

    @staticmethod
    def _collect(sent: tuple[list[concurrent.futures.Future], int]) -> np.ndarray:
        futures, rows = sent
        outs = [f.result() for f in futures]
        outs += [outs[-1]] * (rows - len(outs))
        return np.stack(outs)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._collect(self._send(batch))

    def _infer_many(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        pending = None
        for batch in batches:
            sent = self._send(batch)
            if pending is not None:
                yield self._collect(pending)
            pending = sent
        if pending is not None:
            yield self._collect(pending)


class TileCombiner:
    """Runs queued tiles through the engine in calls of up to ``batch``, whenever it is free.

    ``@serve.batch`` forms a batch from the tiles that arrive within its wait window and only then
    waits for the engine to finish the batch before it, so under load the engine would run a queue
    of small batches formed while it was busy (measured: 1.04 tiles per call with four clients of
    one-tile requests). Every batch Ray forms is therefore handed to :meth:`compute`, which puts
    its tiles in one queue; whichever call holds the engine runs the queue's first ``batch`` tiles,
    FIFO, until its own are done: the tiles that gathered while the engine was busy go together.

    Args:
        run_batch: computes a list of tiles in one engine call (:meth:`ReplicaCore.run_batch`).
        batch: tiles per engine call.
        executor: where ``run_batch`` runs (one thread: the event loop stays free meanwhile).
    """

    def __init__(
        self,
        run_batch: Callable[[list[np.ndarray]], list[np.ndarray]],
        batch: int,
        executor: concurrent.futures.Executor,
    ) -> None:
        self._run_batch = run_batch
        self.batch = batch
        self._executor = executor
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._engine = asyncio.Lock()

    async def compute(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """The outputs of ``tiles``, in order (computed with whatever else is queued).

        Raises:
            Exception: what the engine raised for the call that held one of these tiles.
        """
        loop = asyncio.get_running_loop()
        mine = [loop.create_future() for _ in tiles]
        self._queue.extend(zip(tiles, mine, strict=True))
        async with self._engine:
            while not all(f.done() for f in mine):
                take = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                try:
                    outs = await loop.run_in_executor(
                        self._executor, self._run_batch, [tile for tile, _ in take]
                    )
                except Exception as exc:  # every tile of the call fails, its request answers 500
                    for _, future in take:
                        future.set_exception(exc)
                    continue
                for (_, future), out in zip(take, outs, strict=True):
                    future.set_result(out)
        failed = [f.exception() for f in mine]  # retrieves every one (asyncio logs the others)
        for exc in failed:
            if exc is not None:
                raise exc
        return [f.result() for f in mine]


@dataclass(frozen=True)
class Restoration:
    """A response: the encoded image, its media type and the headers describing the work."""

    body: bytes
    media_type: str
    headers: dict[str, str]


class ReplicaCore:
    """One replica's work, without Ray: the chosen artifact open on its backend, tiles batched
    through ``submit``, requests decoded, restored and encoded.

    Args:
        artifact: the artifact the user named (the replica may choose the ONNX beside an engine
            that does not fit its node, see :func:`choose_artifact`).
        options: the server's options.
        submit: queues one tile (C, th, tw) for the engine and returns the future of its output;
            :meth:`run_batch` is what must compute the queued tiles.
        choice: the artifact to open; default: chosen for this node.

    Raises:
        InputError, ManifestError: the artifact cannot be opened here.
        TileSizeError: ``options.batch`` does not fit the artifact.
    """

    def __init__(
        self,
        artifact: str | Path,
        options: ServeOptions,
        submit: Callable[[np.ndarray], concurrent.futures.Future],
        choice: Choice | None = None,
    ) -> None:
        self.artifact = Path(artifact)
        self.options = options
        self.choice = choice or choose_artifact(candidate_artifacts(artifact))
        ort = OrtOptions(provider=self.choice.provider or "cpu", threads=options.threads)
        self.engine, self.manifest = backend_from_artifact(
            self.choice.path, self.choice.backend, ort, batch=options.batch
        )
        self._fallback: Backend | None = None
        self.engine_calls = self.tiles_computed = self.largest_batch = 0
        fallback = fallback_artifact(
            self.choice.path, self.manifest, None if options.fallback else False
        )
        self.engine.__enter__()
        try:
            if fallback is not None:
                self._fallback, _ = backend_from_artifact(fallback, None, ort, batch=1)
                self._fallback.__enter__()
            self.batch, self._min_batch, self._static = _engine_batch(
                self.engine, self.manifest, options.batch
            )
            self._queue = TileQueue(self.engine, submit).__enter__()
            self.restorer = Restorer(
                self._queue, self.manifest, TileOptions(batch=self.batch), self._fallback
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for backend in (self._fallback, self.engine):
            if backend is not None and backend.is_open:
                backend.__exit__(None, None, None)

    def run_batch(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """Compute queued tiles in one engine call (padded to a static or minimum batch)."""
        n = len(tiles)
        size = self._static or max(n, self._min_batch)
        batch = np.stack(tiles + [tiles[-1]] * (size - n))
        out = self.engine.infer(batch)
        # Counted on the one engine thread; /health shows them (a largest batch above the tiles
        # of any one request is tiles of several requests computed together).
        self.engine_calls += 1
        self.tiles_computed += n
        self.largest_batch = max(self.largest_batch, n)
        return [out[k] for k in range(n)]

    def restore(self, request: ImageRequest) -> Restoration:
        """Restore a decoded request and encode the response.

        Raises:
            NonFiniteOutputError: NaN/Inf in the output that no fallback repaired.
            InputError, TileSizeError: the image does not suit the model.
        """
        started = time.perf_counter()
        result = self.restorer.restore(request.image)
        if result.nonfinite:
            raise NonFiniteOutputError(
                f"{self.manifest.model}: NaN/Inf in the model output: "
                f"{describe_tiles(result.nonfinite, 3)}; serve the FP32 artifact"
            )
        body, media_type = encode_response(result.image, request.format)
        headers = self.describe() | {
            "X-Restorekit-Tiles": str(result.tiles),
            "X-Restorekit-Size": f"{request.image.shape[1]}x{request.image.shape[0]}",
            "X-Restorekit-Time-Ms": f"{(time.perf_counter() - started) * 1e3:.1f}",
        }
        if result.repaired:
            headers["X-Restorekit-Repaired-Tiles"] = str(len(result.repaired))
        return Restoration(body, media_type, headers)

    def describe(self) -> dict[str, str]:
        """Response headers naming the model, precision and backend."""
        return {
            "X-Restorekit-Model": self.manifest.model,
            "X-Restorekit-Precision": self.manifest.precision.precision,
            "X-Restorekit-Backend": self.choice.describe(),
        }

    def health(self, replica: str = "") -> dict[str, Any]:
        """The ``GET /health`` document."""
        o = self.options
        replicas: Any = o.min_replicas
        if o.max_replicas is not None and o.max_replicas > o.min_replicas:
            replicas = {"min": o.min_replicas, "max": o.max_replicas}
        limits = o.limits
        return {
            "status": "ok",
            "artifact": self.artifact.name,
            "model": self.manifest.model,
            "precision": self.manifest.precision.precision,
            "backend": self.choice.describe(),
            "replica": replica,
            "host": self.choice.host,
            "replicas": replicas,
            "tiles_per_call": self.batch,
            "max_request_bytes": limits.bytes,
            "max_pixels": limits.pixels,
            "engine_calls": self.engine_calls,
            "tiles_computed": self.tiles_computed,
            "largest_batch": self.largest_batch,
        }


def _engine_batch(engine: Backend, manifest: Manifest, wanted: int | None) -> tuple[int, int, int]:
    """(tiles per engine call, smallest batch the engine takes, static batch or 0).

    Raises:
        TileSizeError: ``wanted`` is outside what the artifact runs.
    """
    static = engine.input_spec.static_batch
    rng = manifest.batch
    if static is not None:
        if wanted is not None and wanted != static:
            raise TileSizeError(
                f"this artifact runs batches of exactly {static}; use --batch {static} or export "
                "another batch size"
            )
        return static, static, static
    batch = rng.opt if wanted is None else wanted
    if batch < max(rng.min, 1) or batch > rng.max:
        raise TileSizeError(f"--batch {batch} is outside the artifact's range {rng.min}..{rng.max}")
    return batch, max(rng.min, 1), 0


def deployment(artifact: str | Path, options: ServeOptions) -> Any:
    """The Ray Serve application for ``artifact`` (what ``serve.run`` takes).

    Raises:
        MissingDependencyError: Ray Serve is not installed.
    """
    serve = require("ray.serve", "cluster", "restore-serve")
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    limits = options.limits
    wait_s = (options.batch_wait_ms or DEFAULT_BATCH_WAIT_MS) / 1e3

    class RestoreReplica:
        """One replica: a :class:`ReplicaCore` behind HTTP, tiles batched by ``@serve.batch``."""

        def __init__(self) -> None:
            self._loop: asyncio.AbstractEventLoop | None = None
            self._engine_thread = concurrent.futures.ThreadPoolExecutor(1, "restorekit-engine")
            self._requests = concurrent.futures.ThreadPoolExecutor(
                MAX_ONGOING_REQUESTS, "restorekit-request"
            )
            self.core = ReplicaCore(artifact, options, self._submit)
            self.combiner = TileCombiner(self.core.run_batch, self.core.batch, self._engine_thread)
            self.infer_tiles.set_max_batch_size(self.core.batch)
            try:
                self._replica = serve.get_replica_context().replica_id.unique_id
            except Exception:  # the context's shape differs across Ray releases; a label only
                self._replica = str(os.getpid())

        def _submit(self, tile: np.ndarray) -> concurrent.futures.Future:
            assert self._loop is not None, "tiles are queued only while a request runs"
            return asyncio.run_coroutine_threadsafe(self.infer_tiles(tile), self._loop)

        # Batches Ray forms while the engine is busy wait in the combiner, not in Ray's queue.
        @serve.batch(
            max_batch_size=8,
            batch_wait_timeout_s=wait_s,
            max_concurrent_batches=MAX_ONGOING_REQUESTS,
        )
        async def infer_tiles(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
            return await self.combiner.compute(tiles)

        async def __call__(self, request: Request) -> Response:
            self._loop = asyncio.get_running_loop()
            route = request.url.path.rstrip("/") or "/"
            if route == "/health" and request.method in ("GET", "HEAD"):
                return JSONResponse(self.core.health(self._replica))
            if route == "/restore":
                if request.method != "POST":
                    return _error(405, "POST the image file's bytes to /restore")
                return await self._restore(request)
            return _error(404, f"no route {route}: POST /restore, GET /health")

        async def _restore(self, request: Request) -> Response:
            try:
                content_type = request.headers.get("content-type")
                check_content_length(request.headers.get("content-length"), limits)
                format_for_content_type(content_type)  # 415 before reading the body
                body = bytearray()
                async for chunk in request.stream():
                    body += chunk
                    check_body_size(len(body), limits)
                loop = self._loop
                decoded = await loop.run_in_executor(
                    self._requests, decode_request, bytes(body), content_type, limits
                )
                del body
                done = await loop.run_in_executor(self._requests, self.core.restore, decoded)
            except Exception as exc:  # every failure becomes an answer; the replica serves on
                status, message = error_status(exc)
                if status >= 500:
                    import logging

                    logging.getLogger("ray.serve").exception("restore failed")
                return _error(status, message)
            return Response(done.body, media_type=done.media_type, headers=done.headers)

        def __del__(self) -> None:
            core = getattr(self, "core", None)
            if core is not None:
                core.close()

    def _error(status: int, message: str) -> Response:
        return JSONResponse(error_body(status, message), status_code=status)

    config: dict[str, Any] = {
        "name": "restore",
        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
        "ray_actor_options": {"num_cpus": options.threads or 1},
    }
    if options.max_replicas is not None and options.max_replicas > options.min_replicas:
        config["autoscaling_config"] = {
            "min_replicas": options.min_replicas,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": 4,
        }
    else:
        config["num_replicas"] = options.min_replicas
    return serve.deployment(RestoreReplica, **config).bind()


def check_options(artifact: str | Path, options: ServeOptions) -> Manifest:
    """Refuse bad options before Ray starts.

    Raises:
        InputError: a missing artifact or an impossible option.
        ManifestError: no readable manifest.
    """
    candidate_artifacts(artifact)  # raises for a missing or unknown file
    manifest = read_manifest(artifact)
    if options.min_replicas < 1:
        raise InputError(f"--replicas must be >= 1, got {options.min_replicas}")
    if options.max_replicas is not None and options.max_replicas < options.min_replicas:
        raise InputError(
            f"--max-replicas {options.max_replicas} is below --replicas {options.min_replicas}"
        )
    if options.max_request_mb is not None and options.max_request_mb <= 0:
        raise InputError("--max-request-mb must be positive")
    port = options.port or DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be 1..65535, got {port}")
    return manifest


def serve_artifact(
    artifact: str | Path,
    options: ServeOptions,
    *,
    address: str | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``artifact`` until Ctrl-C or SIGTERM, then shut the server and Ray down.

    Args:
        artifact: an ``.onnx`` or ``.engine`` with its manifest (and, for an engine, the ONNX
            beside it for nodes that cannot run it).
        options: the server's options.
        address: a running Ray cluster to join; default: a local one on this machine.
        ready: called with the server's URL once every replica is up.

    Raises:
        InputError: a bad option, or more replicas than the cluster has CPUs for.
        MissingDependencyError: Ray Serve is not installed.
        ClusterError: the address does not answer or Ray cannot start.
    """
    check_options(artifact, options)
    artifact = Path(artifact).resolve()  # replicas may run in another working directory
    serve = require("ray.serve", "cluster", "restore-serve")
    previous = None
    try:
        with ray_connection(address) as ray:
            # Set after Ray starts: its driver installs a native SIGTERM handler that ends the
            # process at once, leaving Ray's agents behind; ours stops Serve and Ray first.
            previous = signal.signal(signal.SIGTERM, _interrupt)
            try:
                _check_cpus(ray, options)
                serve.start(
                    http_options={
                        "host": options.host or DEFAULT_HOST,
                        "port": options.port or DEFAULT_PORT,
                    },
                    logging_config={"log_level": "WARNING", "enable_access_log": False},
                )
                serve.run(deployment(artifact, options), name=APP_NAME, route_prefix="/")
                if ready is not None:
                    ready(options.url)
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass  # Ctrl-C or SIGTERM: the normal way to stop a server
            finally:
                # On a cluster joined by address, remove the application and Serve's actors;
                # the embedded instance goes down whole with the connection (ray.shutdown),
                # without Serve's graceful drain, which on a loaded machine took minutes.
                if address is not None:
                    with contextlib.suppress(Exception):  # Serve never started: nothing to stop
                        serve.shutdown()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_cpus(ray: Any, options: ServeOptions) -> None:
    """Refuse replicas the cluster cannot place (Serve would wait for them for ever)."""
    cpus = ray.cluster_resources().get("CPU", 0)
    need = options.min_replicas * (options.threads or 1)
    if need > cpus:
        raise InputError(
            f"{options.min_replicas} replicas of {options.threads or 1} CPU each need {need} "
            f"CPUs; the Ray cluster has {cpus:g}: use fewer --replicas or --threads, or add nodes"
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


__all__ = [
    "ReplicaCore",
    "Restoration",
    "ServeOptions",
    "TileCombiner",
    "TileQueue",
    "check_options",
    "deployment",
    "serve_artifact",
]

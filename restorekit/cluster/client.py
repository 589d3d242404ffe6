"""``restore-run --server URL INPUT... -o OUT``: send images to a running ``restore-serve`` and
write what comes back, as ``restore-run`` would have written it locally.

Inputs are expanded as ``restore-run`` expands them (files, folders, globs) and sent by a few
threads at once (each with its own keep-alive connection; the standard library's ``http.client``,
no extra dependency). A response in the format of the output file's suffix is written as it came;
otherwise (a JPEG input comes back as PNG) it is re-encoded to that suffix, so names and formats
are those of a local run. Outputs are written atomically; a file the server refuses is reported
with the server's message and the job goes on.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from restorekit.cluster.payload import FORMATS, sniff_format
from restorekit.errors import InputError
from restorekit.files import write_bytes_atomic
from restorekit.runtime.imageio import decode_image, write_image
from restorekit.runtime.jobs import JobSummary
from restorekit.runtime.media import Source, expand_sources, output_path

DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT_S = 300.0
# Suffix -> format of the files the response may be written as without re-encoding.
_SUFFIX_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}


@dataclass(frozen=True)
class ClientOptions:
    """How ``restore-run --server`` talks to the server. ``None`` fields take the defaults.

    Attributes:
        concurrency: requests in flight at once (default 4).
        timeout_s: seconds to wait for one response (default 300).
    """

    concurrency: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class ServerReply:
    """A server's answer to one request."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]

    @property
    def message(self) -> str:
        """The error message of a JSON error answer, else a short description."""
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            text = self.body[:200].decode("utf-8", "replace").strip()
            return text or "no message"


class ServerClient:
    """Requests to one ``restore-serve`` server, one keep-alive connection per thread.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/restore`` is accepted).
        timeout_s: seconds to wait for a response.

    Raises:
        InputError: the URL is not ``http://host[:port]``.
    """

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise InputError(
                f"--server {url!r}: expected http://HOST:PORT of a restore-serve server"
            )
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/").removesuffix("/restore")
        self.timeout_s = timeout_s
        self._local = threading.local()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base}"

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def request(
        self, method: str, route: str, body: bytes | None = None, content_type: str | None = None
    ) -> ServerReply:
        """Send one request; a dropped keep-alive connection is reopened once.

        Raises:
            OSError: the server cannot be reached.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self.base + route, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ConnectionError(f"{self.url}: {exc}") from exc
                continue
            return ServerReply(
                resp.status,
                data,
                resp.getheader("Content-Type", ""),
                {k.lower(): v for k, v in resp.getheaders()},
            )
        raise AssertionError("unreachable")

    def health(self) -> dict:
        """The server's ``/health`` document.

        Raises:
            InputError: no restore-serve answers at this URL.
        """
        try:
            reply = self.request("GET", "/health")
            doc = json.loads(reply.body) if reply.status == 200 else None
        except (OSError, ValueError) as exc:
            raise InputError(
                f"no restore-serve server at {self.url} ({exc}); start one with "
                "`restore-serve ARTIFACT --port PORT`"
            ) from exc
        if not isinstance(doc, dict) or "model" not in doc:
            raise InputError(
                f"{self.url}/health answered {reply.status}, not as restore-serve does; check "
                "the --server URL"
            )
        return doc

    def restore(self, data: bytes) -> ServerReply:
        """POST an image file's bytes to ``/restore``.

        Raises:
            OSError: the server cannot be reached.
        """
        fmt = sniff_format(data)
        media = FORMATS[fmt][1] if fmt else "application/octet-stream"
        return self.request("POST", "/restore", data, media)


def restore_via_server(
    url: str,
    inputs: list[str],
    output: str | Path,
    *,
    options: ClientOptions | None = None,
    progress: bool = True,
) -> JobSummary:
    """Restore image inputs on a ``restore-serve`` server into ``output`` (a file for one image,
    else a folder), as ``restore-run`` would locally.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        inputs: image files, folders or globs.
        output: target file or folder.
        options: concurrency and timeout.
        progress: show a progress bar.

    Returns:
        The job's summary; ``failures`` holds each refused or failed input with the reason
        (for a refused one, the server's status and message).

    Raises:
        InputError: no server at ``url``, or nothing to restore.
    """
    options = options or ClientOptions()
    client = ServerClient(url, options.timeout_s or DEFAULT_TIMEOUT_S)
    client.health()  # fail fast, with the fix, when nothing is listening
    output = Path(output)
    summary = JobSummary()
    sources, missing = expand_sources(inputs)
    summary.failures += missing
    images = [s for s in sources if s.kind == "image"]
    summary.failures += [
        (s.location, "restore-serve takes images; restore videos and cameras locally with "
         "`restore-run ARTIFACT`")
        for s in sources if s.kind != "image"
    ]  # fmt: skip
    if not images:
        detail = "; ".join(f"{i}: {r}" for i, r in summary.failures)
        raise InputError(f"no images to restore ({detail})")
    single = len(sources) == 1
    started = time.perf_counter()
    with ThreadPoolExecutor(options.concurrency or DEFAULT_CONCURRENCY) as pool:
        futures = {
            pool.submit(_restore_one, client, source, output, single): source for source in images
        }
        bar = tqdm(total=len(images), desc="files", unit="file", disable=not progress or single)
        with bar:
            for future in as_completed(futures):
                source = futures[future]
                try:
                    target, megapixels = future.result()
                except (InputError, OSError) as exc:
                    summary.failures.append((source.location, str(exc)))
                else:
                    summary.written.append(target)
                    summary.images += 1
                    summary.megapixels += megapixels
                bar.update(1)
    summary.seconds = time.perf_counter() - started
    order = {s.location: k for k, s in enumerate(sources)}
    summary.failures.sort(key=lambda f: order.get(f[0], -1))
    return summary


def _restore_one(
    client: ServerClient, source: Source, output: Path, single: bool
) -> tuple[Path, float]:
    """Send one file and write the answer; returns (target, input megapixels).

    Raises:
        InputError: the server refused the file (its message) or the answer cannot be written.
        OSError: the file cannot be read or the server reached.
    """
    data = source.path.read_bytes()
    reply = client.restore(data)
    if reply.status != 200:
        raise InputError(f"server answered {reply.status}: {reply.message}")
    target = output_path(source.path, output, single=single)
    got = sniff_format(reply.body)
    if got is not None and _SUFFIX_FORMATS.get(target.suffix.lower()) == got:
        write_bytes_atomic(target, reply.body)
    else:  # e.g. a JPEG input: the server answers PNG, the output is named .jpg
        write_image(target, decode_image(reply.body, f"the server's answer for {source.path}"))
    w, _, h = reply.headers.get("x-restorekit-size", "0x0").partition("x")
    return target, int(w or 0) * int(h or 0) / 1e6


__all__ = ["ClientOptions", "ServerClient", "ServerReply", "restore_via_server"]

"""Reaching Ray: join a running cluster at an address, or start a quiet one on this machine.

``address`` follows Ray's forms: ``None`` starts a local instance (the embedded default: bound to
127.0.0.1, no dashboard, Ray's own logs kept off the console); ``"auto"`` joins the cluster
started on this machine with ``ray start``; ``"host:port"`` joins a head node's GCS (the driver
runs here and talks to every node); ``"ray://host:port"`` goes through Ray Client. An address that
does not answer is a :class:`ClusterError` that says how to start a head, found before Ray's own
connection timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from restorekit.errors import ClusterError, require

HEAD_COMMAND = "ray start --head --node-ip-address 127.0.0.1 --port 6379"
# Ray's driver-side chatter (token-auth notice, execution plans, "finished in N s", "progress
# bars disabled") would interleave with our own progress bar; failures reach the user as
# ClusterError or as per-item records, so only Ray's errors are let through.
_QUIET_LOGGERS = ("ray", "ray.data", "ray.serve")


def require_ray(purpose: str) -> Any:
    """Import Ray, or raise the error that names the ``cluster`` extra.

    Raises:
        MissingDependencyError: Ray is not installed.
    """
    require("ray.data", "cluster", purpose)
    return require("ray", "cluster", purpose)


def split_address(address: str) -> tuple[str, int] | None:
    """``"ray://h:10001"`` / ``"h:6379"`` -> (host, port); ``"auto"`` and other forms -> None."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``address`` (Ray itself retries for a minute or more).

    Raises:
        ClusterError: the host:port does not accept connections, or the address is malformed.
    """
    if address == "auto":
        return
    hostport = split_address(address)
    if hostport is None:
        raise ClusterError(
            f"cannot read the Ray address {address!r}: give host:port (a head's GCS, e.g. "
            "127.0.0.1:6379), ray://host:10001 (Ray Client) or auto"
        )
    try:
        with socket.create_connection(hostport, timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(unreachable_message(address, str(exc))) from exc


def unreachable_message(address: str, reason: str) -> str:
    return (
        f"cannot reach a Ray cluster at {address} ({reason}). Start a head node there with "
        f"`{HEAD_COMMAND}` (and `ray start --address HEAD:6379` on each further node), or leave "
        "out the address to run on a Ray instance started on this machine"
    )


@contextlib.contextmanager
def ray_connection(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to Ray for the duration of the block and yield the ``ray`` module.

    An existing connection (the caller's own ``ray.init``) is used as it is and left open;
    otherwise the connection made here is shut down at the end (a local instance stops with it).

    Args:
        address: see the module docstring; ``None`` starts a local instance.
        num_cpus: CPUs a local instance offers (default: every core); ignored with an address.

    Raises:
        MissingDependencyError: Ray is not installed.
        ClusterError: the address does not answer or Ray cannot start.
    """
    ray = require_ray("restoring on a Ray cluster (--cluster)")
    if ray.is_initialized():
        yield ray
        return
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # workers report per item; their logs stay in Ray's session dir
        "logging_level": logging.WARNING,
    }
    hostport = split_address(address) if address else None
    loopback = address is None or (hostport is not None and _is_loopback(hostport[0]))
    with _single_host(ray, loopback):
        try:
            if address is None:
                ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                         _system_config=_embedded_system_config(), **options)  # fmt: skip
            else:
                check_reachable(address)
                ray.init(address=address, **options)
        except ClusterError:
            raise
        except Exception as exc:  # Ray raises bare Exception too ("node timed out during startup")
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if address is None:
                raise ClusterError(f"cannot start a local Ray instance: {detail}") from exc
            raise ClusterError(unreachable_message(address, detail)) from exc
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False  # ours shows items/s and MP/s
        data_context.enable_auto_log_stats = False
        try:
            yield ray
        finally:
            ray.shutdown()


def _embedded_system_config() -> dict[str, Any]:
    """Ray settings of the local instance started for one job.

    Ray starts workers at niceness 15 so that they yield to everything else on a node; the
    embedded instance exists only to run the command the user started, so its workers get the
    command's own priority (a worker beside four low-priority jobs: 2.15 items/s at the
    command's niceness, 1.41 at 15). ``RAY_worker_niceness`` in the environment still decides.
    """
    if "RAY_worker_niceness" in os.environ:
        return {}
    return {"worker_niceness": os.nice(0)}


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _single_host(ray: Any, loopback: bool) -> Iterator[None]:
    """Keep a driver (and the embedded instance) on 127.0.0.1 when the cluster is there.

    Ray replaces a loopback address by the machine's outward IP before connecting
    (``services.resolve_ip_for_localhost``), so a driver cannot reach a head started with
    ``--node-ip-address 127.0.0.1``, and the embedded instance would listen on the outward IP.
    Ray keeps loopback addresses when its multi-node switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
    read once at import into ``ray_constants.ENABLE_RAY_CLUSTER``) is off, which is right for a
    driver whose cluster is on this very host; it is restored afterwards.
    """
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if not loopback or constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    before = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before


__all__ = [
    "HEAD_COMMAND",
    "check_reachable",
    "ray_connection",
    "require_ray",
    "split_address",
    "unreachable_message",
]

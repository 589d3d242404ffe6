"""The embedded Ray instance (``--cluster`` without an address), started on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest.importorskip("ray")
pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def ray_tmp(monkeypatch):
    folder = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_embedded_workers_run_at_the_commands_priority(ray_tmp, monkeypatch):
    """Ray's own default starts workers at niceness 15, where any other job on the machine takes
    their CPU; the instance started for one command gives them that command's niceness."""
    from restorekit.cluster.connect import ray_connection

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    with ray_connection(num_cpus=1) as ray:

        @ray.remote(num_cpus=1)
        def niceness() -> int:
            return os.nice(0)

        assert ray.get(niceness.remote()) == os.nice(0)
    assert not ray.is_initialized()

"""Fixtures shared by the TensorRT tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    # Timing caches go to a per-test folder, never the user's ~/.cache.
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))

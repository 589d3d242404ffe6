"""Timing helpers shared by the benchmarks: a steady-state malloc for PyTorch eager, and medians
(``median_seconds``, the same one ``restore-export`` times the INT8 CPU graph with).

Benchmarks run as ``python benchmarks/NAME.py``, so this directory is on ``sys.path`` and they
import this module as ``timing``.
"""

from __future__ import annotations

import ctypes

from restorekit.export.cpu_speed import median_seconds

__all__ = ["keep_freed_memory", "median_seconds"]


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the system.

    By default glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh pages and
    unmaps them when freed, so every PyTorch eager run pays page faults on its big tensors again;
    the threshold also moves with what the process freed before. The demo GRL's eager forward
    took almost twice as long that way, and which of the two a benchmark saw depended on what ran
    before it in the process (figures: benchmarks/README.md, timing.py). ONNX Runtime keeps its
    own arena and is not affected. Keeping freed memory gives PyTorch its best steady state, so
    the ratios compare against the fastest eager baseline.
    Returns False where this is not glibc (the benchmark then says so).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, never = -1, -3, 2**31 - 1
        return bool(libc.mallopt(m_mmap_threshold, never) and libc.mallopt(m_trim_threshold, never))
    except (OSError, AttributeError):
        return False

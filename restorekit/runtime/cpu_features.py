"""What this CPU can compute fast: the instruction-set flags that decide OpenVINO's precisions.

Two sources, because each can miss what the other sees: the kernel's ``/proc/cpuinfo`` flags (what
the hardware and hypervisor expose) and OpenVINO's own ``OPTIMIZATION_CAPABILITIES`` (what its CPU
plugin will use: ``BF16`` only where it has bf16 kernels for this CPU). BF16 is worth running only
where both agree: AMX-BF16 or AVX512-BF16 in the flags and ``BF16`` in OpenVINO's list. Elsewhere
OpenVINO ignores the bf16 hint and computes FP32 (measured on an AVX2-only AMD EPYC: the compiled
model reports ``f32`` and its output is bit-identical to FP32; docs/runtime.md).

INT8 without VNNI (AVX512-VNNI or AVX-VNNI) multiplies u8 x s8 pairs with VPMADDUBSW into 16-bit
sums, which saturate for full-range 8-bit weights; 7-bit weights cannot saturate there
(docs/runtime.md, "OpenVINO INT8").
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Flags (as /proc/cpuinfo spells them) with native bf16 arithmetic that OpenVINO's CPU plugin uses.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Flags with dot products of 8-bit values into 32-bit sums (no 16-bit intermediate saturation).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Flags worth naming in messages and keying timings by.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", *VNNI_FLAGS, *BF16_FLAGS)


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and the instruction-set flags that matter here.

    Attributes:
        model: ``model name`` from ``/proc/cpuinfo`` (``unknown`` elsewhere).
        flags: the :data:`REPORTED_FLAGS` this CPU has.
        cores: logical CPUs listed in ``/proc/cpuinfo``.
    """

    model: str
    flags: tuple[str, ...]
    cores: int

    @property
    def bf16(self) -> bool:
        """Native bf16 arithmetic (AMX-BF16 or AVX512-BF16)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        """8-bit dot products without 16-bit saturation (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return any(f in self.flags for f in VNNI_FLAGS)

    def describe(self) -> str:
        """``AMD EPYC (avx2, fma; no amx_bf16/avx512_bf16)`` - for messages."""
        have = ", ".join(self.flags) or "none of " + "/".join(REPORTED_FLAGS)
        missing = [f for f in BF16_FLAGS if f not in self.flags]
        lacks = f"; no {'/'.join(missing)}" if missing else ""
        return f"{self.model} ({have}{lacks})"

    def key(self) -> str:
        """A short stable key of model name and flags (timings are valid for this CPU only)."""
        text = f"{self.model}|{','.join(self.flags)}|{self.cores}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features listed in the text of a ``/proc/cpuinfo``."""
    model, flags, cores = "unknown", set(), 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "processor":
            cores += 1
        elif name == "model name" and model == "unknown":
            model = value.strip() or "unknown"
        elif name == "flags" and not flags:
            flags = set(value.split())
    return CpuFeatures(model, tuple(f for f in REPORTED_FLAGS if f in flags), max(cores, 1))


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's CPU features (from ``/proc/cpuinfo``; ``unknown`` without one)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuFeatures("unknown", (), 1)

"""Facts about the CUDA device an engine is built for or run on: name, compute capability, memory,
and whether it is a Jetson (unified memory, JetPack's TensorRT).

Torch-free; the CUDA bindings are imported lazily. :func:`query_device` asks cuda-python, then
PyCUDA, then ``nvidia-smi``; callers and tests pass a :class:`DeviceFacts` of their own instead
where they need to.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from restorekit.errors import MissingDependencyError

GIB = 1 << 30


@dataclass(frozen=True)
class DeviceFacts:
    """One GPU as TensorRT sees it.

    Attributes:
        name: marketing name, e.g. ``"NVIDIA GeForce RTX 4090"`` or ``"Orin"``.
        compute_capability: ``"8.9"``.
        total_memory: bytes of device memory (on a Jetson: the shared system memory), if known.
        jetson: an integrated Tegra GPU (unified memory, JetPack).
    """

    name: str
    compute_capability: str
    total_memory: int | None = None
    jetson: bool = False

    @property
    def sm(self) -> str:
        """``"8.7"`` -> ``"sm_87"``."""
        return "sm_" + self.compute_capability.replace(".", "")

    @property
    def cc_tuple(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


def is_jetson(root: Path = Path("/")) -> bool:
    """Whether this machine is a Jetson (Tegra SoC), from the files JetPack and L4T leave behind.

    Args:
        root: filesystem root to look under (tests point it at a temporary folder).
    """
    if (root / "etc/nv_tegra_release").is_file():
        return True
    model = root / "proc/device-tree/model"
    try:
        if "jetson" in model.read_text(errors="ignore").lower():
            return True
    except OSError:
        pass
    return root == Path("/") and platform.machine() == "aarch64" and "tegra" in platform.release()


def query_device(index: int = 0) -> DeviceFacts:
    """Describe CUDA device ``index`` using whichever CUDA binding is installed.

    Raises:
        MissingDependencyError: no CUDA binding and no ``nvidia-smi`` could describe a GPU.
    """
    jetson = is_jetson()
    for probe in (_from_cuda_python, _from_pycuda, _from_nvidia_smi):
        try:
            facts = probe(index)
        except Exception:  # a half-installed binding must not hide the next one
            facts = None
        if facts is not None:
            name, cc, memory = facts
            return DeviceFacts(name, cc, memory, jetson)
    raise MissingDependencyError(
        "cannot find a CUDA GPU to describe (tried cuda-python, PyCUDA and nvidia-smi). Engines "
        "are built on the device that will run them: install the CUDA driver and "
        "pip install 'restorekit[tensorrt]' (desktop), or use JetPack's python3-pycuda (Jetson)."
    )


def _from_cuda_python(index: int) -> tuple[str, str, int] | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6 spells it this way
    err, prop = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        return None
    name = prop.name.decode(errors="ignore") if isinstance(prop.name, bytes) else str(prop.name)
    return name.rstrip("\x00"), f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem)


def _from_pycuda(index: int) -> tuple[str, str, int] | None:
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(index)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}", int(dev.total_memory())


def _from_nvidia_smi(index: int) -> tuple[str, str, int] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    out = subprocess.run(
        [exe, f"--id={index}", "--query-gpu=name,compute_cap,memory.total",
         "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip
    return parse_nvidia_smi(out)


def parse_nvidia_smi(text: str) -> tuple[str, str, int | None] | None:
    """Parse one ``name, compute_cap, memory.total`` line (MiB, or ``[N/A]`` on some boards)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 2 or not parts[1].replace(".", "").isdigit():
        return None
    memory = int(float(parts[2])) * (1 << 20) if len(parts) > 2 and _is_number(parts[2]) else None
    return parts[0], parts[1], memory


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

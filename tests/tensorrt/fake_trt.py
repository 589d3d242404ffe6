"""A stand-in ``tensorrt`` module for CPU tests of the engine builder, ONNX artifacts to feed it,
and the GPUs the tests build for.

The fake has only the names of the real TensorRT Python API (10.3 / 11.x, or 8.6 for the legacy
path) that the builder uses, with the same call shapes; it records every call so tests can check
what the builder asked TensorRT to do. A name the real release lacks is absent here too (e.g.
``BuilderFlag.FP16`` on 11.x), so using it raises ``AttributeError`` as it would on a device.
"""

from __future__ import annotations

import types
from pathlib import Path

from restorekit.files import file_sha256
from restorekit.manifest import BatchRange, Manifest, PrecisionPlan, TensorSpec, write_manifest
from restorekit.naming import onnx_name
from restorekit.tensorrt.device import DeviceFacts

GIB = 2**30
ORIN = DeviceFacts("Orin", "8.7", 64 * GIB, jetson=True)
RTX4090 = DeviceFacts("NVIDIA GeForce RTX 4090", "8.9", 24 * GIB)
T4 = DeviceFacts("Tesla T4", "7.5", 16 * GIB)

# What TensorRT logs when a build runs out of memory (no tactic fits, or an allocation fails).
OOM_TEXTS = [
    "[optimizer.cpp::computeCosts::3869] Error Code 10: Internal Error (Could not find any "
    "implementation for node /body/conv1/Conv.)",
    "Error Code 2: OutOfMemory (no further information)",
    "[defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)",
    "Requested amount of GPU memory (4294967296 bytes) could not be allocated. There may not be "
    "enough free memory for allocation to succeed.",
]


class FakeEnum:
    """A pybind11-style enum: members are attributes, listed in ``__members__``, with ``int()``."""

    def __init__(self, name: str, members: list[str]):
        self.__name__ = name
        self.__members__ = {m: FakeMember(name, m, i) for i, m in enumerate(members)}
        for m, value in self.__members__.items():
            setattr(self, m, value)


class FakeMember:
    def __init__(self, enum: str, name: str, value: int):
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"{self.enum}.{self.name}"


# Members in the order of the real enums (values matter only for 1 << value).
NETWORK_FLAGS = {
    "8.6": ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"],
    "10": ["EXPLICIT_BATCH", "STRONGLY_TYPED"],
    "11": ["STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"],
}
BUILDER_FLAGS = {
    "8.6": ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32", "VERSION_COMPATIBLE"],
    "10": ["FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "TF32", "VERSION_COMPATIBLE"],
    "11": ["DEBUG", "GPU_FALLBACK", "DISABLE_TIMING_CACHE", "TF32", "VERSION_COMPATIBLE"],
}
HW_LEVELS = {
    "8.6": ["NONE", "AMPERE_PLUS"],
    "10": ["NONE", "AMPERE_PLUS"],
    "11": ["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"],
}


def make_fake_trt(
    version: str = "10.3.0",
    *,
    parse_errors: tuple[str, ...] = (),
    build_errors: tuple[str, ...] = (),
    accept_cache: bool = True,
    phases: tuple[tuple[str, int], ...] = (("Building engine", 3),),
) -> types.ModuleType:
    """A fake ``tensorrt`` of ``version``; ``calls`` lists (name, args) in call order.

    Args:
        parse_errors: the parser fails with these descriptions.
        build_errors: ``build_serialized_network`` logs these as errors and returns ``None``.
        accept_cache: ``set_timing_cache`` accepts a non-empty cache.
        phases: (name, steps) the build reports to a progress monitor.
    """
    major = "11" if version.startswith("11") else "10" if version.startswith("10") else "8.6"
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple[str, tuple]] = []
    trt.calls = calls
    trt.NetworkDefinitionCreationFlag = FakeEnum(
        "NetworkDefinitionCreationFlag", NETWORK_FLAGS[major]
    )
    trt.BuilderFlag = FakeEnum("BuilderFlag", BUILDER_FLAGS[major])
    trt.MemoryPoolType = FakeEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
    trt.HardwareCompatibilityLevel = FakeEnum("HardwareCompatibilityLevel", HW_LEVELS[major])

    class ILogger:
        Severity = FakeEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

        def __init__(self):
            calls.append(("ILogger.__init__", ()))

    trt.ILogger = ILogger

    if major != "8.6":  # IProgressMonitor arrived with TensorRT 10

        class IProgressMonitor:
            def __init__(self):
                calls.append(("IProgressMonitor.__init__", ()))

        trt.IProgressMonitor = IProgressMonitor

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data

    class Profile:
        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's argument names
            calls.append(("set_shape", (name, tuple(min), tuple(opt), tuple(max))))

    class Config:
        def __init__(self):
            self.progress_monitor = None
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", (pool, size)))

        def set_flag(self, flag):
            calls.append(("set_flag", (flag,)))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", (profile,)))
            return 0

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", (bytes(data),)))
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = accept_cache or not cache.data
            calls.append(("set_timing_cache", (cache.data, ignore_mismatch, ok)))
            if ok:
                self.cache = cache
            return ok

        def get_timing_cache(self):
            return self.cache

    class Network:
        def __init__(self, flags):
            self.flags = flags

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            calls.append(("Builder", ()))

        def create_network(self, flags=0):
            calls.append(("create_network", (flags,)))
            return Network(flags)

        def create_builder_config(self):
            calls.append(("create_builder_config", ()))
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(
                ("build_serialized_network", (network.flags, config.hardware_compatibility_level))
            )
            monitor = config.progress_monitor
            if monitor is not None:
                for name, steps in phases:
                    monitor.phase_start(name, None, steps)
                    for step in range(steps):
                        keep_going = monitor.step_complete(name, step)
                        calls.append(("step_complete->", (keep_going,)))
                    monitor.phase_finish(name)
            if build_errors:
                for msg in build_errors:
                    self.logger.log(ILogger.Severity.ERROR, msg)
                return None
            self.logger.log(ILogger.Severity.WARNING, "fake warning")
            if config.cache is not None:
                config.cache.data += b"+timings"
            return memoryview(b"ENGINE:" + str(network.flags).encode())

    class ParserError:
        def __init__(self, text):
            self.text = text

        def __str__(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse(self, model, path=None):
            calls.append(("parse", (bytes(model), path)))
            self.num_errors = len(parse_errors)
            return not parse_errors

        def get_error(self, index):
            return ParserError(parse_errors[index])

    trt.Builder = Builder
    trt.OnnxParser = OnnxParser
    return trt


def call_names(trt) -> list[str]:
    return [name for name, _ in trt.calls]


def calls_of(trt, name: str) -> list[tuple]:
    return [args for n, args in trt.calls if n == name]


def make_manifest(
    *,
    model: str = "mprnet.deblur",
    precision: str = "fp16",
    tile: tuple[int, int] | None = (64, 96),
    batch: int = 4,
    multiple_of: int = 8,
    max_tile_area: int | None = None,
    channels: int = 3,
) -> Manifest:
    return Manifest(
        model=model,
        task="deblur",
        input=TensorSpec("input", channels),
        output=TensorSpec("output", channels),
        scale=1,
        multiple_of=multiple_of,
        tile=tile,
        batch=BatchRange(1, batch, batch),
        overlap=32,
        blend="feather",
        precision=PrecisionPlan(precision, ("/ln/LayerNorm",) if precision != "fp32" else ()),
        opset=17,
        weights="random (seed 0)",
        max_tile_area=max_tile_area,
    )


def write_onnx_artifact(folder: Path, manifest: Manifest, content: bytes = b"") -> Path:
    """A stand-in ONNX file (TensorRT is faked, so the bytes need not parse) with its manifest
    sidecar, hashed as ``restore-export`` does."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / onnx_name(manifest.model, manifest.precision.precision, manifest.tile)
    path.write_bytes(content or b"not really onnx: " + manifest.model.encode())
    write_manifest(path, manifest.replace(onnx_sha256=file_sha256(path)))
    return path

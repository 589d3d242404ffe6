"""The builder driven through a fake ``tensorrt`` (every call checked against the plan), its
TensorRT surface checked against the 10.3 and 11.x APIs, and one real build where TensorRT and a
GPU exist."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from restorekit.errors import EngineBuildError
from restorekit.manifest import read_manifest
from restorekit.tensorrt import builder
from restorekit.tensorrt.builder import engine_from_onnx
from restorekit.tensorrt.compat import check_engine_compat
from restorekit.tensorrt.plan import EngineBuildOptions
from tests.tensorrt.fake_trt import (
    OOM_TEXTS,
    ORIN,
    RTX4090,
    call_names,
    calls_of,
    make_fake_trt,
    make_manifest,
    write_onnx_artifact,
)


class RecordingProgress:
    """A progress object as :func:`engine_from_onnx` takes it, recording what it is told."""

    def __init__(self, interrupt: bool = False) -> None:
        self.events: list[tuple] = []
        self.cancelled = False
        self.interrupt = interrupt

    def phase_start(self, phase_name, parent_phase, num_steps):
        self.events.append(("start", phase_name, parent_phase, num_steps))

    def step_complete(self, phase_name, step):
        if self.interrupt:
            raise KeyboardInterrupt
        self.events.append(("step", phase_name, step))
        return True

    def phase_finish(self, phase_name):
        self.events.append(("finish", phase_name))


# --- the builder driven through a fake tensorrt -------------------------------------------------


def test_build_with_tensorrt_10_3_end_to_end(tmp_path):
    trt = make_fake_trt("10.3.0")
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="fp16", tile=(64, 96), batch=4))
    progress = RecordingProgress()
    result = engine_from_onnx(
        onnx, EngineBuildOptions(workspace_gib=0.5), trt=trt, device=ORIN, progress=progress
    )

    names = call_names(trt)
    order = ["create_network", "parse", "set_memory_pool_limit", "add_optimization_profile",
             "set_timing_cache", "build_serialized_network"]  # fmt: skip
    assert [n for n in names if n in order] == order
    strongly_bit = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert calls_of(trt, "create_network") == [(strongly_bit,)]
    assert calls_of(trt, "parse") == [(onnx.read_bytes(), str(onnx))]
    assert calls_of(trt, "set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 2**29)]
    assert calls_of(trt, "set_flag") == []  # strongly typed: no precision flags
    assert calls_of(trt, "set_shape") == [("input", (1, 3, 64, 96), (4, 3, 64, 96), (4, 3, 64, 96))]
    assert calls_of(trt, "create_timing_cache") == [(b"",)]

    # Progress came through trt.IProgressMonitor into the progress object (the CLI's tqdm bars:
    # tests/cli/test_build.py), and the build was not cancelled.
    assert "IProgressMonitor.__init__" in names
    assert calls_of(trt, "step_complete->") == [(True,)] * 3
    assert progress.events == [
        ("start", "Building engine", None, 3),
        ("step", "Building engine", 0),
        ("step", "Building engine", 1),
        ("step", "Building engine", 2),
        ("finish", "Building engine"),
    ]

    assert result.engine_path.name == "mprnet.deblur.fp16.64x96.trt10.3.0.sm87.engine"
    assert result.engine_path.read_bytes() == b"ENGINE:" + str(strongly_bit).encode()
    on_disk = read_manifest(result.engine_path)
    assert on_disk == result.manifest
    assert (
        on_disk.engine.tensorrt_version == "10.3.0" and on_disk.engine.compute_capability == "8.7"
    )
    cache = tmp_path / "cache" / "timing" / "trt10.3.0-sm87.cache"
    assert result.timing_cache_written and cache.read_bytes() == b"+timings"


def test_timing_cache_is_reused_by_the_next_build(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    engine_from_onnx(onnx, trt=make_fake_trt("10.3.0"), device=ORIN)
    second = make_fake_trt("10.3.0")
    engine_from_onnx(onnx, trt=second, device=ORIN)
    assert calls_of(second, "create_timing_cache") == [(b"+timings",)]
    cache = tmp_path / "cache" / "timing" / "trt10.3.0-sm87.cache"
    assert cache.read_bytes() == b"+timings+timings"


def test_a_rejected_timing_cache_is_replaced_not_fatal(tmp_path):
    cache = tmp_path / "my.cache"
    cache.write_bytes(b"from another gpu")
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    trt = make_fake_trt("10.3.0", accept_cache=False)
    engine_from_onnx(onnx, EngineBuildOptions(timing_cache=cache), trt=trt, device=ORIN)
    assert calls_of(trt, "create_timing_cache") == [(b"from another gpu",), (b"",)]
    assert cache.read_bytes() == b"+timings"


def test_build_with_tensorrt_11_uses_no_deprecated_or_removed_names(tmp_path):
    trt = make_fake_trt("11.4.0.106")  # has no BuilderFlag.FP16/INT8: using them would raise
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="int8"))
    result = engine_from_onnx(onnx, EngineBuildOptions(hardware_compatible=True),
                              trt=trt, device=RTX4090)  # fmt: skip
    assert calls_of(trt, "create_network") == [(0,)]
    assert calls_of(trt, "set_flag") == []
    hw_level = calls_of(trt, "build_serialized_network")[0][1]
    assert hw_level is trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert result.engine_path.name == "mprnet.deblur.int8.64x96.trt11.4.0.sm89.engine"
    assert result.manifest.engine.hardware_compatible


def test_build_with_tensorrt_8_6_takes_the_legacy_path(tmp_path):
    trt = make_fake_trt("8.6.1.6")  # no STRONGLY_TYPED, no IProgressMonitor
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="fp16"))
    progress = RecordingProgress()
    result = engine_from_onnx(onnx, trt=trt, device=ORIN, progress=progress)
    explicit = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert calls_of(trt, "create_network") == [(explicit,)]
    assert calls_of(trt, "set_flag") == [(trt.BuilderFlag.FP16,)]
    assert "IProgressMonitor.__init__" not in call_names(trt)
    assert progress.events == []
    assert not result.manifest.engine.strongly_typed


def test_version_compatible_sets_the_builder_flag(tmp_path):
    trt = make_fake_trt("10.3.0")
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    engine_from_onnx(onnx, EngineBuildOptions(version_compatible=True), trt=trt, device=ORIN)
    assert calls_of(trt, "set_flag") == [(trt.BuilderFlag.VERSION_COMPATIBLE,)]


def test_parser_errors_are_listed(tmp_path):
    trt = make_fake_trt("10.3.0", parse_errors=("In node 3 (Foo): unsupported op", "second one"))
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    with pytest.raises(EngineBuildError, match="parser rejected") as info:
        engine_from_onnx(onnx, trt=trt, device=ORIN)
    assert "In node 3 (Foo): unsupported op" in str(info.value) and "second one" in str(info.value)
    assert "build_serialized_network" not in call_names(trt)


def test_out_of_memory_build_raises_and_writes_nothing(tmp_path):
    trt = make_fake_trt("10.3.0", build_errors=(OOM_TEXTS[0],))
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    with pytest.raises(EngineBuildError, match="ran out of memory"):
        engine_from_onnx(onnx, trt=trt, device=ORIN)
    assert not list(tmp_path.glob("*.engine*"))
    assert not (tmp_path / "cache" / "timing").exists()


def test_missing_tensorrt_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(Exception, match=r"restorekit\[tensorrt\].*python3-libnvinfer"):
        builder.import_tensorrt()


# --- the TensorRT surface and torch-freedom -----------------------------------------------------

# Attributes builder.py touches on tensorrt objects, each checked (strings/docstrings of
# tensorrt.so) in the tensorrt-cu12-bindings 10.3.0 and 11.4.0.106 wheels. Version-specific enum
# members (EXPLICIT_BATCH, STRONGLY_TYPED, FP16, INT8, VERSION_COMPATIBLE, AMPERE_PLUS) are reached
# by name through getattr, only where the plan chose them for that version.
VERIFIED_TRT_ATTRIBUTES = {
    "__version__", "NetworkDefinitionCreationFlag", "BuilderFlag", "MemoryPoolType", "WORKSPACE",
    "HardwareCompatibilityLevel", "ILogger", "Severity", "INTERNAL_ERROR", "ERROR", "WARNING",
    "IProgressMonitor", "Builder", "OnnxParser", "create_network", "parse", "num_errors",
    "get_error", "create_builder_config", "set_memory_pool_limit", "set_flag",
    "hardware_compatibility_level", "create_optimization_profile", "set_shape",
    "add_optimization_profile", "create_timing_cache", "set_timing_cache", "progress_monitor",
    "build_serialized_network", "get_timing_cache", "serialize",
}  # fmt: skip
# Attributes of the plan, of our own objects and of Python itself used in builder.py.
NOT_TENSORRT = {
    "network_flags", "builder_flags", "onnx_path", "workspace_bytes", "hardware_compatibility",
    "profile", "input_name", "min", "opt", "max", "errors", "lines", "append", "util",
    "import_module", "find_spec", "phase_start", "step_complete", "phase_finish", "__init__",
    "cancelled",
    # engine_from_onnx: the plan's and the outcome's fields, pathlib, str and time
    "engine", "engine_path", "manifest", "timing_cache", "timing_cache_path", "parser_errors",
    "log", "read_bytes", "is_file", "startswith", "removeprefix", "perf_counter",
}  # fmt: skip


def test_builder_uses_only_verified_tensorrt_attributes():
    source = Path(builder.__file__).read_text()
    used = {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    unverified = used - VERIFIED_TRT_ATTRIBUTES - NOT_TENSORRT
    assert not unverified, f"check these against TensorRT 10.3 and 11.x first: {unverified}"


def test_engine_building_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import restorekit.tensorrt.plan, restorekit.tensorrt.builder, restorekit.tensorrt.compat\n"
        "import restorekit.cli.build, restorekit.tensorrt.device, restorekit.tensorrt.versions\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'tensorrt')"
        " and sys.modules[m] is not None))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- a real build -------------------------------------------------------------------------------


def _tiny_onnx(folder: Path) -> Path:
    """A 3->3 channel 3x3 convolution with a free batch, as a restorekit FP32 ONNX artifact."""
    pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 3, 3, 3))
                                .astype(np.float32), "w")  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return write_onnx_artifact(
        folder, make_manifest(precision="fp32", tile=(32, 32), batch=2), model.SerializeToString()
    )


@pytest.mark.trt
@pytest.mark.gpu
def test_real_tensorrt_builds_and_deserializes_a_tiny_engine(tmp_path):
    import tensorrt as trt

    from restorekit.tensorrt.device import query_device

    onnx = _tiny_onnx(tmp_path)
    device = query_device()
    result = engine_from_onnx(onnx, EngineBuildOptions(workspace_gib=0.25))
    assert result.manifest.engine.compute_capability == device.compute_capability
    assert check_engine_compat(result.manifest, trt.__version__, device) == []
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(result.engine_path.read_bytes())
    assert engine is not None and engine.num_io_tensors == 2
    assert tuple(engine.get_tensor_profile_shape("input", 0)[2]) == (2, 3, 32, 32)


def test_ctrl_c_during_the_build_stops_it_and_writes_nothing(tmp_path):
    # TensorRT would swallow an exception raised inside its callback; the monitor must turn
    # Ctrl-C into "stop the build" (step_complete -> False) and the builder re-raise it.
    progress = RecordingProgress(interrupt=True)
    trt = make_fake_trt("10.3.0", build_errors=("build cancelled by the application",))
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    with pytest.raises(KeyboardInterrupt):
        engine_from_onnx(onnx, trt=trt, device=ORIN, progress=progress)
    assert progress.cancelled
    assert calls_of(trt, "step_complete->") == [(False,)] * 3
    assert not list(tmp_path.glob("*.engine*"))

"""Engine building on CPU: every decision (flags per TensorRT version, profile shapes, workspace,
timing cache, names, manifest, failures), the builder driven through a fake ``tensorrt``, the
compatibility check, and one real build where TensorRT and a GPU exist."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from restorekit.cli.build import build_parser, options_from_args
from restorekit.device import DeviceFacts, is_jetson, parse_nvidia_smi
from restorekit.engine_compat import check_engine_compat, rebuild_command
from restorekit.errors import EngineBuildError, ManifestError, TileSizeError
from restorekit.export import engine_trt
from restorekit.export.engine import (
    BuildProgress,
    EngineBuildOptions,
    build_command,
    build_failure,
    default_workspace_bytes,
    engine_from_onnx,
    engine_or_command,
    is_out_of_memory,
    load_onnx_manifest,
    network_flags_for,
    plan_build,
    profile_shapes,
    timing_cache_path,
)
from restorekit.manifest import read_manifest, sidecar_path
from tests.export.fake_trt import (
    call_names,
    calls_of,
    make_fake_trt,
    make_manifest,
    write_onnx_artifact,
)

GIB = 2**30
ORIN = DeviceFacts("Orin", "8.7", 64 * GIB, jetson=True)
RTX4090 = DeviceFacts("NVIDIA GeForce RTX 4090", "8.9", 24 * GIB)
T4 = DeviceFacts("Tesla T4", "7.5", 16 * GIB)


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    # Timing caches go to a per-test folder, never the user's ~/.cache.
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))


# --- flags per TensorRT version -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "builder"), [("fp32", ()), ("fp16", ("FP16",)), ("int8", ("INT8",))]
)
def test_tensorrt_8_6_uses_explicit_batch_and_legacy_precision_flags(precision, builder):
    strongly, net, flags, notes = network_flags_for("8.6.1.6", precision)
    assert (strongly, net, flags) == (False, ("EXPLICIT_BATCH",), builder)
    # Weakly typed builds may lower kept-FP32 nodes: said when the graph is not FP32.
    assert bool(notes) == (precision != "fp32")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("version", ["10.0.0", "10.3.0", "10.3.0.30", "10.12.0.36"])
def test_tensorrt_10_builds_strongly_typed_without_precision_flags(version, precision):
    # "10.0.0" < "9.0" as strings: a string comparison would send it down the legacy path.
    assert network_flags_for(version, precision) == (True, ("STRONGLY_TYPED",), (), ())


@pytest.mark.parametrize("version", ["11.0.0", "11.4.0.106", "12.1"])
def test_tensorrt_11_is_strongly_typed_with_no_flags_at_all(version):
    # STRONGLY_TYPED is deprecated (ignored) in 11 and FP16/INT8 builder flags no longer exist.
    for precision in ("fp32", "fp16", "int8"):
        assert network_flags_for(version, precision) == (True, (), (), ())


def test_tensorrt_9_uses_the_strongly_typed_flag_only_where_it_exists():
    with_flag = network_flags_for("9.2.0", "fp16", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    assert with_flag == (True, ("EXPLICIT_BATCH", "STRONGLY_TYPED"), (), ())
    without = network_flags_for("9.0.0", "fp16", ["EXPLICIT_BATCH"])
    assert without[:3] == (False, ("EXPLICIT_BATCH",), ("FP16",))


def test_compatibility_flags_and_their_limits(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    m = load_onnx_manifest(onnx)
    plan = plan_build(
        onnx, m, "10.3.0", RTX4090,
        EngineBuildOptions(hardware_compatible=True, version_compatible=True),
    )  # fmt: skip
    assert plan.hardware_compatibility == "AMPERE_PLUS"
    assert plan.builder_flags == ("VERSION_COMPATIBLE",)
    assert plan.manifest.engine.hardware_compatible and plan.manifest.engine.version_compatible
    hw = EngineBuildOptions(hardware_compatible=True)
    with pytest.raises(EngineBuildError, match="Jetson"):
        plan_build(onnx, m, "10.3.0", ORIN, hw)
    with pytest.raises(EngineBuildError, match="sm_75"):
        plan_build(onnx, m, "10.3.0", T4, hw)
    with pytest.raises(EngineBuildError, match="8.6 or newer"):
        plan_build(onnx, m, "8.5.3", RTX4090, EngineBuildOptions(version_compatible=True))


def test_progress_monitor_only_from_tensorrt_10(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    m = load_onnx_manifest(onnx)
    assert plan_build(onnx, m, "10.3.0", ORIN).progress_monitor
    assert not plan_build(onnx, m, "8.6.1", ORIN).progress_monitor


# --- profile shapes -----------------------------------------------------------------------------


def test_static_profile_is_the_tile_with_the_manifest_batch_range():
    m = make_manifest(tile=(64, 96), batch=4)
    p = profile_shapes(m, EngineBuildOptions())
    assert (p.min, p.opt, p.max) == ((1, 3, 64, 96), (4, 3, 64, 96), (4, 3, 64, 96))
    p2 = profile_shapes(m, EngineBuildOptions(batch=2, opt_shape=(64, 96)))
    assert (p2.min, p2.opt, p2.max) == ((1, 3, 64, 96), (2, 3, 64, 96), (2, 3, 64, 96))


def test_static_onnx_refuses_other_shapes():
    with pytest.raises(TileSizeError, match="exported for 64x96 tiles only"):
        profile_shapes(make_manifest(tile=(64, 96)), EngineBuildOptions(max_shape=(128, 128)))


def test_dynamic_default_range_is_rounded_up_to_the_model_multiple():
    p = profile_shapes(make_manifest(tile=None, multiple_of=48, batch=2), EngineBuildOptions())
    # ceil(128/48)*48 = 144, ceil(256/48)*48 = 288, ceil(512/48)*48 = 528
    assert (p.min, p.opt, p.max) == ((1, 3, 144, 144), (2, 3, 288, 288), (2, 3, 528, 528))


def test_dynamic_default_range_respects_the_largest_safe_tile():
    p = profile_shapes(make_manifest(tile=None, max_tile_area=300 * 300), EngineBuildOptions())
    # Largest multiple of 8 whose square fits 90000 px: 296 (296^2 = 87616, 304^2 = 92416).
    assert p.max[2:] == (296, 296) and p.opt[2:] == (256, 256) and p.min[2:] == (128, 128)


def test_dynamic_shapes_from_options_and_their_checks():
    m = make_manifest(tile=None, batch=1)
    p = profile_shapes(m, EngineBuildOptions(min_shape=(64, 64), opt_shape=(128, 256),
                                             max_shape=(256, 512)))  # fmt: skip
    assert (p.min, p.opt, p.max) == ((1, 3, 64, 64), (1, 3, 128, 256), (1, 3, 256, 512))
    fixed = profile_shapes(m, EngineBuildOptions(max_shape=(96, 160)))
    assert fixed.min == fixed.opt == fixed.max == (1, 3, 96, 160)
    assert fixed.fixed_hw == (96, 160)
    with pytest.raises(TileSizeError, match="multiples of 8"):
        profile_shapes(m, EngineBuildOptions(max_shape=(100, 100)))
    with pytest.raises(TileSizeError, match="out of order"):
        profile_shapes(m, EngineBuildOptions(min_shape=(256, 64), max_shape=(128, 128)))
    capped = make_manifest(tile=None, max_tile_area=128 * 128)
    with pytest.raises(TileSizeError, match="largest safe tile"):
        profile_shapes(capped, EngineBuildOptions(max_shape=(256, 256)))


# --- workspace, timing cache, names, manifest ---------------------------------------------------


def test_workspace_defaults_and_override(tmp_path):
    assert default_workspace_bytes(ORIN) == 1 * GIB
    assert default_workspace_bytes(RTX4090) == 4 * GIB
    assert default_workspace_bytes(DeviceFacts("small", "8.6", 6 * GIB)) == 3 * GIB
    assert default_workspace_bytes(DeviceFacts("unknown", "8.6", None)) == 4 * GIB
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    m = load_onnx_manifest(onnx)
    plan = plan_build(onnx, m, "10.3.0", ORIN, EngineBuildOptions(workspace_gib=2.5))
    assert plan.workspace_bytes == int(2.5 * 2**30)
    with pytest.raises(EngineBuildError, match="positive"):
        plan_build(onnx, m, "10.3.0", ORIN, EngineBuildOptions(workspace_gib=0))


def test_timing_cache_is_keyed_by_tensorrt_release_and_compute_capability(tmp_path):
    root = tmp_path / "cache" / "timing"
    assert timing_cache_path("10.3.0", ORIN) == root / "trt10.3.0-sm87.cache"
    assert timing_cache_path("10.3.0.30", ORIN) == root / "trt10.3.0-sm87.cache"
    assert timing_cache_path("11.4.0.106", RTX4090) == root / "trt11.4.0-sm89.cache"
    assert timing_cache_path("10.3.0", ORIN, tmp_path / "x.cache") == tmp_path / "x.cache"


def test_engine_names_carry_model_precision_tile_tensorrt_and_sm(tmp_path):
    onnx = write_onnx_artifact(tmp_path / "in", make_manifest(precision="int8", tile=(64, 96)))
    plan = plan_build(onnx, load_onnx_manifest(onnx), "10.3.0.30", ORIN)
    assert plan.engine_path == tmp_path / "in" / "mprnet.deblur.int8.64x96.trt10.3.0.sm87.engine"
    dyn = write_onnx_artifact(tmp_path / "dyn", make_manifest(precision="fp32", tile=None))
    dm = load_onnx_manifest(dyn)
    fixed = plan_build(dyn, dm, "11.4.0.106", RTX4090,
                       EngineBuildOptions(max_shape=(128, 192), output_dir=tmp_path / "o"))  # fmt: skip
    assert fixed.engine_path == tmp_path / "o" / "mprnet.deblur.fp32.128x192.trt11.4.0.sm89.engine"
    ranged = plan_build(dyn, dm, "11.4.0.106", RTX4090)
    assert ranged.engine_path.name == "mprnet.deblur.fp32.dynamic.trt11.4.0.sm89.engine"


def test_engine_manifest_records_build_and_source(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="fp16", batch=4))
    expected_sha = hashlib.sha256(onnx.read_bytes()).hexdigest()
    plan = plan_build(onnx, load_onnx_manifest(onnx), "10.3.0", ORIN, EngineBuildOptions(batch=2))
    m = plan.manifest
    assert m.onnx_sha256 == expected_sha
    assert m.precision.precision == "fp16" and m.precision.kept_fp32 == ("/ln/LayerNorm",)
    assert (m.batch.min, m.batch.opt, m.batch.max) == (1, 2, 2)
    rec = m.engine
    assert (rec.tensorrt_version, rec.gpu_name, rec.compute_capability) == ("10.3.0", "Orin", "8.7")
    assert rec.strongly_typed and not rec.hardware_compatible and not rec.version_compatible
    assert rec.profile == {"min": [1, 3, 64, 96], "opt": [2, 3, 64, 96], "max": [2, 3, 64, 96]}
    assert rec.onnx_file == onnx.name


def test_onnx_modified_after_export_is_refused(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    onnx.write_bytes(onnx.read_bytes() + b"tampered")
    with pytest.raises(ManifestError, match="modified after export; re-export"):
        load_onnx_manifest(onnx)


def test_building_from_an_engine_manifest_or_missing_file_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_onnx_manifest(tmp_path / "nope.onnx")
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    plan = plan_build(onnx, load_onnx_manifest(onnx), "10.3.0", ORIN)
    fake = tmp_path / "x.onnx"
    fake.write_bytes(b"x")
    sidecar_path(fake).write_text(plan.manifest.to_json())
    with pytest.raises(ManifestError, match="describes a TensorRT engine"):
        load_onnx_manifest(fake)


# --- failures -----------------------------------------------------------------------------------

OOM_TEXTS = [
    "[optimizer.cpp::computeCosts::3869] Error Code 10: Internal Error (Could not find any "
    "implementation for node /body/conv1/Conv.)",
    "Error Code 2: OutOfMemory (no further information)",
    "[defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)",
    "Requested amount of GPU memory (4294967296 bytes) could not be allocated. There may not be "
    "enough free memory for allocation to succeed.",
]


@pytest.mark.parametrize("text", OOM_TEXTS)
def test_out_of_memory_texts_are_recognised(text):
    assert is_out_of_memory(["some warning", text])


def test_other_failures_are_not_called_out_of_memory():
    assert not is_out_of_memory(["Unsupported ONNX data type: UINT8", "Network must have an input"])


def test_out_of_memory_message_suggests_workspace_tile_batch_and_jetson_memory(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest(tile=(256, 256), batch=4))
    plan = plan_build(onnx, load_onnx_manifest(onnx), "10.3.0", ORIN)
    msg = str(build_failure(plan, [OOM_TEXTS[0]], ORIN))
    assert "ran out of memory" in msg and "could not find any implementation" in msg
    # No tactic fitted the 1 GiB limit: a larger limit first, a smaller one second.
    assert 0 < msg.index("--workspace 2 ") < msg.index("--workspace 0.5 ")
    assert "--batch 2" in msg and "--tile 128x128" in msg
    assert "shares system memory" in msg and "/body/conv1/Conv" in msg
    desktop = str(build_failure(plan, [OOM_TEXTS[1]], RTX4090))
    assert "shares system memory" not in desktop
    # An allocation failed outright: the limit was too large for the free memory.
    assert 0 < desktop.index("--workspace 0.5 ") < desktop.index("--workspace 2 ")
    other = str(build_failure(plan, ["Unsupported operator Foo"], RTX4090))
    assert "out of memory" not in other and "Unsupported operator Foo" in other


# --- the builder driven through a fake tensorrt -------------------------------------------------


def test_build_with_tensorrt_10_3_end_to_end(tmp_path, capsys):
    trt = make_fake_trt("10.3.0")
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="fp16", tile=(64, 96), batch=4))
    result = engine_from_onnx(onnx, EngineBuildOptions(workspace_gib=0.5), trt=trt, device=ORIN)

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

    # Progress came through trt.IProgressMonitor into tqdm, and the build was not cancelled.
    assert "IProgressMonitor.__init__" in names
    assert calls_of(trt, "step_complete->") == [(True,)] * 3
    assert "Building engine" in capsys.readouterr().err

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
    engine_from_onnx(onnx, trt=make_fake_trt("10.3.0"), device=ORIN, progress=False)
    second = make_fake_trt("10.3.0")
    engine_from_onnx(onnx, trt=second, device=ORIN, progress=False)
    assert calls_of(second, "create_timing_cache") == [(b"+timings",)]
    cache = tmp_path / "cache" / "timing" / "trt10.3.0-sm87.cache"
    assert cache.read_bytes() == b"+timings+timings"


def test_a_rejected_timing_cache_is_replaced_not_fatal(tmp_path):
    cache = tmp_path / "my.cache"
    cache.write_bytes(b"from another gpu")
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    trt = make_fake_trt("10.3.0", accept_cache=False)
    engine_from_onnx(onnx, EngineBuildOptions(timing_cache=cache), trt=trt, device=ORIN,
                     progress=False)  # fmt: skip
    assert calls_of(trt, "create_timing_cache") == [(b"from another gpu",), (b"",)]
    assert cache.read_bytes() == b"+timings"


def test_build_with_tensorrt_11_uses_no_deprecated_or_removed_names(tmp_path):
    trt = make_fake_trt("11.4.0.106")  # has no BuilderFlag.FP16/INT8: using them would raise
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="int8"))
    result = engine_from_onnx(onnx, EngineBuildOptions(hardware_compatible=True),
                              trt=trt, device=RTX4090, progress=False)  # fmt: skip
    assert calls_of(trt, "create_network") == [(0,)]
    assert calls_of(trt, "set_flag") == []
    hw_level = calls_of(trt, "build_serialized_network")[0][1]
    assert hw_level is trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert result.engine_path.name == "mprnet.deblur.int8.64x96.trt11.4.0.sm89.engine"
    assert result.manifest.engine.hardware_compatible


def test_build_with_tensorrt_8_6_takes_the_legacy_path(tmp_path):
    trt = make_fake_trt("8.6.1.6")  # no STRONGLY_TYPED, no IProgressMonitor
    onnx = write_onnx_artifact(tmp_path, make_manifest(precision="fp16"))
    result = engine_from_onnx(onnx, trt=trt, device=ORIN)
    explicit = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert calls_of(trt, "create_network") == [(explicit,)]
    assert calls_of(trt, "set_flag") == [(trt.BuilderFlag.FP16,)]
    assert "IProgressMonitor.__init__" not in call_names(trt)
    assert not result.manifest.engine.strongly_typed


def test_version_compatible_sets_the_builder_flag(tmp_path):
    trt = make_fake_trt("10.3.0")
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    engine_from_onnx(onnx, EngineBuildOptions(version_compatible=True), trt=trt, device=ORIN,
                     progress=False)  # fmt: skip
    assert calls_of(trt, "set_flag") == [(trt.BuilderFlag.VERSION_COMPATIBLE,)]


def test_parser_errors_are_listed(tmp_path):
    trt = make_fake_trt("10.3.0", parse_errors=("In node 3 (Foo): unsupported op", "second one"))
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    with pytest.raises(EngineBuildError, match="parser rejected") as info:
        engine_from_onnx(onnx, trt=trt, device=ORIN, progress=False)
    assert "In node 3 (Foo): unsupported op" in str(info.value) and "second one" in str(info.value)
    assert "build_serialized_network" not in call_names(trt)


def test_out_of_memory_build_raises_and_writes_nothing(tmp_path):
    trt = make_fake_trt("10.3.0", build_errors=(OOM_TEXTS[0],))
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    with pytest.raises(EngineBuildError, match="ran out of memory"):
        engine_from_onnx(onnx, trt=trt, device=ORIN, progress=False)
    assert not list(tmp_path.glob("*.engine*"))
    assert not (tmp_path / "cache" / "timing").exists()


def test_missing_tensorrt_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(Exception, match=r"restorekit\[tensorrt\].*python3-libnvinfer"):
        engine_trt.import_tensorrt()


def test_build_progress_tracks_nested_phases():
    out = io.StringIO()
    prog = BuildProgress(stream=out)
    prog.phase_start("Build", None, 2)
    prog.phase_start("Tactics", "Build", 3)
    assert [prog.step_complete("Tactics", s) for s in range(3)] == [True] * 3
    assert prog.bars["Tactics"].n == 3
    prog.phase_finish("Tactics")
    prog.cancelled = True
    assert prog.step_complete("Build", 0) is False  # asks TensorRT to stop
    prog.close()
    assert prog.bars == {} and "Tactics" in out.getvalue()
    assert BuildProgress(enabled=False).step_complete("x", 0) is True


# --- the command line for the target ------------------------------------------------------------


def test_build_command_round_trips_through_restore_build(tmp_path):
    options = EngineBuildOptions(
        output_dir=Path("out dir"), workspace_gib=1.5, batch=2, min_shape=(64, 64),
        opt_shape=(128, 128), max_shape=(256, 320), timing_cache=Path("t.cache"),
        hardware_compatible=True, version_compatible=True,
    )  # fmt: skip
    cmd = build_command("m.fp16.dynamic.onnx", options)
    assert cmd == (
        "restore-build m.fp16.dynamic.onnx -o 'out dir' --workspace 1.5 --batch 2 "
        "--min-shape 64x64 --opt-shape 128x128 --max-shape 256x320 --timing-cache t.cache "
        "--hardware-compatible --version-compatible"
    )
    argv = shlex.split(cmd)
    args = build_parser().parse_args(argv[1:])
    assert args.onnx == Path("m.fp16.dynamic.onnx") and options_from_args(args) == options
    assert build_command("a.onnx") == "restore-build a.onnx"


def test_without_tensorrt_export_prints_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_trt, "tensorrt_available", lambda: False)
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    lines = engine_or_command(onnx, EngineBuildOptions(batch=4))
    assert lines[-1].strip() == f"restore-build {onnx.name} --batch 4"
    assert "not installed" in lines[0] and f"{onnx.name}.json" in lines[1]


def test_with_tensorrt_export_builds(tmp_path, monkeypatch):
    trt = make_fake_trt("10.3.0")
    monkeypatch.setattr(engine_trt, "tensorrt_available", lambda: True)
    monkeypatch.setattr(engine_trt, "import_tensorrt", lambda: trt)
    monkeypatch.setattr("restorekit.device.query_device", lambda index=0: ORIN)
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    lines = engine_or_command(onnx, progress=False)
    assert any(line.startswith("wrote ") and ".trt10.3.0.sm87.engine" in line for line in lines)


# --- compatibility at load time -----------------------------------------------------------------


def _engine_manifest(tmp_path, device, version="10.3.0", **opts):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    return plan_build(
        onnx, load_onnx_manifest(onnx), version, device, EngineBuildOptions(**opts)
    ).manifest


def test_compatible_engine_passes_and_another_gpu_model_only_warns(tmp_path):
    m = _engine_manifest(tmp_path, RTX4090)
    assert check_engine_compat(m, "10.3.0.26", RTX4090) == []
    other = DeviceFacts("NVIDIA L4", "8.9", 24 * GIB)
    (warning,) = check_engine_compat(m, "10.3.0", other)
    assert "NVIDIA L4" in warning and "restore-build" in warning


def test_other_tensorrt_or_gpu_is_refused_with_the_rebuild_command(tmp_path):
    m = _engine_manifest(tmp_path, ORIN, batch=2)
    expected_cmd = "restore-build mprnet.deblur.fp16.64x96.onnx --batch 2"
    assert rebuild_command(m) == expected_cmd
    with pytest.raises(ManifestError) as info:
        check_engine_compat(m, "10.8.0", ORIN, "x.engine")
    assert "TensorRT 10.3.0, this device has TensorRT 10.8.0" in str(info.value)
    assert expected_cmd in str(info.value)
    with pytest.raises(ManifestError, match="sm_87 .*this GPU is sm_89"):
        check_engine_compat(m, "10.3.0", RTX4090)


def test_hardware_and_version_compatible_engines(tmp_path):
    m = _engine_manifest(tmp_path, RTX4090, hardware_compatible=True, version_compatible=True)
    assert check_engine_compat(m, "10.8.0", DeviceFacts("A100", "8.0")) == []
    with pytest.raises(ManifestError, match="Ampere-or-newer"):
        check_engine_compat(m, "10.3.0", T4)
    with pytest.raises(ManifestError, match="version-compatible"):
        check_engine_compat(m, "11.0.0", RTX4090)
    with pytest.raises(ManifestError, match="version-compatible"):
        check_engine_compat(m, "10.2.0", RTX4090)
    assert rebuild_command(m).endswith("--hardware-compatible --version-compatible")


def test_dynamic_engine_rebuild_command_keeps_its_profile(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest(tile=None, batch=1))
    opts = EngineBuildOptions(min_shape=(64, 64), opt_shape=(128, 128), max_shape=(256, 256))
    m = plan_build(onnx, load_onnx_manifest(onnx), "10.3.0", ORIN, opts).manifest
    assert rebuild_command(m) == (
        "restore-build mprnet.deblur.fp16.dynamic.onnx --batch 1 --min-shape 64x64 "
        "--opt-shape 128x128 --max-shape 256x256"
    )


def test_an_onnx_manifest_is_not_an_engine(tmp_path):
    with pytest.raises(ManifestError, match="no engine record"):
        check_engine_compat(make_manifest(), "10.3.0", ORIN)


def test_engine_manifest_survives_json_round_trip(tmp_path):
    m = _engine_manifest(tmp_path, ORIN)
    path = tmp_path / "e.engine"
    path.write_bytes(b"x")
    sidecar_path(path).write_text(m.to_json())
    assert read_manifest(path) == m
    assert json.loads(m.to_json())["engine"]["profile"]["max"] == [4, 3, 64, 96]


# --- device facts -------------------------------------------------------------------------------


def test_jetson_detection_from_l4t_files(tmp_path):
    assert not is_jetson(tmp_path)
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert is_jetson(tmp_path)
    other = tmp_path / "l4t"
    (other / "etc").mkdir(parents=True)
    (other / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0")
    assert is_jetson(other)


def test_nvidia_smi_output_is_parsed():
    assert parse_nvidia_smi("NVIDIA GeForce RTX 4090, 8.9, 24564\n") == (
        "NVIDIA GeForce RTX 4090", "8.9", 24564 * 2**20,
    )  # fmt: skip
    assert parse_nvidia_smi("Orin, 8.7, [N/A]") == ("Orin", "8.7", None)
    assert parse_nvidia_smi("") is None


# --- the TensorRT surface and torch-freedom -----------------------------------------------------

# Attributes engine_trt.py touches on tensorrt objects, each checked (strings/docstrings of
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
# Attributes of the plan, of our own objects and of Python itself used in engine_trt.py.
NOT_TENSORRT = {
    "network_flags", "builder_flags", "onnx_path", "workspace_bytes", "hardware_compatibility",
    "profile", "input_name", "min", "opt", "max", "errors", "lines", "append", "util",
    "import_module", "find_spec", "phase_start", "step_complete", "phase_finish", "__init__",
    "cancelled",
}  # fmt: skip


def test_engine_trt_uses_only_verified_tensorrt_attributes():
    source = Path(engine_trt.__file__).read_text()
    used = {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    unverified = used - VERIFIED_TRT_ATTRIBUTES - NOT_TENSORRT
    assert not unverified, f"check these against TensorRT 10.3 and 11.x first: {unverified}"


def test_engine_building_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import restorekit.export.engine, restorekit.export.engine_trt, restorekit.engine_compat\n"
        "import restorekit.cli.build, restorekit.device\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'tensorrt')"
        " and sys.modules[m] is not None))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_export_package_names_still_resolve_lazily():
    code = (
        "import sys, restorekit.export as e\n"
        "assert 'restorekit.export.pipeline' not in sys.modules\n"
        "from restorekit.export import export_model, ExportOptions\n"
        "assert 'restorekit.export.pipeline' in sys.modules and callable(export_model)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


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

    from restorekit.device import query_device

    onnx = _tiny_onnx(tmp_path)
    device = query_device()
    result = engine_from_onnx(onnx, EngineBuildOptions(workspace_gib=0.25), progress=False)
    assert result.manifest.engine.compute_capability == device.compute_capability
    assert check_engine_compat(result.manifest, trt.__version__, device) == []
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(result.engine_path.read_bytes())
    assert engine is not None and engine.num_io_tensors == 2
    assert tuple(engine.get_tensor_profile_shape("input", 0)[2]) == (2, 3, 32, 32)


def test_ctrl_c_during_the_build_stops_it_and_writes_nothing(tmp_path, monkeypatch):
    # TensorRT would swallow an exception raised inside its callback; the monitor must turn
    # Ctrl-C into "stop the build" (step_complete -> False) and the builder re-raise it.
    def interrupted(self, phase_name, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(BuildProgress, "step_complete", interrupted)
    trt = make_fake_trt("10.3.0", build_errors=("build cancelled by the application",))
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    with pytest.raises(KeyboardInterrupt):
        engine_from_onnx(onnx, trt=trt, device=ORIN)
    assert calls_of(trt, "step_complete->") == [(False,)] * 3
    assert not list(tmp_path.glob("*.engine*"))


def test_onnx_runtime_cpu_int8_layout_is_refused_with_what_to_do(tmp_path):
    from restorekit.manifest import PrecisionPlan

    m = make_manifest(precision="int8").replace(precision=PrecisionPlan("int8", layout="ort-cpu"))
    onnx = write_onnx_artifact(tmp_path, m)
    with pytest.raises(EngineBuildError, match="without --int8-layout ort-cpu"):
        plan_build(onnx, load_onnx_manifest(onnx), "10.3.0", RTX4090)

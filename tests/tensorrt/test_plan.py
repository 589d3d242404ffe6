"""Every build decision on CPU: flags per TensorRT version, profile shapes, workspace, timing
cache, names, manifest, the source ONNX check, failure messages and the restore-build command."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from restorekit.errors import EngineBuildError, ManifestError, TileSizeError
from restorekit.manifest import sidecar_path
from restorekit.tensorrt.device import DeviceFacts
from restorekit.tensorrt.plan import (
    EngineBuildOptions,
    build_command,
    build_failure,
    default_workspace_bytes,
    is_out_of_memory,
    load_onnx_manifest,
    network_flags_for,
    parse_failure,
    plan_build,
    profile_shapes,
    timing_cache_path,
)
from tests.tensorrt.fake_trt import (
    GIB,
    OOM_TEXTS,
    ORIN,
    RTX4090,
    T4,
    make_manifest,
    write_onnx_artifact,
)

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


def test_onnx_runtime_cpu_int8_layout_is_refused_with_what_to_do(tmp_path):
    from restorekit.manifest import PrecisionPlan

    m = make_manifest(precision="int8").replace(precision=PrecisionPlan("int8", layout="ort-cpu"))
    onnx = write_onnx_artifact(tmp_path, m)
    with pytest.raises(EngineBuildError, match="without --int8-layout ort-cpu"):
        plan_build(onnx, load_onnx_manifest(onnx), "10.3.0", RTX4090)


def test_parser_failure_lists_every_error_and_what_to_do():
    msg = str(parse_failure(Path("m.onnx"), ["In node 3 (Foo): unsupported op", "second one"]))
    assert msg.startswith("TensorRT's ONNX parser rejected m.onnx:")
    assert "In node 3 (Foo): unsupported op\n  second one" in msg
    assert "ONNX Runtime" in msg
    assert "(no parser error recorded)" in str(parse_failure(Path("m.onnx"), []))


# --- the command line for the target ------------------------------------------------------------


def test_build_command_names_only_what_differs_from_the_defaults():
    assert build_command("a.onnx") == "restore-build a.onnx"
    assert build_command("a b.onnx", EngineBuildOptions(batch=2, max_shape=(64, 96))) == (
        "restore-build 'a b.onnx' --batch 2 --max-shape 64x96"
    )

"""Can this device run that engine: TensorRT release, GPU, source ONNX, and the rebuild command."""

from __future__ import annotations

import json

import pytest

from restorekit.errors import ManifestError
from restorekit.files import file_sha256
from restorekit.manifest import (
    read_manifest,
    sidecar_path,
)
from restorekit.tensorrt.compat import check_engine_compat, rebuild_command
from restorekit.tensorrt.device import DeviceFacts
from restorekit.tensorrt.plan import EngineBuildOptions, load_onnx_manifest, plan_build
from tests.tensorrt.fake_runtime import manifest
from tests.tensorrt.fake_trt import GIB, ORIN, RTX4090, T4, make_manifest, write_onnx_artifact

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


# --- the runtime's view: an engine manifest written by hand ----------------------------------


# -- compatibility ----------------------------------------------------------------------------------
def check_engine_manifest(engine_path, manifest, trt_version, cc, onnx_path=None):
    """The runtime's check, with a device of the given compute capability."""
    device = DeviceFacts("Orin" if cc == "8.7" else f"GPU sm{cc}", cc)
    return check_engine_compat(manifest, trt_version, device, engine_path, onnx_path)


def test_mismatch_names_versions_gpus_and_rebuild_command(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(ManifestError) as info:
        check_engine_manifest(engine, manifest(trt="10.3.0.30"), "10.8.0.43", "8.9")
    msg = str(info.value)
    assert msg.startswith(
        "m.engine was built for TensorRT 10.3.0.30, this device has TensorRT 10.8.0.43"
    )
    assert "sm_87 (Orin), this GPU is sm_89" in msg
    assert msg.endswith("`restore-build mprnet.deblur.fp16.16x16.onnx --batch 2`")


@pytest.mark.parametrize(
    ("built", "here", "cc_built", "cc_here", "flags", "ok"),
    [
        ("10.3.0", "10.3.0", "8.7", "8.7", {}, True),
        ("10.3.0.30", "10.3.0.26", "8.7", "8.7", {}, True),  # build number does not matter
        ("10.3.0", "10.3.1", "8.7", "8.7", {}, False),
        ("10.3.0", "10.3.0", "8.7", "8.6", {}, False),
        ("10.3.0", "10.8.0", "8.6", "8.6", {"version_compatible": True}, True),
        ("10.8.0", "10.3.0", "8.6", "8.6", {"version_compatible": True}, False),  # older runtime
        ("10.3.0", "11.0.0", "8.6", "8.6", {"version_compatible": True}, False),  # new major
        ("10.3.0", "10.3.0", "8.6", "8.9", {"hardware_compatible": True}, True),
        ("10.3.0", "10.3.0", "8.6", "7.5", {"hardware_compatible": True}, False),  # pre-Ampere
        ("10.10.0", "10.9.0", "8.6", "8.6", {}, False),  # compared as versions, not strings
    ],
)
def test_version_and_hardware_rules(tmp_path, built, here, cc_built, cc_here, flags, ok):
    m = manifest(trt=built, cc=cc_built, **flags)
    if ok:
        check_engine_manifest(tmp_path / "m.engine", m, here, cc_here)
    else:
        with pytest.raises(ManifestError, match="restore-build"):
            check_engine_manifest(tmp_path / "m.engine", m, here, cc_here)


def test_onnx_hash_mismatch_and_missing_record(tmp_path):
    onnx = tmp_path / "mprnet.deblur.fp16.16x16.onnx"
    onnx.write_bytes(b"graph v1")
    m = manifest().replace(onnx_sha256=file_sha256(onnx))
    check_engine_manifest(tmp_path / "m.engine", m, "10.3.0", "8.7")  # beside and matching
    onnx.write_bytes(b"graph v2")
    with pytest.raises(ManifestError, match="another version of mprnet.deblur.fp16.16x16.onnx"):
        check_engine_manifest(tmp_path / "m.engine", m, "10.3.0", "8.7")
    # the engine record names its source ONNX when the builder wrote one
    named = m.replace(engine=m.engine.__class__(**{**m.engine.__dict__, "onnx_file": "src.onnx"}))
    with pytest.raises(ManifestError, match="`restore-build src.onnx"):
        check_engine_manifest(tmp_path / "m.engine", named, "10.4.0", "8.7")
    with pytest.raises(ManifestError, match="no engine record"):
        check_engine_manifest(tmp_path / "m.engine", m.replace(engine=None), "10.3.0", "8.7")


# -- buffer sizing ----------------------------------------------------------------------------------

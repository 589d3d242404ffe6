"""Can this device run that engine? The check the runtime makes before deserializing an engine.

A TensorRT engine runs only with the TensorRT release that built it (unless built
version-compatible: then later releases of the same major) and only on GPUs of the compute
capability it was built for (unless built hardware-compatible: then any Ampere-or-newer GPU).
TensorRT's own refusal is a cryptic deserialization error; this check reads the engine's manifest
first and says what to run instead.

Torch-free and TensorRT-free: used by the runtime (on the device) and by the engine builder.
"""

from __future__ import annotations

from pathlib import Path

from restorekit.errors import ManifestError
from restorekit.manifest import Manifest
from restorekit.tensorrt.device import DeviceFacts
from restorekit.tensorrt.onnx_source import onnx_sha256_mismatch, source_onnx, source_onnx_name
from restorekit.tensorrt.plan import EngineBuildOptions, build_command
from restorekit.tensorrt.versions import (
    parse_trt_version,
    release3,
    supports_hardware_compatibility,
)


def rebuild_command(manifest: Manifest) -> str:
    """The ``restore-build`` command that rebuilds this engine on the current device."""
    rec = manifest.engine
    shapes: dict[str, tuple[int, int]] = {}
    if rec is not None and manifest.tile is None:
        # A dynamic height/width graph: rebuild with the same profile range.
        shapes = {k: (v[2], v[3]) for k, v in rec.profile.items() if len(v) == 4}
    options = EngineBuildOptions(
        batch=manifest.batch.max,
        min_shape=shapes.get("min"),
        opt_shape=shapes.get("opt"),
        max_shape=shapes.get("max"),
        hardware_compatible=bool(rec and rec.hardware_compatible),
        version_compatible=bool(rec and rec.version_compatible),
    )
    return build_command(source_onnx_name(manifest), options)


def check_engine_compat(
    manifest: Manifest,
    trt_version: str,
    device: DeviceFacts,
    engine_path: str | Path = "",
    onnx_path: str | Path | None = None,
) -> list[str]:
    """Check an engine's manifest against this TensorRT and GPU, and against its source ONNX.

    Args:
        manifest: the engine's manifest (sidecar ``.engine.json``).
        trt_version: ``tensorrt.__version__`` here.
        device: this GPU.
        engine_path: the engine file (names the messages; its folder is searched for the ONNX).
        onnx_path: the source ONNX to compare hashes with; ``None`` looks beside the engine and
            skips the check when it is not there (a Jetson often gets only the engine).

    Returns:
        Warnings that do not stop the engine (a different GPU model of the same compute
        capability: it runs, TensorRT advises rebuilding for best speed).

    Raises:
        ManifestError: the manifest is not an engine's, or the engine cannot run here; the message
            gives the ``restore-build`` command to run on this device.
    """
    name = Path(engine_path).name or manifest.model
    rec = manifest.engine
    if rec is None:
        raise ManifestError(
            f"{name}'s manifest has no engine record: it describes an ONNX graph, not a TensorRT "
            "engine. Build one with `restore-build` or run the ONNX with the ONNX Runtime backend."
        )
    built = parse_trt_version(rec.tensorrt_version, what="engine's", error=ManifestError)
    here = parse_trt_version(trt_version, what="installed", error=ManifestError)
    problems = []
    if rec.version_compatible:
        if here.major != built.major or release3(here) < release3(built):
            problems.append(
                f"TensorRT {rec.tensorrt_version} (version-compatible: runs on {built.major}.x "
                f"from {rec.tensorrt_version} on), this device has TensorRT {trt_version}"
            )
    elif release3(here) != release3(built):
        problems.append(f"TensorRT {rec.tensorrt_version}, this device has TensorRT {trt_version}")
    built_sm = "sm_" + rec.compute_capability.replace(".", "")
    if rec.hardware_compatible:
        if not supports_hardware_compatibility(device.cc_tuple):
            problems.append(
                f"Ampere-or-newer GPUs (hardware-compatible), this GPU is {device.name} "
                f"({device.sm})"
            )
    elif rec.compute_capability != device.compute_capability:
        problems.append(f"{built_sm} ({rec.gpu_name}), this GPU is {device.sm} ({device.name})")
    if problems:
        raise ManifestError(
            f"{name} was built for " + "; and for ".join(problems) + ". TensorRT engines do not "
            f"move between these; rebuild it here from its ONNX: `{rebuild_command(manifest)}`"
        )
    onnx = (
        Path(onnx_path)
        if onnx_path
        else (source_onnx(engine_path, manifest) if engine_path else None)
    )
    if onnx is not None and onnx.is_file():
        actual = onnx_sha256_mismatch(onnx, manifest.onnx_sha256)
        if actual is not None:
            raise ManifestError(
                f"{name} was built from another version of {onnx.name} (sha256 "
                f"{manifest.onnx_sha256[:12]}..., the file now has {actual[:12]}...): rebuild it: "
                f"`{rebuild_command(manifest)}`"
            )
    warnings = []
    if not rec.hardware_compatible and rec.gpu_name and rec.gpu_name != device.name:
        warnings.append(
            f"{name} was built on {rec.gpu_name}, this is {device.name} (same {device.sm}): it "
            f"runs, but may be slower than an engine built here (`{rebuild_command(manifest)}`)"
        )
    return warnings

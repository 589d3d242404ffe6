"""ONNX -> TensorRT engine: every decision of the build, in plain Python.

What to build is decided here from the ONNX's manifest, the TensorRT version and the device
(:func:`plan_build` -> :class:`BuildPlan`): strongly typed network or legacy precision flags,
optimisation profile shapes, workspace limit, timing-cache file, engine file name and the engine's
manifest; and what to tell the user when TensorRT fails. The TensorRT calls themselves live in
:mod:`restorekit.tensorrt.builder`, which only carries a plan out, so the CPU tests cover every
decision and the calls are tested with a fake.

Torch-free and TensorRT-free: engines are built on the target (a Jetson has no PyTorch), from the
ONNX copied there.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from restorekit import __version__
from restorekit.errors import EngineBuildError, ManifestError, TileSizeError
from restorekit.files import file_sha256
from restorekit.manifest import BatchRange, EngineRecord, Manifest, read_manifest
from restorekit.naming import engine_name
from restorekit.tensorrt.device import GIB, DeviceFacts
from restorekit.tensorrt.onnx_source import onnx_sha256_mismatch
from restorekit.tensorrt.versions import (
    ALWAYS_STRONGLY_TYPED_SINCE,
    COMPATIBILITY_FLAGS_SINCE,
    EXPLICIT_BATCH_IMPLIED_SINCE,
    PROGRESS_MONITOR_SINCE,
    STRONGLY_TYPED_SINCE,
    parse_trt_version,
    short_trt_version,
    supports_hardware_compatibility,
)

JETSON_WORKSPACE_GIB = 1.0  # Jetson builds that ask for more run out of (shared) memory
DESKTOP_WORKSPACE_GIB = 4.0
# Dynamic height/width graphs built without --min/--opt/--max-shape get this range (rounded up to
# the model's multiple; capped by its largest safe tile).
DEFAULT_DYNAMIC_HW = (128, 256, 512)

Shape4 = tuple[int, int, int, int]


@dataclass(frozen=True)
class EngineBuildOptions:
    """How to build an engine. ``None`` fields take the defaults described here.

    Attributes:
        output_dir: folder for the engine and its manifest; default: the ONNX's folder.
        workspace_gib: builder workspace limit in GiB; default 1 on a Jetson, else 4 (at most half
            the GPU's memory).
        batch: largest batch of the profile (also its optimum); default: the manifest's.
        min_shape, opt_shape, max_shape: (height, width) range of a dynamic-height/width ONNX;
            default 128/256/512 rounded to the model's multiple. A static ONNX has its tile only.
        timing_cache: timing-cache file; default one per TensorRT version and compute capability
            under ``$RESTOREKIT_CACHE`` (else ``$XDG_CACHE_HOME/restorekit``, ``~/.cache/...``).
        hardware_compatible: build for every Ampere-or-newer desktop GPU (slower engine).
        version_compatible: build an engine later TensorRT releases of the same major can run.
    """

    output_dir: Path | None = None
    workspace_gib: float | None = None
    batch: int | None = None
    min_shape: tuple[int, int] | None = None
    opt_shape: tuple[int, int] | None = None
    max_shape: tuple[int, int] | None = None
    timing_cache: Path | None = None
    hardware_compatible: bool = False
    version_compatible: bool = False


@dataclass(frozen=True)
class ProfileShapes:
    """The optimisation profile of the image input, each shape ``(N, C, H, W)``."""

    min: Shape4
    opt: Shape4
    max: Shape4

    def to_record(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(H, W) when the profile admits one spatial shape only."""
        if self.min[2:] == self.max[2:]:
            return self.min[2], self.min[3]
        return None


@dataclass(frozen=True)
class BuildPlan:
    """Everything :mod:`restorekit.tensorrt.builder` needs to build, decided before TensorRT is
    touched.

    ``network_flags`` name members of ``trt.NetworkDefinitionCreationFlag`` and ``builder_flags``
    members of ``trt.BuilderFlag``; ``hardware_compatibility`` a member of
    ``trt.HardwareCompatibilityLevel`` or ``None``.
    """

    onnx_path: Path
    engine_path: Path
    input_name: str
    profile: ProfileShapes
    workspace_bytes: int
    timing_cache_path: Path
    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    hardware_compatibility: str | None
    progress_monitor: bool
    manifest: Manifest
    notes: tuple[str, ...] = ()


def shape_text(shape: Sequence[int]) -> str:
    """``(1, 3, 64, 96)`` -> ``"1x3x64x96"``, as messages and the CLI write shapes."""
    return "x".join(str(d) for d in shape)


# --- the source ONNX ----------------------------------------------------------------------------


def load_onnx_manifest(onnx_path: str | Path) -> Manifest:
    """Read the ONNX's manifest and check the file is the one the manifest describes.

    Raises:
        ManifestError: no manifest; it describes an engine; or the ONNX was changed after export.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ManifestError(f"{onnx_path} does not exist")
    manifest = read_manifest(onnx_path)
    if manifest.engine is not None:
        raise ManifestError(
            f"{onnx_path.name}'s manifest describes a TensorRT engine, not an ONNX graph; "
            "build from the .onnx file that `restore-export` wrote"
        )
    actual = onnx_sha256_mismatch(onnx_path, manifest.onnx_sha256)
    if actual is not None:
        raise ManifestError(
            f"{onnx_path.name} does not match its manifest (sha256 {actual[:12]}..., manifest "
            f"says {manifest.onnx_sha256[:12]}...): the ONNX was modified after export; "
            "re-export it with `restore-export` (or copy the matching .onnx.json beside it)"
        )
    return manifest


# --- decisions ----------------------------------------------------------------------------------


def network_flags_for(
    trt_version: str, precision: str, available: Iterable[str] | None = None
) -> tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Network creation flags and builder flags for a typed ONNX on this TensorRT.

    Precision lives in the ONNX graph, so the network is strongly typed wherever TensorRT can do it
    (9.x/10.x: ``STRONGLY_TYPED``; 11+: always, flag deprecated). Only an older TensorRT gets the
    legacy ``FP16``/``INT8`` builder flags (which strongly typed networks reject).

    Args:
        trt_version: TensorRT version text.
        precision: the manifest's precision, ``fp32``/``fp16``/``int8``.
        available: names of ``NetworkDefinitionCreationFlag`` members this TensorRT has (a build
            of 9.x without the flag falls back to the legacy path); ``None``: judge by version.

    Returns:
        (strongly_typed, network_flags, builder_flags, notes)

    Raises:
        EngineBuildError: the version text is not a version.
        ManifestError: a legacy build for a precision restorekit does not know.
    """
    version = parse_trt_version(trt_version)
    if version >= ALWAYS_STRONGLY_TYPED_SINCE:
        return True, (), (), ()
    has_flag = version >= STRONGLY_TYPED_SINCE and (
        available is None or "STRONGLY_TYPED" in set(available)
    )
    explicit_batch = () if version >= EXPLICIT_BATCH_IMPLIED_SINCE else ("EXPLICIT_BATCH",)
    if has_flag:
        return True, explicit_batch + ("STRONGLY_TYPED",), (), ()
    builder = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}.get(precision)
    if builder is None:
        raise ManifestError(f"unknown precision {precision!r} in the manifest; re-export the ONNX")
    notes = (
        f"TensorRT {trt_version} cannot build strongly typed networks: the graph's types are "
        "hints only and TensorRT may compute nodes the export kept in FP32 at lower precision; "
        "check the engine's output (TensorRT 10 or newer follows the graph exactly)",
    )
    return False, explicit_batch, builder, notes if precision != "fp32" else ()


def profile_shapes(manifest: Manifest, options: EngineBuildOptions) -> ProfileShapes:
    """Optimisation profile of the input from the manifest's tile and batch and the options.

    Raises:
        TileSizeError: shapes given for a static ONNX, shapes breaking the model's size rule or
            largest safe tile, or min > opt > max out of order.
    """
    batch = manifest.batch
    if options.batch is not None:
        if options.batch < 1:
            raise TileSizeError(f"--batch must be at least 1 (got {options.batch})")
        batch = BatchRange(min(batch.min, options.batch), options.batch, options.batch)
    channels = manifest.input.channels
    given = {"min": options.min_shape, "opt": options.opt_shape, "max": options.max_shape}
    if manifest.tile is not None:
        tile = tuple(manifest.tile)
        wrong = {k: v for k, v in given.items() if v is not None and tuple(v) != tile}
        if wrong:
            k, v = next(iter(wrong.items()))
            raise TileSizeError(
                f"{manifest.model}'s ONNX was exported for {tile[0]}x{tile[1]} tiles only; "
                f"--{k}-shape {v[0]}x{v[1]} is not possible. Export another tile "
                f"(restore-export {manifest.model} --tile {v[0]}x{v[1]}) and build from that."
            )
        hw = {"min": tile, "opt": tile, "max": tile}
    else:
        hw = _dynamic_hw(manifest, given)
    return ProfileShapes(
        (batch.min, channels, *hw["min"]),
        (batch.opt, channels, *hw["opt"]),
        (batch.max, channels, *hw["max"]),
    )


def _dynamic_hw(
    manifest: Manifest, given: dict[str, tuple[int, int] | None]
) -> dict[str, tuple[int, int]]:
    m = max(1, manifest.multiple_of)
    if all(v is None for v in given.values()):
        lo, mid, hi = (((s + m - 1) // m) * m for s in DEFAULT_DYNAMIC_HW)
        hw = {"min": (lo, lo), "opt": (mid, mid), "max": (hi, hi)}
        if manifest.max_tile_area:
            # Keep the default inside the model's memory bound: shrink the top of the range.
            while hw["max"][0] * hw["max"][1] > manifest.max_tile_area and hw["max"][0] > m:
                side = hw["max"][0] - m
                hw["max"] = (side, side)
            hw["opt"] = min(hw["opt"], hw["max"])
            hw["min"] = min(hw["min"], hw["opt"])
    else:
        # Missing ends take the nearest given shape: --max-shape alone means a fixed shape.
        opt = given["opt"] or given["max"] or given["min"]
        hw = {"min": given["min"] or opt, "opt": opt, "max": given["max"] or opt}
    for key, (h, w) in hw.items():
        if h % m or w % m or h < 1 or w < 1:
            raise TileSizeError(
                f"--{key}-shape {h}x{w}: {manifest.model} needs heights and widths that are "
                f"positive multiples of {m}"
            )
    for a, b in (("min", "opt"), ("opt", "max")):
        if hw[a][0] > hw[b][0] or hw[a][1] > hw[b][1]:
            raise TileSizeError(
                f"profile shapes out of order: --{a}-shape {shape_text(hw[a])} is larger than "
                f"--{b}-shape {shape_text(hw[b])} (need min <= opt <= max in both height and width)"
            )
    h, w = hw["max"]
    if manifest.max_tile_area and h * w > manifest.max_tile_area:
        raise TileSizeError(
            f"--max-shape {h}x{w} ({h * w} px) exceeds {manifest.model}'s largest safe tile "
            f"({manifest.max_tile_area} px): its attention memory grows with the tile area"
        )
    return hw


def default_workspace_bytes(device: DeviceFacts) -> int:
    """1 GiB on a Jetson (its GPU shares system memory); else 4 GiB, at most half the GPU."""
    if device.jetson:
        return int(JETSON_WORKSPACE_GIB * GIB)
    workspace = int(DESKTOP_WORKSPACE_GIB * GIB)
    if device.total_memory:
        workspace = min(workspace, device.total_memory // 2)
    return workspace


def default_cache_dir() -> Path:
    """``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``, else ``~/.cache/restorekit``."""
    if os.environ.get("RESTOREKIT_CACHE"):
        return Path(os.environ["RESTOREKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "restorekit"


def timing_cache_path(trt_version: str, device: DeviceFacts, override: Path | None = None) -> Path:
    """One timing cache per TensorRT version and compute capability, reused by every build there.

    A cache from another version or GPU is useless to TensorRT (or rejected), hence the key.
    """
    if override is not None:
        return Path(override)
    cc = device.compute_capability.replace(".", "")
    return default_cache_dir() / "timing" / f"trt{short_trt_version(trt_version)}-sm{cc}.cache"


def plan_build(
    onnx_path: str | Path,
    manifest: Manifest,
    trt_version: str,
    device: DeviceFacts,
    options: EngineBuildOptions | None = None,
    available_network_flags: Iterable[str] | None = None,
) -> BuildPlan:
    """Decide everything about a build: flags, profile, workspace, cache, file name, manifest.

    Args:
        onnx_path: the source ONNX (its manifest already read and checked).
        manifest: the ONNX's manifest (:func:`load_onnx_manifest`).
        trt_version: ``trt.__version__`` of the TensorRT that will build.
        device: the GPU the engine is for.
        options: build options; ``None`` means all defaults.
        available_network_flags: ``trt.NetworkDefinitionCreationFlag`` member names, if known.

    Raises:
        TileSizeError: impossible profile shapes (see :func:`profile_shapes`).
        EngineBuildError: an option this TensorRT or GPU cannot honour, or a bad workspace.
    """
    options = options or EngineBuildOptions()
    onnx_path = Path(onnx_path)
    if manifest.precision.layout == "ort-cpu":
        raise EngineBuildError(
            f"{onnx_path.name} is INT8 laid out for ONNX Runtime on a CPU (uint8 activations), "
            "which TensorRT does not build; run it with restore-run, or export again with --int8 "
            "and without --int8-layout ort-cpu for an engine"
        )
    version = parse_trt_version(trt_version)
    strongly, net_flags, builder_flags, notes = network_flags_for(
        trt_version, manifest.precision.precision, available_network_flags
    )
    profile = profile_shapes(manifest, options)

    if options.workspace_gib is not None:
        if options.workspace_gib <= 0:
            raise EngineBuildError(f"--workspace must be positive (got {options.workspace_gib})")
        workspace = int(options.workspace_gib * GIB)
    else:
        workspace = default_workspace_bytes(device)

    if (options.hardware_compatible or options.version_compatible) and (
        version < COMPATIBILITY_FLAGS_SINCE
    ):
        raise EngineBuildError(
            f"TensorRT {trt_version} cannot build hardware- or version-compatible engines "
            "(TensorRT 8.6 or newer can); drop --hardware-compatible/--version-compatible"
        )
    hardware = None
    if options.hardware_compatible:
        if device.jetson:
            raise EngineBuildError(
                "--hardware-compatible is for desktop GPUs (Ampere and newer); TensorRT does not "
                "support it on Jetson. Build on each Jetson model instead (drop the flag)."
            )
        if not supports_hardware_compatibility(device.cc_tuple):
            raise EngineBuildError(
                f"--hardware-compatible needs an Ampere or newer GPU (sm_80+); this is "
                f"{device.name} ({device.sm}). Drop the flag."
            )
        hardware = "AMPERE_PLUS"
    if options.version_compatible:
        builder_flags = builder_flags + ("VERSION_COMPATIBLE",)

    short = short_trt_version(trt_version)
    name_tile = manifest.tile if manifest.tile is not None else profile.fixed_hw
    out_dir = Path(options.output_dir) if options.output_dir is not None else onnx_path.parent
    engine_path = out_dir / engine_name(
        manifest.model, manifest.precision.precision, name_tile, short, device.compute_capability
    )
    record = EngineRecord(
        tensorrt_version=short,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        strongly_typed=strongly,
        hardware_compatible=hardware is not None,
        version_compatible=options.version_compatible,
        profile=profile.to_record(),
        onnx_file=onnx_path.name,
    )
    engine_manifest = manifest.replace(
        batch=BatchRange(profile.min[0], profile.opt[0], profile.max[0]),
        engine=record,
        onnx_sha256=manifest.onnx_sha256 or file_sha256(onnx_path),
        restorekit_version=__version__,
    )
    return BuildPlan(
        onnx_path=onnx_path,
        engine_path=engine_path,
        input_name=manifest.input.name,
        profile=profile,
        workspace_bytes=workspace,
        timing_cache_path=timing_cache_path(trt_version, device, options.timing_cache),
        strongly_typed=strongly,
        network_flags=net_flags,
        builder_flags=builder_flags,
        hardware_compatibility=hardware,
        progress_monitor=version >= PROGRESS_MONITOR_SINCE,
        manifest=engine_manifest,
        notes=notes,
    )


# --- failures -----------------------------------------------------------------------------------

# "No implementation" is how TensorRT reports that no tactic for a layer fit in the memory it may
# use: too small a workspace limit, or (typical on a Jetson) too little free memory at all.
_NO_TACTIC = re.compile(r"could not find any implementation for node", re.I)
# An allocation that failed outright: the limit asked for more than the device has free.
_ALLOCATION_FAILED = (
    re.compile(r"out of memory", re.I),
    re.compile(r"\boutofmemory\b", re.I),
    re.compile(r"requested amount of gpu memory .* could not be allocated", re.I),
    re.compile(r"insufficient (device |gpu )?memory", re.I),
)


def is_out_of_memory(messages: Iterable[str]) -> bool:
    """Whether TensorRT's error messages describe a build that ran out of memory."""
    return any(p.search(m) for m in messages for p in (_NO_TACTIC, *_ALLOCATION_FAILED))


def build_failure(plan: BuildPlan, errors: Sequence[str], device: DeviceFacts) -> EngineBuildError:
    """The error to raise when ``build_serialized_network`` returned nothing."""
    detail = "\n  ".join(errors[-8:]) if errors else "(TensorRT logged no error)"
    if not is_out_of_memory(errors):
        return EngineBuildError(f"TensorRT could not build {plan.engine_path.name}:\n  {detail}")
    gib = plan.workspace_bytes / GIB
    allocation_failed = any(p.search(m) for m in errors for p in _ALLOCATION_FAILED)
    smaller = f"--workspace {gib / 2:g} (if the limit is more than the device has free)"
    larger = f"--workspace {gib * 2:g} (if no tactic fits in {gib:g} GiB and the memory is there)"
    first, second = (smaller, larger) if allocation_failed else (larger, smaller)
    tile = max(plan.profile.max[2] // 2, 1), max(plan.profile.max[3] // 2, 1)
    advice = [
        f"try {first}; or {second}",
        f"or build a smaller profile: --batch {max(plan.profile.max[0] // 2, 1)}, or a smaller "
        f"tile (restore-export ... --tile {tile[0]}x{tile[1]}, then restore-build that ONNX)",
    ]
    if device.jetson:
        advice.append(
            "on a Jetson the GPU shares system memory with everything else: close other "
            "programs (and the desktop session) before building"
        )
    how = "" if allocation_failed else " (TensorRT says 'could not find any implementation')"
    return EngineBuildError(
        f"building {plan.engine_path.name} ran out of memory{how}; workspace limit {gib:g} GiB, "
        f"profile max {shape_text(plan.profile.max)}.\n"
        + "\n".join(f"- {a}" for a in advice)
        + f"\nTensorRT said:\n  {detail}"
    )


def parse_failure(onnx_path: Path, errors: Sequence[str]) -> EngineBuildError:
    """The error to raise when TensorRT's ONNX parser rejects the graph."""
    listed = "\n  ".join(errors) if errors else "(no parser error recorded)"
    return EngineBuildError(
        f"TensorRT's ONNX parser rejected {onnx_path.name}:\n  {listed}\n"
        "Re-export with a newer restorekit/opset, or use a newer TensorRT; the ONNX still runs "
        "in ONNX Runtime meanwhile."
    )


# --- the command line for the target ----------------------------------------------------------


def build_command(onnx_path: str | Path, options: EngineBuildOptions | None = None) -> str:
    """The exact ``restore-build`` command line that builds ``onnx_path`` with ``options``.

    ``restore-export`` prints it when TensorRT is not installed, and the runtime prints it when an
    engine does not fit the device.
    """
    options = options or EngineBuildOptions()
    args = ["restore-build", str(onnx_path)]
    if options.output_dir is not None:
        args += ["-o", str(options.output_dir)]
    if options.workspace_gib is not None:
        args += ["--workspace", f"{options.workspace_gib:g}"]
    if options.batch is not None:
        args += ["--batch", str(options.batch)]
    for flag, shape in (
        ("--min-shape", options.min_shape),
        ("--opt-shape", options.opt_shape),
        ("--max-shape", options.max_shape),
    ):
        if shape is not None:
            args += [flag, f"{shape[0]}x{shape[1]}"]
    if options.timing_cache is not None:
        args += ["--timing-cache", str(options.timing_cache)]
    if options.hardware_compatible:
        args.append("--hardware-compatible")
    if options.version_compatible:
        args.append("--version-compatible")
    return shlex.join(args)


__all__ = [
    "DEFAULT_DYNAMIC_HW",
    "BuildPlan",
    "EngineBuildOptions",
    "ProfileShapes",
    "build_command",
    "build_failure",
    "default_cache_dir",
    "default_workspace_bytes",
    "is_out_of_memory",
    "load_onnx_manifest",
    "network_flags_for",
    "parse_failure",
    "plan_build",
    "profile_shapes",
    "shape_text",
    "timing_cache_path",
]

"""ONNX -> TensorRT engine: every decision of the build, in plain Python.

What to build is decided here from the ONNX's manifest, the TensorRT version and the device
(:func:`plan_build` -> :class:`BuildPlan`): strongly typed network or legacy precision flags,
optimisation profile shapes, workspace limit, timing-cache file, engine file name and the engine's
manifest. The TensorRT calls themselves live in :mod:`restorekit.export.engine_trt`, which only
carries a plan out, so the CPU tests cover every decision and the calls are tested with a fake.

Torch-free: engines are built on the target (a Jetson has no PyTorch), from the ONNX copied there.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from restorekit import __version__
from restorekit.device import GIB, DeviceFacts
from restorekit.errors import EngineBuildError, ManifestError, TileSizeError
from restorekit.files import file_sha256, write_bytes_atomic
from restorekit.manifest import BatchRange, EngineRecord, Manifest, read_manifest, write_manifest
from restorekit.naming import engine_name

JETSON_WORKSPACE_GIB = 1.0  # Jetson builds that ask for more run out of (shared) memory
DESKTOP_WORKSPACE_GIB = 4.0
# Dynamic height/width graphs built without --min/--opt/--max-shape get this range (rounded up to
# the model's multiple; capped by its largest safe tile).
DEFAULT_DYNAMIC_HW = (128, 256, 512)

# Strongly typed networks exist since TensorRT 9; TensorRT 11 is strongly typed only (the flag is
# deprecated and ignored there, the FP16/INT8 builder flags are gone).
STRONGLY_TYPED_SINCE = Version("9.0")
ALWAYS_STRONGLY_TYPED_SINCE = Version("11.0")
EXPLICIT_BATCH_IMPLIED_SINCE = Version("10.0")
COMPATIBILITY_FLAGS_SINCE = Version("8.6")
PROGRESS_MONITOR_SINCE = Version("10.0")
AMPERE = (8, 0)

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
    """Everything :mod:`engine_trt` needs to build, decided before TensorRT is touched.

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

    def describe(self) -> list[str]:
        """Short lines for the CLI: what will be built and how."""
        typing_ = "strongly typed" if self.strongly_typed else "weakly typed (legacy flags)"
        flags = ", ".join(self.network_flags + self.builder_flags) or "none"
        p = self.profile
        lines = [
            f"network: {typing_}; flags: {flags}",
            f"profile {self.input_name}: min {_dims(p.min)}, opt {_dims(p.opt)}, max {_dims(p.max)}",
            f"workspace: {self.workspace_bytes / GIB:g} GiB; timing cache: {self.timing_cache_path}",
        ]
        if self.hardware_compatibility:
            lines.append(f"hardware compatibility: {self.hardware_compatibility}")
        return lines + [f"note: {n}" for n in self.notes]


@dataclass(frozen=True)
class EngineBuildResult:
    engine_path: Path
    manifest_path: Path
    manifest: Manifest
    plan: BuildPlan
    seconds: float
    timing_cache_written: bool
    trt_warnings: tuple[str, ...] = ()


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def parse_trt_version(text: str) -> Version:
    """``"10.3.0.30"`` -> ``Version``.

    Raises:
        EngineBuildError: the text is not a version (a broken TensorRT install).
    """
    try:
        return Version(str(text))
    except InvalidVersion as exc:
        raise EngineBuildError(f"cannot read the TensorRT version {text!r}: {exc}") from exc


def short_trt_version(text: str) -> str:
    """Major.minor.patch: engines and timing caches are compatible at that granularity
    (``"11.4.0.106"`` -> ``"11.4.0"``)."""
    release = parse_trt_version(text).release
    return ".".join(str(p) for p in (tuple(release) + (0, 0))[:3])


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
    if manifest.onnx_sha256:
        actual = file_sha256(onnx_path)
        if actual != manifest.onnx_sha256:
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
                f"profile shapes out of order: --{a}-shape {_dims(hw[a])} is larger than "
                f"--{b}-shape {_dims(hw[b])} (need min <= opt <= max in both height and width)"
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
        if device.cc_tuple < AMPERE:
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
        f"profile max {_dims(plan.profile.max)}.\n"
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


# --- progress -----------------------------------------------------------------------------------


class BuildProgress:
    """tqdm bars for TensorRT's nested build phases (fed by ``trt.IProgressMonitor``).

    Plain Python so it is testable; :mod:`engine_trt` forwards the monitor's calls here.
    """

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bars: dict[str, Any] = {}
        self.cancelled = False

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        depth = len(self.bars)
        self.bars[phase_name] = tqdm(
            total=num_steps, desc=phase_name, position=depth, leave=depth == 0,
            file=self.stream, unit="step", dynamic_ncols=True,
        )  # fmt: skip

    def step_complete(self, phase_name: str, step: int) -> bool:
        bar = self.bars.get(phase_name)
        if bar is not None:
            bar.update(max(step + 1 - bar.n, 0))
        return not self.cancelled  # False asks TensorRT to stop the build

    def phase_finish(self, phase_name: str) -> None:
        bar = self.bars.pop(phase_name, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        for name in list(self.bars):
            self.phase_finish(name)


# --- the build ----------------------------------------------------------------------------------


def engine_from_onnx(
    onnx_path: str | Path,
    options: EngineBuildOptions | None = None,
    *,
    trt: Any = None,
    device: DeviceFacts | None = None,
    progress: bool = True,
) -> EngineBuildResult:
    """Build a TensorRT engine from a restorekit ONNX and write it with its manifest.

    Args:
        onnx_path: ONNX written by ``restore-export`` (its ``.onnx.json`` beside it).
        options: build options (``None``: defaults).
        trt: the ``tensorrt`` module (tests pass a fake); default: import it.
        device: the GPU (tests pass one); default: :func:`restorekit.device.query_device`.
        progress: show tqdm bars for the build phases.

    Raises:
        MissingDependencyError: TensorRT (or a CUDA binding to describe the GPU) is not installed.
        ManifestError: the ONNX has no manifest or was modified after export.
        TileSizeError: impossible profile shapes.
        EngineBuildError: TensorRT rejected the graph or the build failed (out of memory says so).
    """
    from restorekit.export import engine_trt

    options = options or EngineBuildOptions()
    onnx_path = Path(onnx_path)
    manifest = load_onnx_manifest(onnx_path)
    if trt is None:
        trt = engine_trt.import_tensorrt()
    if device is None:
        from restorekit.device import query_device

        device = query_device()
    plan = plan_build(
        onnx_path, manifest, engine_trt.tensorrt_version(trt), device, options,
        engine_trt.network_flag_names(trt),
    )  # fmt: skip
    cache = plan.timing_cache_path.read_bytes() if plan.timing_cache_path.is_file() else b""
    monitor = BuildProgress(enabled=progress and plan.progress_monitor)
    start = time.perf_counter()
    try:
        outcome = engine_trt.serialize_engine(trt, plan, onnx_path.read_bytes(), cache, monitor)
    finally:
        monitor.close()
    seconds = time.perf_counter() - start
    if monitor.cancelled:
        raise KeyboardInterrupt
    if outcome.parser_errors is not None:
        raise parse_failure(onnx_path, outcome.parser_errors)
    if outcome.engine is None:
        raise build_failure(plan, outcome.errors, device)
    write_bytes_atomic(plan.engine_path, outcome.engine)
    manifest_path = write_manifest(plan.engine_path, plan.manifest)
    cache_written = False
    if outcome.timing_cache:
        # Written only after a successful build, atomically, so a crash never leaves a torn cache.
        write_bytes_atomic(plan.timing_cache_path, outcome.timing_cache)
        cache_written = True
    warnings = tuple(
        line.removeprefix("warning: ") for line in outcome.log if line.startswith("warning: ")
    )
    return EngineBuildResult(
        plan.engine_path, manifest_path, plan.manifest, plan, seconds, cache_written, warnings
    )


def build_summary(result: EngineBuildResult) -> list[str]:
    """Lines the CLI prints after a successful build."""
    size_mb = result.engine_path.stat().st_size / 1e6
    rec = result.manifest.engine
    assert rec is not None
    lines = [
        *result.plan.describe(),
        f"built for {rec.gpu_name} (sm_{rec.compute_capability.replace('.', '')}), TensorRT "
        f"{rec.tensorrt_version}, in {result.seconds:.1f} s",
        f"wrote {result.engine_path} ({size_mb:.1f} MB), manifest {result.manifest_path.name}",
    ]
    if result.trt_warnings:
        n = len(result.trt_warnings)
        lines.append(f"TensorRT warned {n} time(s); first: {result.trt_warnings[0]}")
    return lines


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


def engine_or_command(
    onnx_path: str | Path, options: EngineBuildOptions | None = None, progress: bool = True
) -> list[str]:
    """For ``restore-export --engine``: build the engine if TensorRT is here, else say how to.

    Returns:
        Lines to print: the build summary, or the ``restore-build`` command to run on the target.

    Raises:
        Same as :func:`engine_from_onnx`, except a missing TensorRT.
    """
    from restorekit.export import engine_trt

    if not engine_trt.tensorrt_available():
        name = Path(onnx_path).name
        return [
            "TensorRT is not installed here, so no engine was built (the ONNX above is verified).",
            f"Copy {name} and {name}.json to the target device and run there:",
            "  " + build_command(name, options),
        ]
    return build_summary(engine_from_onnx(onnx_path, options, progress=progress))


__all__ = [
    "BuildPlan",
    "BuildProgress",
    "EngineBuildOptions",
    "EngineBuildResult",
    "ProfileShapes",
    "build_command",
    "build_summary",
    "default_workspace_bytes",
    "engine_from_onnx",
    "engine_or_command",
    "is_out_of_memory",
    "load_onnx_manifest",
    "network_flags_for",
    "plan_build",
    "profile_shapes",
    "timing_cache_path",
]

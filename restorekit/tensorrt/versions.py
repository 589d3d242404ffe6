"""TensorRT versions: parsing, the granularity engines are compatible at, and feature thresholds.

Every decision that depends on the TensorRT release compares :class:`packaging.version.Version`
objects made here, never strings (``"10.0.0" < "9.0"`` as strings). Each threshold exists once.

Torch-free and TensorRT-free.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from restorekit.errors import EngineBuildError, RestoreKitError

# Strongly typed networks exist since TensorRT 9; TensorRT 11 is strongly typed only (the flag is
# deprecated and ignored there, the FP16/INT8 builder flags are gone).
STRONGLY_TYPED_SINCE = Version("9.0")
ALWAYS_STRONGLY_TYPED_SINCE = Version("11.0")
# ``EXPLICIT_BATCH`` is deprecated (implied) from 10.0 on.
EXPLICIT_BATCH_IMPLIED_SINCE = Version("10.0")
# Hardware- and version-compatible engines.
COMPATIBILITY_FLAGS_SINCE = Version("8.6")
# ``trt.IProgressMonitor`` / ``config.progress_monitor``.
PROGRESS_MONITOR_SINCE = Version("10.0")
# Hardware-compatible engines (``HardwareCompatibilityLevel.AMPERE_PLUS``) run on sm_80 and newer.
AMPERE = (8, 0)


def parse_trt_version(
    text: str, *, what: str = "", error: type[RestoreKitError] = EngineBuildError
) -> Version:
    """``"10.3.0.30"`` -> ``Version``.

    Args:
        text: the version text (``trt.__version__`` or an engine manifest's record).
        what: whose version it is, for the message (``"engine's"``, ``"installed"``).
        error: the error to raise: :class:`EngineBuildError` for the TensorRT at hand (a broken
            install), :class:`ManifestError` for a version read from a manifest.

    Raises:
        EngineBuildError: (or ``error``) the text is not a version.
    """
    try:
        return Version(str(text))
    except InvalidVersion as exc:
        whose = f"{what} " if what else ""
        raise error(f"cannot read the {whose}TensorRT version {text!r}: {exc}") from exc


def release3(version: Version) -> tuple[int, int, int]:
    """Major, minor, patch (missing parts are 0): engines and timing caches are compatible at
    that granularity, the build number does not matter."""
    major, minor, patch = (tuple(version.release) + (0, 0))[:3]
    return major, minor, patch


def short_trt_version(text: str) -> str:
    """Major.minor.patch text (``"11.4.0.106"`` -> ``"11.4.0"``), as file names and manifests
    carry it.

    Raises:
        EngineBuildError: the text is not a version.
    """
    return ".".join(str(p) for p in release3(parse_trt_version(text)))


def supports_hardware_compatibility(compute_capability: tuple[int, int]) -> bool:
    """Whether a GPU of this compute capability can build or run hardware-compatible engines."""
    return compute_capability >= AMPERE

"""TensorRT's text calibration cache, for TensorRT < 10 (implicit INT8) and ONNX Runtime's TensorRT
provider (``trt_int8_use_native_calibration_table``).

Format (docs/tensorrt.md, "The INT8 calibration cache"): a header
``TRT-<version int>-<algorithm>`` — the version int is
``major*10000 + minor*100 + patch`` from TensorRT 10 on (``100300``) and
``major*1000 + minor*100 + patch`` before (``8601``) — then one line per tensor,
``<tensor name>: <8 hex digits>``, the big-endian IEEE float32 of the scale ``amax / 127``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from restorekit.errors import ManifestError
from restorekit.files import write_text_atomic

ALGORITHMS = {
    "entropy": "EntropyCalibration2",
    "minmax": "MinMaxCalibration",
    "percentile": "EntropyCalibration2",  # TensorRT has no percentile calibrator; scales are ours
}


def version_int(version: str) -> int:
    """``"10.3.0"`` -> 100300; ``"8.6.1"`` -> 8601 (TensorRT's own encodings)."""
    v = Version(version)
    major, minor, patch = (list(v.release) + [0, 0, 0])[:3]
    return (
        major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
    )


def scale_hex(scale: float) -> str:
    """Big-endian IEEE float32 bits of ``scale`` as 8 lower-case hex digits."""
    return struct.pack(">f", scale).hex()


def hex_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


@dataclass(frozen=True)
class CalibrationCache:
    """Per-tensor scales (``amax / 127``) and the header they were written with."""

    scales: dict[str, float]
    version: int
    algorithm: str

    def header(self) -> str:
        return f"TRT-{self.version}-{self.algorithm}"

    def to_text(self) -> str:
        lines = [self.header()] + [f"{name}: {scale_hex(s)}" for name, s in self.scales.items()]
        return "\n".join(lines) + "\n"

    def check_tensors(self, tensor_names: Iterable[str]) -> None:
        """Refuse a cache written for another graph (tensor names that the graph does not have).

        Raises:
            ManifestError: some cached tensors are not in the graph.
        """
        names = set(tensor_names)
        foreign = [n for n in self.scales if n not in names]
        if foreign:
            raise ManifestError(
                f"this calibration cache was written for another graph: {len(foreign)} of its "
                f"{len(self.scales)} tensors are not in this one (e.g. {foreign[0]!r}). "
                "Re-run INT8 calibration for this ONNX (restore-export ... --int8)."
            )


def cache_from_amax(
    amax: Mapping[str, float], tensorrt_version: str = "10.3.0", method: str = "entropy"
) -> CalibrationCache:
    """A cache from per-tensor absolute maxima (symmetric int8: scale = amax / 127)."""
    scales = {name: max(float(a), 1e-12) / 127.0 for name, a in amax.items()}
    return CalibrationCache(scales, version_int(tensorrt_version), ALGORITHMS[method])


def write_cache(path: str | Path, cache: CalibrationCache) -> None:
    write_text_atomic(path, cache.to_text())


def read_cache(path: str | Path) -> CalibrationCache:
    """Parse a TensorRT text calibration cache.

    Raises:
        ManifestError: the file is missing or is not in TensorRT's text format.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"calibration cache not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines or not lines[0].startswith("TRT-") or lines[0].count("-") < 2:
        raise ManifestError(
            f"{path} is not a TensorRT calibration cache (no TRT-<version>-<algo> header)"
        )
    _, version, algorithm = lines[0].split("-", 2)
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value) != 8:
            raise ManifestError(
                f"{path}:{number}: expected '<tensor>: <8 hex digits>', got {line!r}"
            )
        try:
            scales[name] = hex_scale(value)
        except ValueError as exc:
            raise ManifestError(f"{path}:{number}: {value!r} is not hex") from exc
    return CalibrationCache(scales, int(version), algorithm)

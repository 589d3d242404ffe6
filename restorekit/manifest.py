"""The manifest: what an artifact (``.onnx`` / ``.engine``) is and how it wants its input.

Every artifact has a sidecar ``<file>.json`` (e.g. ``mprnet.deblur.fp32.256x256.onnx.json``); an
ONNX file also carries the same record in its ``metadata_props`` under ``restorekit.manifest``
(with ``onnx_sha256`` left empty there, since the hash covers the file that contains it). The
runtime reads the manifest, so a user never re-states layout, value range, scale or tile shape.

Torch-free: the runtime and engine builder import this on devices without PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.errors import ManifestError
from restorekit.files import write_text_atomic

MANIFEST_VERSION = 1
METADATA_KEY = "restorekit.manifest"
# Every graph restorekit writes has one image input and one image output with these names.
INPUT_NAME = "input"
# INT8 graph layouts (``PrecisionPlan.layout``): for TensorRT, or for ONNX Runtime on a CPU.
INT8_LAYOUTS = ("tensorrt", "ort-cpu")
OUTPUT_NAME = "output"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, layout and pixel conventions."""

    name: str
    channels: int
    layout: str = "NCHW"
    dtype: str = "float32"
    color_order: str = "RGB"
    value_range: float = 1.0


@dataclass(frozen=True)
class BatchRange:
    """Batch sizes an artifact accepts (the engine's optimisation profile)."""

    min: int = 1
    opt: int = 1
    max: int = 1


@dataclass(frozen=True)
class PrecisionPlan:
    """Which precision the graph computes in, and which nodes were kept higher (and why)."""

    precision: str = "fp32"  # fp32 | fp16 | int8
    kept_fp32: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)
    # INT8 only: "tensorrt" (symmetric int8, Q/DQ on Conv/MatMul inputs) or "ort-cpu" (uint8,
    # integer between convolutions: for ONNX Runtime on a CPU; TensorRT does not build it).
    layout: str = ""


@dataclass(frozen=True)
class CalibrationRecord:
    """The image set and method an INT8 graph was calibrated with."""

    fingerprint: str
    count: int
    method: str
    source: str = ""


@dataclass(frozen=True)
class EngineRecord:
    """What a TensorRT engine was built with and for."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    strongly_typed: bool = True
    hardware_compatible: bool = False
    version_compatible: bool = False
    # Optimisation profile of the input, "min"/"opt"/"max" -> [N, C, H, W]: the shapes the engine
    # accepts (the only record of them for dynamic height/width graphs).
    profile: dict[str, list[int]] = field(default_factory=dict)
    onnx_file: str = ""  # the ONNX it was built from, for the rebuild command


@dataclass(frozen=True)
class Manifest:
    """The record every artifact carries. ``tile`` is ``None`` for dynamic height/width graphs."""

    model: str  # full registry name, e.g. "mprnet.deblur"
    task: str
    input: TensorSpec
    output: TensorSpec
    scale: int
    multiple_of: int
    tile: tuple[int, int] | None
    batch: BatchRange
    overlap: int
    blend: str
    precision: PrecisionPlan
    opset: int
    weights: str  # "random (seed N)" or "<file name> sha256:<hex>"
    onnx_sha256: str = ""
    calibration: CalibrationRecord | None = None
    engine: EngineRecord | None = None
    max_tile_area: int | None = None
    # Constructor arguments that differ from the variant's (tests' tiny configurations).
    build_overrides: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    restorekit_version: str = ""
    manifest_version: int = MANIFEST_VERSION

    @property
    def arch(self) -> str:
        return self.model.partition(".")[0]

    @property
    def dynamic_hw(self) -> bool:
        return self.tile is None

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Rebuild a manifest from its JSON form.

        Raises:
            ManifestError: the record is from a newer restorekit or lacks required fields.
        """
        try:
            version = int(data.get("manifest_version", 0))
            if version > MANIFEST_VERSION:
                raise ManifestError(
                    f"manifest version {version} is newer than this restorekit understands "
                    f"({MANIFEST_VERSION}); upgrade restorekit"
                )
            d = dict(data)
            d["input"] = TensorSpec(**d["input"])
            d["output"] = TensorSpec(**d["output"])
            d["batch"] = BatchRange(**d["batch"])
            plan = dict(d["precision"])
            plan["kept_fp32"] = tuple(plan.get("kept_fp32", ()))
            d["precision"] = PrecisionPlan(**plan)
            d["tile"] = tuple(d["tile"]) if d.get("tile") is not None else None
            if d.get("calibration"):
                d["calibration"] = CalibrationRecord(**d["calibration"])
            if d.get("engine"):
                d["engine"] = EngineRecord(**d["engine"])
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from exc


def sidecar_path(artifact: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_manifest(artifact: str | Path, manifest: Manifest) -> Path:
    """Write the sidecar manifest atomically; returns its path."""
    path = sidecar_path(artifact)
    write_text_atomic(path, manifest.to_json() + "\n")
    return path


def read_manifest(artifact: str | Path) -> Manifest:
    """Read an artifact's manifest from its sidecar, or else from the ONNX ``metadata_props``.

    Raises:
        ManifestError: neither exists or the record is malformed; the message says how to re-export.
    """
    artifact = Path(artifact)
    side = sidecar_path(artifact)
    if side.is_file():
        try:
            return Manifest.from_dict(json.loads(side.read_text()))
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{side} is not valid JSON: {exc}") from exc
    if artifact.suffix == ".onnx" and artifact.is_file():
        embedded = _embedded_manifest(artifact)
        if embedded is not None:
            return embedded
    raise ManifestError(
        f"no manifest for {artifact}: expected {side.name} beside it. Artifacts made by "
        "`restore-export` / `restore-build` carry one; copy it along with the artifact."
    )


def _embedded_manifest(path: Path) -> Manifest | None:
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return Manifest.from_dict(json.loads(prop.value))
    return None

"""The ONNX an engine is built from: its name, where it sits beside an engine, and whether it is
still the file its manifest describes.

Both sides use this: the build refuses an ONNX changed after export
(:func:`restorekit.tensorrt.plan.load_onnx_manifest`), and the runtime refuses an engine whose
source ONNX has changed since the build (:func:`restorekit.tensorrt.compat.check_engine_compat`).
It sits below both so that neither imports the other for it.

Torch-free and TensorRT-free.
"""

from __future__ import annotations

from pathlib import Path

from restorekit.files import file_sha256
from restorekit.manifest import Manifest
from restorekit.naming import onnx_name


def source_onnx_name(manifest: Manifest) -> str:
    """The ONNX file name an engine was built from: the one its engine record gives (the builder
    writes it), else the exporter's naming for the manifest's model, precision and tile."""
    rec = manifest.engine
    return (rec.onnx_file if rec else "") or onnx_name(
        manifest.model, manifest.precision.precision, manifest.tile
    )


def source_onnx(engine_path: str | Path, manifest: Manifest) -> Path:
    """Where the ONNX an engine was built from would sit: beside the engine, under the name its
    engine record gives (else the exporter's naming)."""
    return Path(engine_path).with_name(source_onnx_name(manifest))


def onnx_sha256_mismatch(onnx_path: str | Path, recorded_sha256: str) -> str | None:
    """Does this ONNX file still match the sha256 its manifest records?

    Args:
        onnx_path: the ONNX file (it must exist).
        recorded_sha256: the manifest's ``onnx_sha256``; empty means nothing was recorded.

    Returns:
        ``None`` when the file matches (or nothing was recorded); else the file's actual sha256,
        for the caller's message.
    """
    if not recorded_sha256:
        return None
    actual = file_sha256(onnx_path)
    return None if actual == recorded_sha256 else actual

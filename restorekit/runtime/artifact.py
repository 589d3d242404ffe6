"""Open an artifact (``.onnx`` or ``.engine``) with its manifest behind the right backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from restorekit.errors import InputError, ManifestError
from restorekit.manifest import Manifest, read_manifest
from restorekit.runtime.backend import Backend
from restorekit.runtime.ort_backend import OrtBackend, OrtOptions

if TYPE_CHECKING:
    from restorekit.runtime.openvino_backend import OpenVinoOptions

BACKENDS = ("ort", "trt", "openvino")


def default_backend(artifact: str | Path) -> str:
    """``ort`` for ``.onnx``, ``trt`` for ``.engine``/``.plan``.

    Raises:
        InputError: the suffix is neither.
    """
    suffix = Path(artifact).suffix.lower()
    if suffix == ".onnx":
        return "ort"
    if suffix in (".engine", ".plan"):
        return "trt"
    raise InputError(f"{artifact}: expected an .onnx or .engine artifact, got {suffix!r}")


def backend_from_artifact(
    artifact: str | Path,
    backend: str | None = None,
    ort_options: OrtOptions | None = None,
    batch: int | None = None,
    openvino_options: OpenVinoOptions | None = None,
) -> tuple[Backend, Manifest]:
    """An unopened backend for ``artifact`` and its manifest.

    Args:
        artifact: an ``.onnx`` or ``.engine`` file with its sidecar manifest.
        backend: ``ort``, ``trt`` or ``openvino``; ``None`` chooses by suffix.
        ort_options: provider/session options for the ONNX Runtime backend.
        batch: tiles per call, so a dynamic-batch engine sizes its buffers for it.
        openvino_options: precision, threads and hint for the OpenVINO backend.

    Raises:
        InputError: the artifact is missing or the backend does not fit it.
        ManifestError: no readable manifest.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise InputError(f"artifact not found: {artifact}")
    backend = backend or default_backend(artifact)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    manifest = read_manifest(artifact)
    if backend == "ort":
        if artifact.suffix.lower() != ".onnx":
            raise InputError(
                f"ONNX Runtime runs .onnx files; {artifact.name} is a TensorRT engine: "
                "use --backend trt"
            )
        return OrtBackend(artifact, ort_options), manifest
    if backend == "openvino":
        if artifact.suffix.lower() != ".onnx":
            raise InputError(
                f"OpenVINO runs .onnx files; {artifact.name} is a TensorRT engine: use --backend trt"
            )
        from restorekit.runtime.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(artifact, manifest, openvino_options), manifest
    if artifact.suffix.lower() == ".onnx":
        raise ManifestError(
            f"{artifact.name} is an ONNX file; build an engine first: run `restore-build {artifact}`"
        )
    from restorekit.tensorrt.runner import TrtBackend

    return TrtBackend(artifact, manifest, batch=batch), manifest

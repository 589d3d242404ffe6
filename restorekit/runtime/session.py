"""``restorekit.open``: restore images from your own program with an exported artifact.

::

    import restorekit

    with restorekit.open("mprnet.demo_dn_s25.fp32.256x256.onnx") as model:
        restored = model.restore(frame, bgr=True)  # a frame from cv2.VideoCapture

The artifact's manifest decides everything a caller would otherwise have to repeat (tile, overlap,
value range, colour order, scale); the backend follows from the file (``.onnx``: ONNX Runtime,
``.engine``: TensorRT). Sessions, engines and GPU memory exist only inside the ``with`` block.
Torch-free, like the rest of the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from restorekit.errors import InputError, NonFiniteOutputError
from restorekit.manifest import Manifest, read_manifest
from restorekit.naming import onnx_name
from restorekit.runtime.artifact import backend_from_artifact
from restorekit.runtime.backend import Backend, BackendStateError
from restorekit.runtime.opencv import cv2
from restorekit.runtime.ort_backend import OrtOptions
from restorekit.runtime.restore import Restored, Restorer, TileOptions
from restorekit.runtime.stream import pipelined
from restorekit.runtime.tiling import describe_tiles


class RestorationSession:
    """An artifact opened for restoring images; use it as a context manager.

    Args:
        artifact: an ``.onnx`` or ``.engine`` file with its manifest beside it.
        backend: ``ort``, ``trt``, ``openvino`` or ``auto`` (the fastest admitted CPU backend and
            precision for this artifact on this machine, timed once and remembered beside it:
            :mod:`restorekit.runtime.auto`); default: from the file's suffix.
        provider: ONNX Runtime execution provider: ``cpu``, ``cuda`` or ``tensorrt``.
        threads: ONNX Runtime / OpenVINO threads (default: one per core).
        precision: OpenVINO's ``fp32``, ``bf16`` or ``int8`` (default: the artifact's own).
        tile: tile (height, width) for a dynamic-size ONNX; a static artifact has its own.
        overlap: tile overlap in pixels; default: the manifest's.
        batch: tiles per inference call; default: the manifest's.
        fallback: an FP32 artifact of the same model and tile that recomputes any tile whose
            output is NaN/Inf or far outside the value range (the numeric guard); default: for an
            FP16/INT8 artifact, the FP32 ONNX ``restore-export`` wrote beside it, if it is there;
            ``False``: no fallback.

    Raises:
        InputError: the artifact is missing or the backend does not fit it.
        ManifestError: the artifact has no readable manifest.
        ProviderError: the ONNX Runtime provider is unknown.
        PrecisionUnavailableError: a precision with another backend than OpenVINO, or unknown.
    """

    def __init__(
        self,
        artifact: str | Path,
        *,
        backend: str | None = None,
        provider: str = "cpu",
        threads: int | None = None,
        tile: tuple[int, int] | None = None,
        overlap: int | None = None,
        batch: int | None = None,
        fallback: str | Path | bool | None = None,
        precision: str | None = None,
    ) -> None:
        self.artifact = Path(artifact)
        ort = OrtOptions(provider=provider, threads=threads)
        self.choice = None  # the AutoChoice of backend="auto"
        if backend == "auto":
            from restorekit.runtime.auto import choose_backend

            self.choice = choose_backend(self.artifact, threads, batch)
            backend = self.choice.backend
            precision = self.choice.precision if backend == "openvino" else None
        openvino = None
        if backend == "openvino":
            from restorekit.runtime.openvino_backend import OpenVinoOptions

            openvino = OpenVinoOptions(precision=precision, threads=threads)
        elif precision is not None:
            from restorekit.runtime.openvino_backend import PrecisionUnavailableError

            raise PrecisionUnavailableError(
                f"precision {precision!r} is for the OpenVINO backend (backend 'openvino' or "
                "'auto'); ONNX Runtime and TensorRT run an artifact in its own precision"
            )
        self._backend, self.manifest = backend_from_artifact(
            self.artifact, backend, ort, batch=batch, openvino_options=openvino
        )
        self._tiles = TileOptions(tile=tile, overlap=overlap, batch=batch)
        self._restorer: Restorer | None = None
        self.fallback_path = fallback_artifact(self.artifact, self.manifest, fallback)
        self._fallback: Backend | None = None
        if self.fallback_path is not None:
            self._fallback, _ = backend_from_artifact(self.fallback_path, None, ort, batch=1)

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def restorer(self) -> Restorer:
        """The :class:`Restorer` driving the open backend (batch jobs use it directly).

        Raises:
            BackendStateError: outside the ``with`` block.
        """
        if self._restorer is None:
            raise BackendStateError(
                f"{self.artifact.name} is not open: restore inside `with restorekit.open(...) as "
                "model:` (sessions, engines and GPU memory exist only there)"
            )
        return self._restorer

    def __enter__(self) -> RestorationSession:
        self._backend.__enter__()
        try:
            if self._fallback is not None:
                self._fallback.__enter__()
            self._restorer = Restorer(self._backend, self.manifest, self._tiles, self._fallback)
        except BaseException:
            self._close_backends()
            raise
        return self

    def _close_backends(self) -> None:
        try:
            if self._fallback is not None and self._fallback.is_open:
                self._fallback.__exit__(None, None, None)
        finally:
            if self._backend.is_open:
                self._backend.__exit__(None, None, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restorer = None
        self._close_backends()

    def restore(self, image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """Restore one image of any size and return it with the same dtype and layout.

        Args:
            image: ``uint8`` or ``uint16``; (H, W) gray, (H, W, 3) colour or (H, W, 4) colour
                with alpha (the alpha is carried over, not restored).
            bgr: the colour channels are in OpenCV's order (BGR/BGRA), as ``cv2.imread`` and
                ``cv2.VideoCapture`` give them; the result comes back in the same order.

        Returns:
            The restored image: (H*s, W*s[, C]) for a model of scale ``s``. A gray model on a
            colour image restores the luma and keeps the colour; a colour model on a gray image
            returns gray.

        Raises:
            BackendStateError: called outside the ``with`` block.
            InputError: not a numpy image of a supported dtype and shape.
            NonFiniteOutputError: the model's output held NaN/Inf (the message says where;
                :meth:`restore_with_report` returns such images with those values as 0).
        """
        result = self.restore_with_report(image, bgr=bgr)
        if result.nonfinite:
            raise NonFiniteOutputError(
                f"{self.manifest.model}: NaN/Inf in the model output: "
                f"{describe_tiles(result.nonfinite, 3)}; an FP16/INT8 graph may overflow here: "
                "try the FP32 artifact"
            )
        return result.image

    def restore_with_report(self, image: np.ndarray, *, bgr: bool = False) -> Restored:
        """Like :meth:`restore`, but returns the :class:`Restored` record (image, tiles and the
        tiles whose output held NaN/Inf, written as 0) instead of raising on NaN/Inf.

        Raises:
            BackendStateError: called outside the ``with`` block.
            InputError: not a numpy image of a supported dtype and shape.
        """
        restorer = self.restorer
        if not isinstance(image, np.ndarray):
            raise InputError(f"expected a numpy image array, got {type(image).__name__}")
        if bgr:
            image = _swap_red_blue(image)
        result = restorer.restore(image)
        if bgr:
            result.image = _swap_red_blue(result.image)
        return result

    def stream(self, frames: Iterable[np.ndarray], *, bgr: bool = False) -> Iterator[np.ndarray]:
        """Restored frames of ``frames``, in order, as they are ready.

        The model restores the next frame in a worker thread while your loop handles the
        current one (encode, send, show), and ``frames`` is read only when the worker is free,
        so a camera generator is asked for its newest frame, not one queued earlier. At most two
        restored frames wait for you. Stop early with ``break``: the worker stops too.

        Args:
            frames: images as :meth:`restore` takes them (e.g. a generator over
                ``cv2.VideoCapture.read``).
            bgr: as for :meth:`restore`.

        Raises:
            BackendStateError: used outside the ``with`` block.
            InputError, NonFiniteOutputError: as :meth:`restore`, for the frame concerned.
        """
        self.restorer  # noqa: B018 - raises outside the with-block, before any thread starts
        yield from pipelined(frames, lambda frame: self.restore(frame, bgr=bgr))

    def __repr__(self) -> str:
        state = "open" if self._restorer is not None else "closed"
        return f"<RestorationSession {self.artifact.name} ({self.manifest.model}), {state}>"


def fallback_artifact(
    artifact: Path, manifest: Manifest, fallback: str | Path | bool | None
) -> Path | None:
    """The FP32 artifact that guards ``artifact``: the one given, else (``None``) the FP32 ONNX the
    exporter names beside an FP16/INT8 artifact when it exists, else none.

    Raises:
        InputError: a given fallback does not exist, or is not FP32 of the same model and tile.
    """
    if fallback is False or (fallback is None and manifest.precision.precision == "fp32"):
        return None
    if fallback is None or fallback is True:
        beside = artifact.with_name(onnx_name(manifest.model, "fp32", manifest.tile))
        if beside.is_file() and beside != artifact:
            return beside
        if fallback is True:
            raise InputError(
                f"no FP32 fallback beside {artifact.name} (looked for {beside.name}); give one "
                "with --fallback MODEL.fp32.onnx"
            )
        return None
    path = Path(fallback)
    if not path.is_file():
        raise InputError(f"fallback artifact not found: {path}")
    theirs = read_manifest(path)
    if theirs.model != manifest.model or theirs.precision.precision != "fp32":
        raise InputError(
            f"{path.name} is {theirs.model} {theirs.precision.precision}; the fallback of "
            f"{artifact.name} must be an FP32 artifact of {manifest.model}"
        )
    return path


def _swap_red_blue(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        return image
    code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(image, code)


def open_artifact(artifact: str | Path, **options: object) -> RestorationSession:
    """Open an exported ``.onnx`` or built ``.engine`` for restoring images (``restorekit.open``).

    Keyword options are those of :class:`RestorationSession`.

    Raises:
        InputError: the artifact is missing or the backend does not fit it.
        ManifestError: the artifact has no readable manifest.
    """
    return RestorationSession(artifact, **options)  # type: ignore[arg-type]


__all__ = ["RestorationSession", "open_artifact"]

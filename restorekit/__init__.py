"""restorekit: image-restoration networks to verified ONNX, TensorRT engines and a tiled runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from restorekit.cluster.batch import ClusterSummary
    from restorekit.runtime.session import RestorationSession

__version__ = "0.1.0"


def open(artifact: str | Path, **options: Any) -> RestorationSession:  # noqa: A001 - like io.open
    """Open an exported ``.onnx`` or built ``.engine`` to restore images from your own program.

    ::

        with restorekit.open("model.fp32.256x256.onnx") as model:
            restored = model.restore(image)  # uint8/uint16, gray, RGB or RGBA, any size

    Options (all keyword): ``backend`` (``ort``/``trt``/``openvino``/``auto``; default by
    suffix), ``precision`` (OpenVINO: ``fp32``/``bf16``/``int8``), ``provider``
    (``cpu``/``cuda``/``tensorrt``), ``threads``, ``tile``, ``overlap``, ``batch``. See
    :class:`restorekit.runtime.session.RestorationSession`. Needs no PyTorch.

    Raises:
        InputError: the artifact is missing or the backend does not fit it.
        ManifestError: the artifact has no readable manifest.
    """
    from restorekit.runtime.session import open_artifact

    return open_artifact(artifact, **options)


def restore_collection(
    artifact: str | Path | list[str | Path],
    inputs: list[str | Path],
    output: str | Path,
    **options: Any,
) -> ClusterSummary:
    """Restore a collection of images and videos on a Ray cluster (or a local Ray instance) into
    the folder ``output``; a re-run skips the outputs already complete.

    ::

        summary = restorekit.restore_collection("model.onnx", ["photos/"], "out/", workers=2)
        print(summary.line())

    See :func:`restorekit.cluster.batch.restore_collection` for the options (``address``,
    ``workers``, ``threads_per_worker``, ``gpus_per_worker``, ``tile``, ...). Needs the
    ``cluster`` extra (Ray); no PyTorch.

    Raises:
        InputError: no input matched, a camera among the inputs, or a missing artifact.
        ClusterError: the cluster cannot be reached or started.
        MissingDependencyError: Ray is not installed.
    """
    from restorekit.cluster.batch import restore_collection as run

    return run(artifact, inputs, output, **options)

"""restorekit: image-restoration networks to verified ONNX, TensorRT engines and a tiled runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from restorekit.runtime.session import RestorationSession

__version__ = "0.1.0"


def open(artifact: str | Path, **options: Any) -> RestorationSession:  # noqa: A001 - like io.open
    """Open an exported ``.onnx`` or built ``.engine`` to restore images from your own program.

    ::

        with restorekit.open("model.fp32.256x256.onnx") as model:
            restored = model.restore(image)  # uint8/uint16, gray, RGB or RGBA, any size

    Options (all keyword): ``backend`` (``ort``/``trt``; default by suffix), ``provider``
    (``cpu``/``cuda``/``tensorrt``), ``threads``, ``tile``, ``overlap``, ``batch``. See
    :class:`restorekit.runtime.session.RestorationSession`. Needs no PyTorch.

    Raises:
        InputError: the artifact is missing or the backend does not fit it.
        ManifestError: the artifact has no readable manifest.
    """
    from restorekit.runtime.session import open_artifact

    return open_artifact(artifact, **options)

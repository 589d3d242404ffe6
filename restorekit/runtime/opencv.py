"""OpenCV for the runtime, or an error that says where to get it.

OpenCV is not a base dependency: on a Jetson the GStreamer-enabled OpenCV comes from JetPack
(``python3-opencv``), and a pip wheel (``opencv-python-headless``, which has no GStreamer) installed
beside it would shadow it. Desktop and CPU installs get the wheel through the ``ort`` extra. The
runtime's modules import ``cv2`` from here.
"""

from __future__ import annotations

from restorekit.errors import MissingDependencyError

try:
    import cv2
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingDependencyError(
        f"restorekit's runtime needs OpenCV, which is not importable ({exc}). On a desktop or "
        "CPU machine: pip install 'restorekit[ort]' (it brings opencv-python-headless). On a "
        "Jetson: use JetPack's OpenCV (sudo apt install python3-opencv) in a venv made with "
        "--system-site-packages, and pip install 'restorekit[jetson]'."
    ) from exc

__all__ = ["cv2"]

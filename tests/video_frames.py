"""Frames of a video file or capture pipeline read directly with OpenCV: tests' reference."""

from __future__ import annotations

import numpy as np

from restorekit.runtime.opencv import cv2


def read_rgb_frames(location: str, api: int = cv2.CAP_ANY) -> list[np.ndarray]:
    """Every frame OpenCV reads from ``location`` (a file or a pipeline), as RGB."""
    capture = cv2.VideoCapture(location, api)
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames

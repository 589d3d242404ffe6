"""What the user named as inputs (image files, folders, globs, video files, live sources) and
where each result goes; the atomic video writer the video-file sink uses. Reading frames is
``sources.py``'s job, writing streams ``sinks.py``'s.

Outputs are written atomically (a temporary file beside the target, renamed at the end) and never
replace an input: a target that resolves to an input file is renamed ``<stem>_restored<suffix>``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit.errors import InputError
from restorekit.runtime.opencv import cv2

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".pnm"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


@dataclass(frozen=True)
class Source:
    """One input as the user named it: ``kind`` is image, video or camera."""

    kind: str
    location: str  # a path, a device index or a GStreamer pipeline

    @property
    def path(self) -> Path:
        return Path(self.location)


LIVE_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "rtmp://")


def is_camera(text: str) -> bool:
    """A live source: ``camera:0`` / ``0`` (a device index), ``/dev/videoN``, an RTSP/HTTP URL
    or a GStreamer pipeline (contains ``!``)."""
    return (
        text.startswith("camera:")
        or text.isdigit()
        or text.startswith("/dev/video")
        or text.lower().startswith(LIVE_URL_SCHEMES)
        or "!" in text
    )


def expand_sources(inputs: list[str]) -> tuple[list[Source], list[tuple[str, str]]]:
    """Expand files, folders (their images, sorted), globs, videos and cameras.

    Returns:
        The sources in order, and (input, reason) for inputs that matched nothing.
    """
    sources: list[Source] = []
    missing: list[tuple[str, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                missing.append((text, "folder has no images"))
            sources += [Source("image", str(p)) for p in found]
        elif path.is_file():
            kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
            sources.append(Source(kind, text))
        elif is_camera(text):
            sources.append(Source("camera", text.removeprefix("camera:")))
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not found:
                missing.append((text, "pattern matched no files"))
            for p in found:
                kind = "video" if p.suffix.lower() in VIDEO_SUFFIXES else "image"
                sources.append(Source(kind, str(p)))
        else:
            missing.append((text, "no such file or folder"))
    return sources, missing


def output_path(source: Path, output: Path, *, single: bool, suffix: str | None = None) -> Path:
    """Where the result of ``source`` goes.

    ``output`` is the file itself when there is a single input and it has a file suffix;
    otherwise it is a folder and the result keeps the input's name there. A target that is the
    input file itself gets ``_restored`` added to its stem, so inputs are never overwritten.
    """
    if single and output.suffix and not output.is_dir():
        target = output
    else:
        target = output / (source.stem + (suffix or source.suffix))
    if target.resolve() == source.resolve():
        target = target.with_name(f"{target.stem}_restored{target.suffix}")
    return target


class AtomicVideoWriter:
    """Writes RGB frames to a temporary file beside ``path``; :meth:`commit` renames it into place.

    Used as a context manager: leaving the block after an error discards the partial file.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise InputError(f"cannot write video as {suffix!r}; use .mp4, .avi or .mkv")
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fourcc = _FOURCC.get(suffix, "mp4v")
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def __enter__(self) -> AtomicVideoWriter:
        return self

    def write(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8:
            frame = (frame >> 8).astype(np.uint8)  # video containers hold 8 bits
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self.tmp),
                cv2.VideoWriter_fourcc(*self.fourcc),
                self.fps,
                (w, h),
                frame.ndim == 3,
            )
            if not self._writer.isOpened():
                raise InputError(f"OpenCV cannot write {self.path} with codec {self.fourcc}")
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.ndim == 3 else frame
        self._writer.write(bgr)
        self.frames += 1

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self.tmp, self.path)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)

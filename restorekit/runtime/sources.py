"""Where frames come from: video files (every frame, in order) and live sources (cameras, device
paths, RTSP/HTTP URLs, GStreamer pipelines) with latest-frame semantics.

A live source is read continuously by a capture thread that keeps only the newest frame in a
one-slot buffer; :meth:`FrameSource.frames` hands out the newest frame when the consumer asks for
one. A consumer slower than the camera therefore sees the freshest picture, memory stays at a
frame or two, and latency does not grow; every frame overwritten before it was taken is counted
in :attr:`FrameSource.dropped`. ``every_frame=True`` reads the same source frame by frame in the
consumer's thread instead (nothing is dropped; a slow consumer falls behind the camera).

A live source that stops delivering frames without closing (a network stream whose server hangs,
a camera whose driver stops) would otherwise block the consumer for ever: in newest-frame mode the
source ends with :data:`STALLED` once no frame has arrived for ``stall_timeout`` seconds, so a
pipeline on a device finishes its outputs and can be restarted by its supervisor.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit.errors import InputError
from restorekit.runtime.gstreamer import pipeline_error, require_gstreamer
from restorekit.runtime.opencv import cv2

DEFAULT_FPS = 30.0
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://")

END_OF_FILE = "end of file"
STREAM_ENDED = "stream ended"
INTERRUPTED = "interrupted"
STALLED = "source stalled"
# Long enough for an RTSP server's first keyframe or a camera's auto-exposure warm-up.
DEFAULT_STALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Frame:
    """One frame: ``index`` counts frames read from the source (0-based; gaps are drops),
    ``captured`` is ``time.perf_counter()`` when it was read, ``image`` is RGB uint8 (H, W, 3) or
    gray (H, W)."""

    index: int
    captured: float
    image: np.ndarray


def _rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


class FrameSource:
    """Base class of frame sources: a context manager around an open ``cv2.VideoCapture``.

    Attributes:
        location: what the user named.
        fps: the capture's frame rate, or :data:`DEFAULT_FPS` when it does not say.
        live: whether frames arrive in real time (a camera or stream) rather than from a file.
        read: frames read from the source so far.
        dropped: frames read but never handed out (overwritten by a newer one, or left at close).
        ended: why :meth:`frames` stopped (``None`` while it has not): ``"end of file"``,
            ``"stream ended"``, ``"source vanished: <why>"`` or ``"interrupted"``.
    """

    live = False

    def __init__(self, location: str, capture: cv2.VideoCapture) -> None:
        self.location = location
        self._cap = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and np.isfinite(fps) else DEFAULT_FPS
        self.read = 0
        self.dropped = 0
        self.ended: str | None = None
        self._delivered = 0
        self._closed = False

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location!r} read={self.read} dropped={self.dropped}>"

    @property
    def delivered(self) -> int:
        """Frames handed out by :meth:`frames`."""
        return self._delivered

    def frames(self) -> Iterator[Frame]:
        """The frames, until the source ends (then :attr:`ended` says why)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the capture (idempotent); a source closed before it ended was interrupted."""
        if not self._closed:
            self._closed = True
            if self.ended is None:
                self.ended = INTERRUPTED
            self._cap.release()

    def _read_in_order(self, end_reason: str) -> Iterator[Frame]:
        """Every frame, read in the caller's thread."""
        try:
            while not self._closed:
                ok, image = self._cap.read()
                if not ok:
                    self.ended = self._why_stopped(end_reason)
                    return
                captured = time.perf_counter()
                frame = Frame(self.read, captured, _rgb(image))
                self.read += 1
                self._delivered += 1
                yield frame
            self.ended = INTERRUPTED
        except (KeyboardInterrupt, GeneratorExit):
            self.ended = INTERRUPTED
            raise

    def _why_stopped(self, default: str) -> str:
        return default


class FileSource(FrameSource):
    """A video file: every frame, in order (:attr:`dropped` stays 0).

    Raises:
        InputError: the file is missing or OpenCV cannot decode it.
    """

    live = False

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no video file {path}")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open video {path} (corrupt, or a codec OpenCV lacks)")
        super().__init__(str(path), cap)
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count: int | None = int(count) if count and count > 0 else None

    def frames(self) -> Iterator[Frame]:
        return self._read_in_order(END_OF_FILE)


def _camera_device(location: str) -> str | None:
    """The device path behind a camera location, for telling an unplugged camera apart."""
    text = location.removeprefix("camera:")
    if text.isdigit():
        return f"/dev/video{text}"
    if text.startswith("/dev/"):
        return text
    return None


class LiveSource(FrameSource):
    """A camera, a device path, a stream URL or a GStreamer pipeline, read live.

    Args:
        location: ``0`` / ``camera:0`` (a device index), ``/dev/video0``, an ``rtsp://``,
            ``http(s)://`` URL, or a GStreamer pipeline (text containing ``!``, ending in
            ``appsink``).
        every_frame: read every frame in order in the consumer's thread instead of keeping only
            the newest (nothing dropped; a slow consumer falls behind).
        stall_timeout: seconds without a new frame after which a newest-frame source ends with
            ``"source stalled: ..."``; ``None`` or 0 waits for ever. (In ``every_frame`` mode the
            consumer's own read blocks; OpenCV offers no timeout for it.)

    Raises:
        MissingDependencyError: a pipeline was given and this OpenCV has no GStreamer.
        InputError: the source cannot be opened (the message says what to check).
    """

    live = True

    def __init__(
        self,
        location: str,
        *,
        every_frame: bool = False,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
    ) -> None:
        if stall_timeout is not None and stall_timeout < 0:
            raise InputError(f"the stall timeout must be 0 (none) or positive, not {stall_timeout}")
        self.every_frame = every_frame
        self.stall_timeout = stall_timeout or None
        text = location.strip()
        device = _camera_device(text)
        if "!" in text:
            require_gstreamer(f"the GStreamer pipeline {text!r}")
            last = text.rsplit("!", 1)[1].split()
            if not last or last[0] != "appsink":
                raise InputError(
                    f"a camera pipeline must end in appsink (OpenCV takes the frames from it), "
                    f"e.g. '... ! videoconvert ! appsink'; got {text!r}"
                )
            cap = cv2.VideoCapture(text, cv2.CAP_GSTREAMER)
            what = f"the GStreamer pipeline {text!r}"
            hint = pipeline_error(text) if not cap.isOpened() else None
            check = (
                f"GStreamer says: {hint}"
                if hint
                else "check that the camera it names exists and is not in use, and that the "
                "pipeline runs with gst-launch-1.0 (ending in fakesink instead of appsink)"
            )
        elif text.removeprefix("camera:").isdigit():
            cap = cv2.VideoCapture(int(text.removeprefix("camera:")))
            what = f"camera {text.removeprefix('camera:')} ({device})"
            check = "check that it is plugged in, that you may read it, and that no other program uses it"
        elif text.startswith("/dev/"):
            cap = cv2.VideoCapture(text, cv2.CAP_V4L2)
            what = f"the camera device {text}"
            check = "check that it exists, that you may read it, and that no other program uses it"
        elif text.lower().startswith(URL_SCHEMES):
            cap = cv2.VideoCapture(text)
            what = f"the stream {text}"
            check = (
                "check the address, that the server is up and reachable from here, and any "
                "credentials in the URL"
            )
        else:
            raise InputError(
                f"{location!r} is not a camera, device, stream URL or GStreamer pipeline; use "
                "camera:N, /dev/videoN, rtsp://..., http(s)://... or a pipeline ending in appsink"
            )
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open {what}: {check}")
        super().__init__(text, cap)
        self._device = device
        self._cond = threading.Condition()
        self._slot: tuple[int, float, np.ndarray] | None = None
        self._finished: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_arrival = 0.0  # monotonic time of the newest frame (or of the thread's start)

    def frames(self) -> Iterator[Frame]:
        if self.every_frame:
            return self._read_in_order(STREAM_ENDED)
        return self._latest()

    def _why_stopped(self, default: str) -> str:
        if self._device is not None and not os.path.exists(self._device):
            return f"source vanished: {self._device} is gone (unplugged?)"
        if self.read == 0:
            return "source vanished: it opened but delivered no frame"
        return default

    def _capture(self) -> None:
        """The capture thread: read continuously, keep only the newest frame."""
        reason = STREAM_ENDED
        try:
            while not self._stop.is_set():
                ok, image = self._cap.read()
                if not ok:
                    reason = self._why_stopped(STREAM_ENDED)
                    break
                captured = time.perf_counter()
                with self._cond:
                    self._last_arrival = time.monotonic()
                    if self._slot is not None:
                        self.dropped += 1  # overwritten before the consumer took it
                    self._slot = (self.read, captured, image)
                    self.read += 1
                    self._cond.notify_all()
            else:
                reason = INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - whatever broke the capture ends the stream
            reason = f"source vanished: {exc}"
        with self._cond:
            self._finished = reason
            self._cond.notify_all()

    def _latest(self) -> Iterator[Frame]:
        if self._thread is None:
            self._last_arrival = time.monotonic()
            self._thread = threading.Thread(
                target=self._capture, name="restorekit-capture", daemon=True
            )
            self._thread.start()
        try:
            while True:
                with self._cond:
                    # A timed wait so that Ctrl-C reaches the consumer promptly on every platform.
                    while self._slot is None and self._finished is None:
                        silent = time.monotonic() - self._last_arrival
                        if self.stall_timeout is not None and silent >= self.stall_timeout:
                            # The capture thread stays blocked in read(); close() leaves it be.
                            self.ended = (
                                f"{STALLED}: no frame for {silent:.1f} s (--stall-timeout "
                                f"{self.stall_timeout:g}; 0 waits for ever)"
                            )
                            return
                        self._cond.wait(timeout=0.25)
                    if self._slot is None:
                        self.ended = self._finished
                        return
                    index, captured, image = self._slot
                    self._slot = None
                    self._delivered += 1
                yield Frame(index, captured, _rgb(image))
        except (KeyboardInterrupt, GeneratorExit):
            self.ended = INTERRUPTED
            raise

    def close(self) -> None:
        """Stop the capture thread and release the capture (idempotent)."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            # The thread notices the stop flag after its current read, at most one frame time;
            # a stalled source's read may never return, so it is not waited for.
            stalled = (self.ended or "").startswith(STALLED)
            self._thread.join(timeout=0.5 if stalled else max(2.0, 3.0 / self.fps))
        with self._cond:
            if self._slot is not None:  # read but never handed out
                self.dropped += 1
                self._slot = None
        if self._thread is not None and self._thread.is_alive():
            # Still blocked in read() (a stalled stream): releasing the capture under it could
            # crash OpenCV, so leave both to the daemon thread and the process exit.
            self._closed = True
            self.ended = self.ended or INTERRUPTED
            return
        super().close()


def open_source(
    location: str,
    *,
    every_frame: bool = False,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
) -> FrameSource:
    """A :class:`FileSource` for an existing video file, else a :class:`LiveSource`.

    Args:
        location: a video file, ``camera:N``/``N``, ``/dev/videoN``, a stream URL or a GStreamer
            pipeline ending in ``appsink``.
        every_frame: for live sources, read every frame in order (see :class:`LiveSource`).
        stall_timeout: for live sources, seconds without a frame before the source ends as
            stalled (see :class:`LiveSource`).

    Raises:
        MissingDependencyError: a pipeline was given and this OpenCV has no GStreamer.
        InputError: the location is none of these or cannot be opened.
    """
    text = location.strip()
    if "!" not in text and not text.startswith("/dev/") and Path(text).is_file():
        return FileSource(text)
    if (
        "!" in text
        or text.removeprefix("camera:").isdigit()
        or text.startswith("/dev/")
        or text.lower().startswith(URL_SCHEMES)
    ):
        return LiveSource(text, every_frame=every_frame, stall_timeout=stall_timeout)
    raise InputError(
        f"no video file, camera or stream {location!r}: give an existing video file, camera:N, "
        "/dev/videoN, rtsp://..., http(s)://... or a GStreamer pipeline ending in appsink"
    )

"""Where restored frames go: a video file, a GStreamer pipeline, an RTSP server, a window, or
several of them at once.

Every sink takes RGB uint8 (H, W, 3) or gray (H, W) frames (16-bit frames are shifted to 8 bits,
as video containers hold 8 bits); the first frame fixes the size. ``close(ok=True)`` finalises:
files are committed atomically (discarded with ``ok=False``) and streams get an end-of-stream so
receivers see a clean end. Sinks are context managers: leaving the block after an error closes
with ``ok=False``.

GStreamer sinks feed frames through the GStreamer Python bindings' ``appsrc`` rather than
``cv2.VideoWriter(..., cv2.CAP_GSTREAMER, ...)``. Both were tried; the bindings were kept because

- OpenCV's writer pushes rows tightly packed while GStreamer's raw-video layout pads each row to
  4 bytes, so any width with ``width * 3 % 4 != 0`` comes out sheared (OpenCV 4.6, H.264 over
  RTP at 322 pixels wide: 6.7 dB PSNR; 36.7 dB at 320); here rows are padded to GStreamer's
  stride (37 dB at both widths);
- OpenCV reports a pipeline that does not parse or fails later only as a warning on stderr and a
  ``False``/silent ``write()``; the bindings give GStreamer's own message (``no element
  "x264enc"``, ``Could not open file``), which the errors here carry;
- the RTSP server needs the bindings anyway (there is no OpenCV route), and both sinks share one
  feeding path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.errors import InputError, MissingDependencyError, RestoreKitError
from restorekit.runtime.gstreamer import GstBindings, gst_bindings, opencv_has_gui

#: H.264 encoders for the RTSP server, in order of preference, with what goes between
#: ``videoconvert`` and ``rtph264pay``. x264enc (gstreamer1.0-plugins-ugly) is the portable
#: choice; nvv4l2h264enc is a Jetson's hardware encoder (it needs NVMM memory from nvvidconv).
H264_ENCODERS: dict[str, str] = {
    "x264enc": (
        "video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
        "bitrate={kbps} key-int-max={gop}"
    ),
    "nvv4l2h264enc": (
        "nvvidconv ! video/x-raw(memory:NVMM),format=I420 ! nvv4l2h264enc "
        "bitrate={bps} iframeinterval={gop} insert-sps-pps=true"
    ),
    "openh264enc": "video/x-raw,format=I420 ! openh264enc bitrate={bps} gop-size={gop}",
}

_EOS_TIMEOUT_S = 5.0


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint16:
        return (frame >> 8).astype(np.uint8)
    return frame


class FrameSink:
    """Base class: validates frames, counts them, and finalises once.

    Subclasses implement ``_start(frame)`` (called with the first frame), ``_write(frame)`` and
    ``_close(ok)``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width), fixed by the first frame
        self.channels: int | None = None
        self.closed = False

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} frames={self.frames}>"

    def write(self, frame: np.ndarray) -> None:
        """Write one frame.

        Raises:
            InputError: the frame's layout or size is unusable, or differs from the first frame's.
        """
        if self.closed:
            raise InputError(f"{self.name}: cannot write after close()")
        frame = _as_uint8(np.asarray(frame))
        if frame.dtype != np.uint8 or not (
            frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)
        ):
            raise InputError(
                f"{self.name}: frames must be RGB uint8 (H, W, 3) or gray (H, W); got "
                f"{frame.dtype} {frame.shape}"
            )
        channels = 1 if frame.ndim == 2 else 3
        if self.size is None:
            self.size, self.channels = frame.shape[:2], channels
            self._start(frame)
        elif frame.shape[:2] != self.size or channels != self.channels:
            raise InputError(
                f"{self.name}: every frame must have the first frame's size and channels "
                f"({self.size[1]}x{self.size[0]}, {self.channels} channels); got "
                f"{frame.shape[1]}x{frame.shape[0]}, {channels} channels"
            )
        self._write(frame)
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        """Finalise the sink (idempotent).

        Args:
            ok: the run succeeded: commit files. ``False`` discards what files can discard.
        """
        if self.closed:
            return
        self.closed = True
        self._close(ok)

    def _start(self, frame: np.ndarray) -> None:
        pass

    def _write(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def _close(self, ok: bool) -> None:
        pass


class VideoFileSink(FrameSink):
    """A video file written atomically through :class:`media.AtomicVideoWriter`.

    With ``close(ok=True)`` the file appears under its name; with ``ok=False`` (or no frame at
    all) nothing does, and the partial file is removed.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        from restorekit.runtime.media import AtomicVideoWriter

        super().__init__(str(path))
        self.path = Path(path)
        self._writer = AtomicVideoWriter(self.path, fps)  # checks the suffix now

    def _write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)

    def _close(self, ok: bool) -> None:
        if ok:
            self._writer.commit()
            self._writer.__exit__(None, None, None)
        else:
            discarded = RestoreKitError(f"{self.name}: discarded")
            self._writer.__exit__(type(discarded), discarded, None)


def _gst_caps(bindings: GstBindings, frame: np.ndarray, fps: float) -> Any:
    rate = Fraction(fps).limit_denominator(1001)
    fmt = "GRAY8" if frame.ndim == 2 else "RGB"
    h, w = frame.shape[:2]
    return bindings.Gst.Caps.from_string(
        f"video/x-raw,format={fmt},width={w},height={h},framerate={rate.numerator}/"
        f"{rate.denominator}"
    )


def _gst_buffer(bindings: GstBindings, frame: np.ndarray) -> Any:
    """A buffer in GStreamer's raw-video layout: each row padded to a multiple of 4 bytes."""
    h, w = frame.shape[:2]
    row = frame.size // h
    stride = (row + 3) & ~3
    if stride == row:
        data = frame.tobytes()
    else:
        padded = np.zeros((h, stride), np.uint8)
        padded[:, :row] = frame.reshape(h, row)
        data = padded.tobytes()
    return bindings.Gst.Buffer.new_wrapped(data)


def _describe_error(message: Any) -> str:
    error, debug = message.parse_error()
    source = message.src.get_name() if message.src is not None else "pipeline"
    # The debug text's last line has the reason (``streaming stopped, reason not-negotiated``);
    # the lines before it name the source file and function.
    lines = [line for line in (debug or "").splitlines() if line.strip()]
    return f"{source}: {error.message}" + (f" ({lines[-1]})" if lines else "")


def _pop_error(bindings: GstBindings, pipeline: Any) -> str | None:
    """Pop every message waiting on the pipeline's bus and return the first error, as text.

    Nobody else reads this bus, so its messages are drained here rather than left to pile up
    over a long stream.
    """
    bus = pipeline.get_bus()
    error = None
    while (message := bus.pop()) is not None:
        if message.type == bindings.Gst.MessageType.ERROR and error is None:
            error = _describe_error(message)
    return error


class GStreamerSink(FrameSink):
    """Frames into a GStreamer pipeline that starts with ``appsrc``.

    The caps (format, width, height, framerate) come from the first frame, so the user writes
    ``appsrc ! videoconvert ! x264enc tune=zerolatency ! rtph264pay ! udpsink host=... port=...``
    and nothing about the frames. Frames are timestamped when written (a live stream). When the
    pipeline falls behind, :meth:`write` waits (at most two frames are queued), so memory and
    latency stay bounded; an error inside the pipeline is raised at the next write or at close.
    See the module docstring for why this uses the bindings' appsrc rather than OpenCV's writer.

    Raises:
        MissingDependencyError: the GStreamer Python bindings are missing.
        InputError: the pipeline does not start with appsrc, does not parse, or cannot start.
    """

    def __init__(self, pipeline: str, fps: float = 30.0) -> None:
        super().__init__(pipeline)
        first = pipeline.strip().split("!", 1)[0].split()
        if not first or first[0] != "appsrc":
            raise InputError(
                f"the sink pipeline must start with appsrc (restorekit feeds frames to it), e.g. "
                f"'appsrc ! videoconvert ! autovideosink'; got {pipeline!r}"
            )
        self.fps = fps
        self._gst = gst_bindings(f"the GStreamer sink {pipeline!r}")
        Gst = self._gst.Gst
        try:
            element = Gst.parse_launch(pipeline)
        except self._gst.GLib.Error as exc:
            raise InputError(
                f"GStreamer cannot build the sink pipeline {pipeline!r}: {exc.message}. Check the "
                "element names and properties (gst-inspect-1.0 ELEMENT) and that the plugins "
                "are installed."
            ) from exc
        if isinstance(element, Gst.Pipeline):
            self._pipeline = element
        else:  # a lone element
            self._pipeline = Gst.Pipeline.new(None)
            self._pipeline.add(element)
        self._src = next(
            (
                e
                for e in self._pipeline.iterate_sources()
                if e.get_factory() is not None and e.get_factory().get_name() == "appsrc"
            ),
            None,
        )
        if self._src is None:  # pragma: no cover - the text check above makes this unlikely
            raise InputError(f"no appsrc found at the start of {pipeline!r}")
        self._src.set_property("format", Gst.Format.TIME)
        self._src.set_property("is-live", True)
        self._src.set_property("do-timestamp", True)
        self._limit = 0
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            reason = _pop_error(self._gst, self._pipeline) or "no reason given"
            self._pipeline.set_state(Gst.State.NULL)
            raise InputError(f"GStreamer cannot start the sink pipeline {pipeline!r}: {reason}")

    def _start(self, frame: np.ndarray) -> None:
        self._src.set_property("caps", _gst_caps(self._gst, frame, self.fps))
        self._limit = 2 * ((frame.size // frame.shape[0] + 3) & ~3) * frame.shape[0]

    def _fail(self, reason: str) -> None:
        self._pipeline.set_state(self._gst.Gst.State.NULL)
        self.closed = True
        raise InputError(f"the sink pipeline {self.name!r} failed: {reason}")

    def _write(self, frame: np.ndarray) -> None:
        Gst = self._gst.Gst
        # Back-pressure without blocking forever: wait while two frames are queued, watching
        # the bus so that a pipeline that died is reported instead of waited on.
        while self._src.get_property("current-level-bytes") >= self._limit:
            error = _pop_error(self._gst, self._pipeline)
            if error is not None:
                self._fail(error)
            time.sleep(0.002)
        result = self._src.emit("push-buffer", _gst_buffer(self._gst, frame))
        error = _pop_error(self._gst, self._pipeline)
        if error is None and result != Gst.FlowReturn.OK:
            error = f"appsrc refused the frame ({result.value_nick})"
        if error is not None:
            self._fail(error)

    def _close(self, ok: bool) -> None:
        Gst = self._gst.Gst
        try:
            error = _pop_error(self._gst, self._pipeline)
            self._src.emit("end-of-stream")
            message = self._pipeline.get_bus().timed_pop_filtered(
                int(_EOS_TIMEOUT_S * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
            )
        finally:
            self._pipeline.set_state(Gst.State.NULL)
        if error is None and message is not None and message.type == Gst.MessageType.ERROR:
            error = _describe_error(message)
        if ok and error is not None:
            raise InputError(f"the sink pipeline {self.name!r} failed at the end: {error}")


class RtspServerSink(FrameSink):
    """Serves the frames over RTSP (H.264) with GStreamer's RTSP server.

    Clients (``rtsp://ADDRESS:PORT/MOUNT``; :attr:`url`) that connect get the live frames from
    then on; all clients share one encoder. Frames written while nobody watches are counted in
    :attr:`frames` but not encoded; :attr:`served` counts the frames handed to the encoder, and
    :attr:`skipped` those dropped because the encoder was two frames behind (a slow client never
    slows the restoration). The server's GLib main loop runs in its own thread and context.

    Args:
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        mount: the path clients ask for.
        fps: the frame rate announced in the caps.
        address: the interface to listen on; ``0.0.0.0`` serves other machines.
        encoder: an H.264 encoder from :data:`H264_ENCODERS`; default: x264enc, else the first
            one installed.
        kbps: target bitrate.

    Raises:
        MissingDependencyError: the bindings, the RTSP server or every H.264 encoder is missing.
        InputError: the port cannot be bound.
    """

    def __init__(
        self,
        port: int,
        mount: str = "/restored",
        fps: float = 30.0,
        *,
        address: str = "127.0.0.1",
        encoder: str | None = None,
        kbps: int = 4000,
    ) -> None:
        if not mount.startswith("/"):
            mount = "/" + mount
        super().__init__(f"rtsp://{address}:{port}{mount}")
        self.fps = fps
        self.mount = mount
        self.address = address
        self.served = 0
        self.skipped = 0
        self._gst = gst_bindings("serving RTSP", rtsp_server=True)
        Gst, GLib, Rtsp = self._gst.Gst, self._gst.GLib, self._gst.GstRtspServer
        self.encoder = encoder or self._pick_encoder()
        if Gst.ElementFactory.find(self.encoder) is None:
            raise MissingDependencyError(
                f"the H.264 encoder {self.encoder} is not installed (x264enc comes with "
                "gstreamer1.0-plugins-ugly; nvv4l2h264enc with JetPack)"
            )
        gop = max(1, round(fps))
        encode = H264_ENCODERS[self.encoder].format(kbps=kbps, bps=kbps * 1000, gop=gop)
        self._lock = threading.Lock()
        self._srcs: list[Any] = []  # the appsrc of the prepared media (one: the media is shared)
        self._caps = None
        self._limit = 0
        factory = Rtsp.RTSPMediaFactory()
        factory.set_launch(
            "( appsrc name=restorekit_src is-live=true format=time do-timestamp=true "
            f"! videoconvert ! {encode} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media_configure)
        self._server = Rtsp.RTSPServer()
        self._server.set_address(address)
        self._server.set_service(str(port))
        self._server.get_mount_points().add_factory(mount, factory)
        self._context = GLib.MainContext.new()
        self._loop = GLib.MainLoop.new(self._context, False)
        try:
            self._source_id = self._server.attach(self._context)
        except GLib.Error as exc:
            raise InputError(
                f"cannot serve RTSP on {address}:{port}: {exc.message}. Choose another port "
                "(is another server running there?)"
            ) from exc
        if not self._source_id:
            raise InputError(
                f"cannot serve RTSP on {address}:{port} (the port is in use or the address is "
                "not this machine's); choose another port"
            )
        self.port = self._server.get_bound_port()
        self.name = f"rtsp://{address}:{self.port}{mount}"
        self._thread = threading.Thread(target=self._loop.run, name="restorekit-rtsp", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``rtsp://ADDRESS:PORT/MOUNT`` (``127.0.0.1`` when serving on ``0.0.0.0``)."""
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address
        return f"rtsp://{host}:{self.port}{self.mount}"

    def _pick_encoder(self) -> str:
        Gst = self._gst.Gst
        for name in H264_ENCODERS:
            if Gst.ElementFactory.find(name) is not None:
                return name
        raise MissingDependencyError(
            "serving RTSP needs an H.264 encoder, and none of "
            f"{', '.join(H264_ENCODERS)} is installed: sudo apt install gstreamer1.0-plugins-ugly "
            "(x264enc), or on a Jetson JetPack's GStreamer plugins (nvv4l2h264enc)"
        )

    def _on_media_configure(self, _factory: Any, media: Any) -> None:
        src = media.get_element().get_by_name("restorekit_src")
        with self._lock:
            if self._caps is not None:
                src.set_property("caps", self._caps)
            self._srcs.append(src)
        media.connect("unprepared", self._on_media_unprepared, src)

    def _on_media_unprepared(self, _media: Any, src: Any) -> None:
        with self._lock:
            if src in self._srcs:
                self._srcs.remove(src)

    def _start(self, frame: np.ndarray) -> None:
        with self._lock:
            self._caps = _gst_caps(self._gst, frame, self.fps)
            self._limit = 2 * ((frame.size // frame.shape[0] + 3) & ~3) * frame.shape[0]
            for src in self._srcs:
                src.set_property("caps", self._caps)

    def _write(self, frame: np.ndarray) -> None:
        with self._lock:
            srcs = list(self._srcs)
        if not srcs:
            return
        buffer = _gst_buffer(self._gst, frame)
        for src in srcs:
            if src.get_property("current-level-bytes") >= self._limit:
                self.skipped += 1
                continue
            # FLUSHING while a client leaves is expected: that media is being torn down.
            if src.emit("push-buffer", buffer) == self._gst.Gst.FlowReturn.OK:
                self.served += 1

    def _close(self, ok: bool) -> None:
        Rtsp = self._gst.GstRtspServer
        with self._lock:
            srcs = list(self._srcs)
        for src in srcs:
            src.emit("end-of-stream")
        if srcs:  # let the encoder flush and the clients read the end (RTCP BYE) before leaving
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and any(
                s.get_property("current-level-bytes") > 0 for s in srcs
            ):
                time.sleep(0.01)
            time.sleep(0.2)

        def shut_down() -> bool:
            self._server.client_filter(lambda _server, _client: Rtsp.RTSPFilterResult.REMOVE)
            source = self._context.find_source_by_id(self._source_id)
            if source is not None:
                source.destroy()
            self._loop.quit()
            return False

        # The server belongs to the loop's thread: shut it down from there.
        idle = self._gst.GLib.idle_source_new()
        idle.set_callback(lambda *_: shut_down())
        idle.attach(self._context)
        self._thread.join(timeout=5.0)


def _x11_reachable(display: str) -> bool:
    """Whether the X server named by ``DISPLAY`` accepts connections (socket or TCP)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        return os.path.exists(f"/tmp/.X11-unix/X{number}")
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=0.5):
            return True
    except OSError:
        return False


def _wayland_reachable(display: str) -> bool:
    path = display if os.path.isabs(display) else os.path.join(
        os.environ.get("XDG_RUNTIME_DIR", ""), display
    )  # fmt: skip
    return os.path.exists(path)


def _display_problem() -> str | None:
    """Why no window can be opened, or ``None`` when one can."""
    if not opencv_has_gui():
        return "this OpenCV has no GUI support (an opencv-python-headless wheel has none)"
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return None
    wayland = os.environ.get("WAYLAND_DISPLAY")
    x11 = os.environ.get("DISPLAY")
    if wayland and _wayland_reachable(wayland):
        return None
    if x11 and _x11_reachable(x11):
        return None
    if not wayland and not x11:
        return "no display is set (neither DISPLAY nor WAYLAND_DISPLAY)"
    named = ", ".join(f"{k}={v}" for k, v in (("DISPLAY", x11), ("WAYLAND_DISPLAY", wayland)) if v)
    return f"the display {named} cannot be reached"


def display_available() -> bool:
    """Whether :class:`DisplaySink` can open a window here.

    True when OpenCV has a GUI backend and ``DISPLAY`` or ``WAYLAND_DISPLAY`` names a display
    whose server is reachable (checked without opening a window: a GUI toolkit aborts the whole
    process when its display is missing).
    """
    return _display_problem() is None


def require_display() -> None:
    """Make sure a window can be shown; call it before opening any source.

    Raises:
        InputError: no usable display; the message says why and what to use instead.
    """
    problem = _display_problem()
    if problem is not None:
        raise InputError(
            f"cannot show the restored frames in a window: {problem}. Run with a display (a "
            "desktop session, or ssh -X), or send the frames elsewhere: --sink PIPELINE, "
            "--rtsp-serve PORT, or -o FILE."
        )


class DisplaySink(FrameSink):
    """Shows frames in an OpenCV window. :attr:`quit_requested` turns true on ``q`` or ``Esc``.

    Raises:
        InputError: no usable display (see :func:`require_display`).
    """

    def __init__(self, title: str = "restorekit") -> None:
        require_display()
        super().__init__(title)
        self.title = title
        self.quit_requested = False

    def _write(self, frame: np.ndarray) -> None:
        from restorekit.runtime.opencv import cv2

        cv2.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.ndim == 3 else frame)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.quit_requested = True

    def _close(self, ok: bool) -> None:
        from restorekit.runtime.opencv import cv2

        if self.frames:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)


class Tee(FrameSink):
    """Writes each frame to several sinks (record and stream at once).

    A sink that fails (any exception from its ``write`` or ``close``) is closed with ``ok=False``
    and left out from then on; the others go on. :attr:`failures` lists (sink name, message)
    pairs. Only when every sink has failed does :meth:`write` raise.

    Raises:
        InputError: from :meth:`write`, when no sink is left.
    """

    def __init__(self, sinks: list[FrameSink]) -> None:
        super().__init__("tee(" + ", ".join(s.name for s in sinks) + ")")
        self.sinks = list(sinks)
        self.failures: list[tuple[str, str]] = []
        self._failed: set[int] = set()

    @property
    def working(self) -> list[FrameSink]:
        """The sinks that have not failed."""
        return [s for k, s in enumerate(self.sinks) if k not in self._failed]

    def _write(self, frame: np.ndarray) -> None:
        for k, sink in enumerate(self.sinks):
            if k in self._failed:
                continue
            try:
                sink.write(frame)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not stop the others
                self._failed.add(k)
                self.failures.append((sink.name, str(exc) or type(exc).__name__))
                with contextlib.suppress(Exception):
                    sink.close(ok=False)
        if len(self._failed) == len(self.sinks):
            detail = "; ".join(f"{n}: {m}" for n, m in self.failures)
            raise InputError(f"every output failed: {detail}")

    def _close(self, ok: bool) -> None:
        for k, sink in enumerate(self.sinks):
            if k in self._failed:
                continue
            try:
                sink.close(ok=ok)
            except Exception as exc:  # noqa: BLE001 - close the others all the same
                self._failed.add(k)
                self.failures.append((sink.name, str(exc) or type(exc).__name__))

"""What this process can do with GStreamer: OpenCV's GStreamer backend and the Python bindings.

Two independent things are needed for live work on a Jetson, and both come from the OS, not pip:

- **OpenCV built with GStreamer** (JetPack's ``python3-opencv``) opens camera pipelines
  (``nvarguscamerasrc ! ... ! appsink``). The ``opencv-python(-headless)`` wheels are built without
  GStreamer, and a wheel installed into the venv shadows the system ``cv2``.
- **The GStreamer Python bindings** (``gi.repository.Gst``, ``GstRtspServer``: PyGObject from
  ``python3-gi``/``python3-gst-1.0``) feed restored frames to pipelines and serve RTSP.

A venv sees both only when it was made with ``--system-site-packages``. Every function here
imports lazily, so importing this module needs neither.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from restorekit.errors import MissingDependencyError

#: Debian/Ubuntu packages that give the system Python GStreamer, its plugins, the bindings, the
#: RTSP server and an OpenCV built with GStreamer.
APT_PACKAGES = (
    "python3-opencv",
    "python3-gst-1.0",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-libav",
    "gstreamer1.0-rtsp",
)

_PIP_OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
               "opencv-contrib-python-headless")  # fmt: skip


@dataclass(frozen=True)
class GstBindings:
    """The imported GStreamer modules; ``GstRtspServer`` is ``None`` unless it was asked for."""

    Gst: Any
    GLib: Any
    GstRtspServer: Any | None = None


def _build_information() -> str:
    from restorekit.runtime.opencv import cv2

    return cv2.getBuildInformation()


def _build_flag(name: str) -> str | None:
    """The value OpenCV's build information gives for ``name:`` (first match), if any."""
    match = re.search(rf"^\s*{re.escape(name)}:\s*(.*)$", _build_information(), re.MULTILINE)
    return match.group(1).strip() if match else None


@lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    """Whether this process's OpenCV was built with its GStreamer video I/O backend.

    Raises:
        MissingDependencyError: OpenCV is not importable at all.
    """
    value = _build_flag("GStreamer")
    return value is not None and value.upper().startswith("YES")


@lru_cache(maxsize=1)
def opencv_has_gui() -> bool:
    """Whether this process's OpenCV can open windows (``cv2.imshow``).

    OpenCV 4.5+ reports ``GUI: NONE`` for headless builds (the ``-headless`` wheels); older builds
    list their toolkits (``GTK+``, ``QT``, ``Win32 UI``, ``Cocoa``) one per line.

    Raises:
        MissingDependencyError: OpenCV is not importable at all.
    """
    gui = _build_flag("GUI")
    if gui is not None:
        return gui.upper() not in ("", "NONE", "NO")
    for toolkit in ("GTK+", "GTK+ 3.x", "GTK+ 2.x", "QT", "Win32 UI", "Cocoa", "Wayland"):
        value = _build_flag(toolkit)
        if value is not None and value.upper().startswith("YES"):
            return True
    return False


def _pip_opencv() -> list[str]:
    """The pip OpenCV distributions installed where this interpreter can see them."""
    from importlib import metadata

    found = []
    for name in _PIP_OPENCV:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def install_hint() -> str:
    """How to get GStreamer-enabled OpenCV and the bindings into this environment."""
    in_venv = sys.prefix != sys.base_prefix
    return (
        "On a Jetson: use JetPack's OpenCV and GStreamer bindings (sudo apt install python3-opencv "
        "python3-gst-1.0 gir1.2-gst-rtsp-server-1.0) from a venv made with "
        "'python3 -m venv --system-site-packages' (pip install 'restorekit[jetson]' there), and "
        "make sure no pip OpenCV wheel shadows the system one: "
        "pip uninstall opencv-python opencv-python-headless. "
        f"On Debian/Ubuntu: sudo apt install {' '.join(APT_PACKAGES)}, then use /usr/bin/python3 "
        "or a venv made from it with --system-site-packages."
        + (" (This interpreter runs in a venv.)" if in_venv else "")
    )


def require_gstreamer(what: str) -> None:
    """Make sure OpenCV can open GStreamer pipelines, or say how to fix it.

    Args:
        what: what the caller wants to do, shown in the message (e.g. "the camera pipeline ...").

    Raises:
        MissingDependencyError: this OpenCV was built without GStreamer (or is missing).
    """
    if opencv_has_gstreamer():
        return
    from restorekit.runtime.opencv import cv2

    wheels = _pip_opencv()
    shadow = (
        f" The cv2 in use is {cv2.__file__} and pip's {', '.join(wheels)} is installed; pip "
        "wheels are built without GStreamer."
        if wheels
        else f" The cv2 in use is {cv2.__file__}."
    )
    raise MissingDependencyError(
        f"{what} needs OpenCV built with GStreamer, and this OpenCV ({cv2.__version__}) was built "
        f"without it (cv2.getBuildInformation() says 'GStreamer: NO').{shadow} {install_hint()}"
    )


def gst_bindings(what: str, *, rtsp_server: bool = False) -> GstBindings:
    """Import and initialise the GStreamer Python bindings (and the RTSP server's, if asked).

    Args:
        what: what the caller wants to do, shown in the message.
        rtsp_server: also import ``GstRtspServer``.

    Raises:
        MissingDependencyError: PyGObject, the Gst typelib or the RTSP server typelib is missing.
    """
    try:
        import gi
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} needs the GStreamer Python bindings (PyGObject, module 'gi'), which this "
            f"Python ({sys.executable}) cannot import ({exc}). {install_hint()}"
        ) from exc
    try:
        gi.require_version("Gst", "1.0")
        from gi.repository import GLib, Gst
    except (ValueError, ImportError) as exc:
        raise MissingDependencyError(
            f"{what} needs GStreamer's introspection data (Gst 1.0), which is missing ({exc}). "
            f"{install_hint()}"
        ) from exc
    Gst.init(None)
    server = None
    if rtsp_server:
        try:
            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GstRtspServer as server
        except (ValueError, ImportError) as exc:
            raise MissingDependencyError(
                f"{what} needs GStreamer's RTSP server (GstRtspServer 1.0), which is missing "
                f"({exc}): sudo apt install gir1.2-gst-rtsp-server-1.0. {install_hint()}"
            ) from exc
    return GstBindings(Gst=Gst, GLib=GLib, GstRtspServer=server)


def has_gst_bindings(*, rtsp_server: bool = False) -> bool:
    """Whether :func:`gst_bindings` would succeed."""
    try:
        gst_bindings("a check", rtsp_server=rtsp_server)
    except MissingDependencyError:
        return False
    return True


def missing_elements(names: list[str] | tuple[str, ...]) -> list[str]:
    """The GStreamer elements among ``names`` that no installed plugin provides.

    Raises:
        MissingDependencyError: the bindings are missing.
    """
    gst = gst_bindings("looking up GStreamer elements").Gst
    return [name for name in names if gst.ElementFactory.find(name) is None]


def pipeline_error(pipeline: str) -> str | None:
    """What GStreamer says about a pipeline description that does not parse, or ``None``.

    ``None`` also when the bindings are missing (there is nobody to ask). Used to turn OpenCV's
    bare "cannot open" into GStreamer's own reason (``no element "x264enc"``, a bad property).
    """
    try:
        bindings = gst_bindings("checking a pipeline")
    except MissingDependencyError:
        return None
    try:
        element = bindings.Gst.parse_launch(pipeline)
    except bindings.GLib.Error as exc:
        return exc.message
    element.set_state(bindings.Gst.State.NULL)
    return None

"""A GStreamer receiving pipeline for tests: frames pulled from an ``appsink`` in a thread with
timeouts (a lost frame fails a test instead of hanging it), plus a free port and PSNR."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A GStreamer pipeline ending in appsink (RGB), pulled in a thread with timeouts."""

    def __init__(self, head: str) -> None:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst

        Gst.init(None)
        self.Gst = Gst
        self.pipeline = Gst.parse_launch(
            f"{head} ! videoconvert ! video/x-raw,format=RGB ! appsink name=out sync=false async=false"
        )
        self.sink = self.pipeline.get_by_name("out")
        self.frames: list[np.ndarray] = []
        self.eos = False
        self._stop = threading.Event()
        assert self.pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
        self.pipeline.get_state(5 * Gst.SECOND)  # live sources: returns once PLAYING
        self._thread = threading.Thread(target=self._pull, daemon=True)
        self._thread.start()

    def _pull(self) -> None:
        while not self._stop.is_set():
            sample = self.sink.emit("try-pull-sample", 100 * self.Gst.MSECOND)
            if sample is None:
                if self.sink.get_property("eos"):
                    self.eos = True
                    return
                continue
            caps = sample.get_caps().get_structure(0)
            w, h = caps.get_value("width"), caps.get_value("height")
            buffer = sample.get_buffer()
            data = np.frombuffer(buffer.extract_dup(0, buffer.get_size()), np.uint8)
            stride = data.size // h
            self.frames.append(data.reshape(h, stride)[:, : w * 3].reshape(h, w, 3))

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count and not self.eos and time.monotonic() < deadline:
            time.sleep(0.02)

    def wait_eos(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return self.eos

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.pipeline.set_state(self.Gst.State.NULL)

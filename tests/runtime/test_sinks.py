"""Frame sinks against real components: OpenCV's video writer and reader, GStreamer pipelines
(x264enc -> RTP over UDP on 127.0.0.1), GStreamer's RTSP server and an ``rtspsrc`` client.

The receivers are real GStreamer pipelines driven through the bindings' ``appsink`` with timed
pulls, so a lost frame fails a test instead of hanging it. What was received is compared with
what was sent: frame count, size and PSNR (computed here with numpy).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")

from restorekit.errors import InputError
from restorekit.runtime.gstreamer import has_gst_bindings, opencv_has_gui
from restorekit.runtime.sinks import (
    DisplaySink,
    GStreamerSink,
    RtspServerSink,
    Tee,
    VideoFileSink,
    display_available,
    require_display,
)
from tests.gst_receiver import Receiver, free_port, psnr
from tests.video_frames import read_rgb_frames

SAMPLE = Path(__file__).resolve().parents[2] / "restorekit" / "data" / "samples" / "astronaut.png"
# 322 * 3 bytes is not a multiple of 4: GStreamer pads such rows, so this width checks the stride.
WIDTH, HEIGHT = 322, 242

needs_gst = pytest.mark.skipif(
    not has_gst_bindings(),
    reason="the GStreamer Python bindings (gi, Gst 1.0) are missing; run in .venv-gst, see .ci/run",
)
needs_rtsp = pytest.mark.skipif(
    not has_gst_bindings(rtsp_server=True),
    reason="GstRtspServer is missing (gir1.2-gst-rtsp-server-1.0); run in .venv-gst, see .ci/run",
)


def _frames(count: int) -> list[np.ndarray]:
    """Distinct RGB frames: a photo scrolled by 5 pixels per frame."""
    photo = cv2.cvtColor(cv2.imread(str(SAMPLE)), cv2.COLOR_BGR2RGB)
    photo = cv2.resize(photo, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return [np.roll(photo, 5 * k, axis=1) for k in range(count)]


# --- video files ---------------------------------------------------------------------------


def test_video_file_sink_commits_a_playable_file(tmp_path):
    sent = _frames(8)
    target = tmp_path / "out.avi"
    with VideoFileSink(target, fps=12.5) as sink:
        for frame in sent:
            sink.write(frame)
        assert not target.exists()  # written beside it until committed
    assert sink.frames == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.avi"]  # no partial left
    cap = cv2.VideoCapture(str(target))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
    cap.release()
    got = read_rgb_frames(str(target))
    assert len(got) == 8 and got[0].shape == (HEIGHT, WIDTH, 3)
    assert min(psnr(a, b) for a, b in zip(got, sent, strict=True)) > 30  # MJPG at OpenCV's 95


def test_video_file_sink_discards_on_failure(tmp_path):
    target = tmp_path / "out.avi"
    with pytest.raises(RuntimeError), VideoFileSink(target, fps=10) as sink:
        for frame in _frames(3):
            sink.write(frame)
        raise RuntimeError("the model failed")
    assert sink.frames == 3
    assert list(tmp_path.iterdir()) == []  # neither the target nor the partial file


def test_sink_refuses_a_frame_of_another_size(tmp_path):
    with VideoFileSink(tmp_path / "out.avi", fps=10) as sink:
        sink.write(_frames(1)[0])
        with pytest.raises(InputError, match="first frame's size"):
            sink.write(np.zeros((10, 10, 3), np.uint8))
        with pytest.raises(InputError, match="RGB uint8"):
            sink.write(np.zeros((HEIGHT, WIDTH, 4), np.uint8))


# --- Tee -----------------------------------------------------------------------------------


def test_tee_keeps_writing_when_one_sink_fails(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the broken sink wants a folder")
    broken = VideoFileSink(blocker / "out.avi", fps=10)  # fails at its first write
    good = VideoFileSink(tmp_path / "good.avi", fps=10)
    sent = _frames(5)
    with Tee([broken, good]) as tee:
        for frame in sent:
            tee.write(frame)
    assert tee.frames == 5 and good.frames == 5 and broken.frames == 0
    assert [name for name, _ in tee.failures] == [broken.name]
    assert "not-a-folder" in tee.failures[0][1]
    assert tee.working == [good]
    cap = cv2.VideoCapture(str(tmp_path / "good.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_tee_raises_when_every_sink_failed(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    tee = Tee([VideoFileSink(blocker / "a.avi", fps=10), VideoFileSink(blocker / "b.avi", 10)])
    with pytest.raises(InputError, match="every output failed"):
        tee.write(_frames(1)[0])
    assert len(tee.failures) == 2


# --- display -------------------------------------------------------------------------------


def test_no_display_is_refused_before_anything_opens(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not display_available()
    with pytest.raises(InputError) as info:
        require_display()
    text = str(info.value)
    assert "cannot show the restored frames in a window" in text
    assert "--rtsp-serve" in text and "-o FILE" in text
    expected = "no display is set" if opencv_has_gui() else "no GUI support"
    assert expected in text
    with pytest.raises(InputError):
        DisplaySink("restored")


@pytest.mark.skipif(not opencv_has_gui(), reason="this OpenCV has no GUI backend (headless)")
def test_unreachable_display_is_refused_not_crashed(tmp_path):
    # A GUI toolkit aborts the whole process when the display it is given is not there (Qt:
    # SIGABRT), so the check must look for the X server, not only at $DISPLAY. A subprocess, so
    # that an abort would fail this test rather than end the test run.
    assert not os.path.exists("/tmp/.X11-unix/X97")
    code = (
        "import numpy as np\n"
        "from restorekit.errors import InputError\n"
        "from restorekit.runtime.sinks import DisplaySink\n"
        "try:\n"
        "    DisplaySink('t').write(np.zeros((8, 8, 3), np.uint8))\n"
        "except InputError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
    env["DISPLAY"] = ":97"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "the display DISPLAY=:97 cannot be reached" in done.stdout


# --- GStreamer pipelines -------------------------------------------------------------------


@needs_gst
def test_gstreamer_sink_streams_h264_over_udp(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    receiver = Receiver(
        f'udpsrc address=127.0.0.1 port={port} caps="application/x-rtp,media=video,'
        'encoding-name=H264,clock-rate=90000,payload=96" ! rtph264depay ! avdec_h264'
    )
    sent = _frames(30)
    try:
        sink = GStreamerSink(
            "appsrc ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast "
            "bitrate=4000 key-int-max=10 ! rtph264pay pt=96 config-interval=1 "
            f"! udpsink host=127.0.0.1 port={port}",
            fps=25,
        )
        for frame in sent:
            sink.write(frame)
            time.sleep(1 / 25)  # a live stream's pace
        sink.close()
        receiver.wait(len(sent), timeout=10)
    finally:
        receiver.stop()
    got = receiver.frames
    assert len(got) == len(sent)
    assert got[0].shape == (HEIGHT, WIDTH, 3)
    figures = [psnr(a, b) for a, b in zip(got, sent, strict=True)]
    # Measured here: 36.6-37.0 dB (x264 at 4 Mbit/s, 4:2:0 chroma). Rows sent without
    # GStreamer's 4-byte padding (OpenCV 4.6's writer at this width) measured 6.7 dB.
    assert min(figures) > 32, figures


@needs_gst
@pytest.mark.parametrize("channels", [1, 3])
def test_gstreamer_sink_rows_are_laid_out_as_gstreamer_reads_them(tmp_path, channels):
    # 161 pixels: rows of 161 or 483 bytes, which GStreamer pads to 164 and 484. videocrop reads
    # the frame with GStreamer's own layout and writes it one column narrower (160 or 480 bytes a
    # row: no padding), so the raw file shows exactly what GStreamer saw.
    rng = np.random.default_rng(5)
    shape = (50, 161) if channels == 1 else (50, 161, 3)
    sent = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    raw = tmp_path / "cropped.raw"
    with GStreamerSink(f"appsrc ! videocrop left=1 ! filesink location={raw}") as sink:
        for frame in sent:
            sink.write(frame)
    got = np.frombuffer(raw.read_bytes(), np.uint8).reshape((len(sent), 50, 160, channels))
    for frame, cropped in zip(sent, got, strict=True):
        np.testing.assert_array_equal(cropped.reshape(frame[:, 1:].shape), frame[:, 1:])


@needs_gst
def test_gstreamer_sink_reports_what_gstreamer_says(tmp_path):
    with pytest.raises(InputError, match='no element "nosuchencoder"'):
        GStreamerSink("appsrc ! videoconvert ! nosuchencoder ! fakesink")
    with pytest.raises(InputError, match="must start with appsrc"):
        GStreamerSink("videotestsrc ! fakesink")
    with pytest.raises(InputError, match="Could not open file"):
        GStreamerSink(f"appsrc ! filesink location={tmp_path / 'missing' / 'out.raw'}")
    # A pipeline that parses and starts but cannot take the frames (RGB into an I420-only caps
    # filter): the failure comes at a write, with GStreamer's reason.
    sink = GStreamerSink("appsrc ! video/x-raw,format=I420 ! fakesink")
    with pytest.raises(InputError, match="sink pipeline .* failed: .*not.negotiated"):
        for frame in _frames(20):
            sink.write(frame)
    assert sink.closed


@needs_gst
def test_tee_records_while_a_stream_fails(tmp_path):
    broken = GStreamerSink("appsrc ! video/x-raw,format=I420 ! fakesink")
    good = VideoFileSink(tmp_path / "kept.avi", fps=10)
    with Tee([broken, good]) as tee:
        for frame in _frames(20):
            tee.write(frame)
    assert good.frames == 20 and (tmp_path / "kept.avi").is_file()
    assert [name for name, _ in tee.failures] == [broken.name]


@needs_rtsp
def test_rtsp_server_serves_live_frames():
    port = free_port(socket.SOCK_STREAM)
    sent = _frames(100)
    sink = RtspServerSink(port, fps=25)
    assert sink.url == f"rtsp://127.0.0.1:{port}/restored"
    stop = threading.Event()
    written: list[int] = []

    def feed() -> None:
        for k, frame in enumerate(sent):
            if stop.is_set():
                return
            sink.write(frame)
            written.append(k)
            time.sleep(1 / 25)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    receiver = Receiver(f"rtspsrc location={sink.url} latency=0 ! rtph264depay ! avdec_h264")
    try:
        receiver.wait(15, timeout=15)
        stop.set()
        writer.join(5)
        sink.close()
        got_eos = receiver.wait_eos(5)
    finally:
        receiver.stop()
    got = receiver.frames
    assert len(got) >= 15, (len(got), sink.served, sink.frames)
    assert all(f.shape == (HEIGHT, WIDTH, 3) for f in got)
    # Which sent frame each received one is: the best match; they must come in order, and match
    # as a codec would (frames written before the client joined are not served).
    best = [max(range(len(written)), key=lambda k, f=f: psnr(f, sent[k])) for f in got]
    assert np.all(np.diff(best) > 0), best
    assert min(psnr(f, sent[k]) for f, k in zip(got, best, strict=True)) > 30
    assert 0 < sink.served <= sink.frames == len(written)
    assert got_eos  # the client saw a clean end of the stream
    # The server let go of its port: nothing accepts connections there, and it can be listened
    # on again (SO_REUSEADDR: the closed client connections may linger in TIME_WAIT, which is
    # normal; a socket still listening would make the bind fail all the same).
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


@needs_rtsp
def test_rtsp_server_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"cannot serve RTSP on 127.0.0.1:{port}"):
            RtspServerSink(port)

"""``restore-run`` on live sources and into live sinks, against real GStreamer on 127.0.0.1 (run in
.venv-gst, see .ci/run): a videotestsrc camera streamed over RTP/UDP and served over RTSP, frames
dropped (and counted) when the camera is faster than the model, and Ctrl-C ending a live run
with its outputs finalised. Received frames are compared with the same frames restored offline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import restorekit
from restorekit.cli.run import main
from restorekit.runtime.gstreamer import has_gst_bindings, opencv_has_gstreamer
from restorekit.runtime.opencv import cv2
from tests.ctrl_c import popen_for_ctrl_c
from tests.gst_receiver import Receiver, free_port, psnr
from tests.runtime import tinynet
from tests.video_frames import read_rgb_frames

pytestmark = pytest.mark.skipif(
    not (opencv_has_gstreamer() and has_gst_bindings(rtsp_server=True)),
    reason="needs OpenCV with GStreamer and the GStreamer bindings; run in .venv-gst (.ci/run)",
)
W, H = 320, 240
RTP_H264 = "application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000"


def camera(buffers: int | None, *, live: bool = False, fps: int = 25, w: int = W, h: int = H):
    count = f" num-buffers={buffers}" if buffers else ""
    return (f"videotestsrc{count} pattern=ball is-live={str(live).lower()} ! "
            f"video/x-raw,width={w},height={h},framerate={fps}/1 ! videoconvert ! appsink")  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path, _, _ = tinynet.export_net(tmp_path_factory.mktemp("live"), batch=2)
    return path


def test_camera_streamed_over_udp_reaches_a_receiver(model, tmp_path):
    n = 30
    port = free_port(socket.SOCK_DGRAM)
    receiver = Receiver(f'udpsrc port={port} caps="{RTP_H264}" ! rtph264depay ! avdec_h264')
    sink = (f"appsrc ! videoconvert ! x264enc tune=zerolatency ! rtph264pay ! "
            f"udpsink host=127.0.0.1 port={port}")  # fmt: skip
    stats_path = tmp_path / "stats.json"
    try:
        code = main([str(model), camera(n), "--sink", sink, "--every-frame", "--quiet",
                     "--stats", str(stats_path)])  # fmt: skip
        receiver.wait(n, timeout=20)
    finally:
        receiver.stop()
    assert code == 0
    (stream,) = json.loads(stats_path.read_text())["streams"]
    assert stream["frames_out"] == n and stream["dropped"] == 0 and stream["ended"]
    with restorekit.open(model) as session:
        want = [session.restore(f) for f in read_rgb_frames(camera(n), cv2.CAP_GSTREAMER)]
    got = receiver.frames
    assert len(got) == n and all(f.shape == (H, W, 3) for f in got)
    worst = min(psnr(g, w) for g, w in zip(got, want, strict=True))
    assert worst > 30.0, worst  # H.264 at x264's defaults, not a lossless path


def test_rtsp_serve_is_read_by_a_client(model):
    port = free_port(socket.SOCK_STREAM)
    result: dict[str, int] = {}
    run = threading.Thread(
        target=lambda: result.update(code=main([str(model), camera(100, live=True), "--quiet",
                                                "--rtsp-serve", str(port)])),
        daemon=True,
    )  # fmt: skip
    run.start()
    receiver = None
    deadline = time.monotonic() + 15
    while receiver is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
            continue
        receiver = Receiver(f"rtspsrc location=rtsp://127.0.0.1:{port}/restored latency=0 ! "
                            "rtph264depay ! avdec_h264")  # fmt: skip
    assert receiver is not None, "the RTSP server never listened"
    try:
        receiver.wait(10, timeout=15)
    finally:
        run.join(30)
        receiver.stop()
    assert result.get("code") == 0
    assert len(receiver.frames) >= 10 and receiver.frames[0].shape == (H, W, 3)


def test_camera_faster_than_the_model_drops_frames_and_latency_stays_bounded(model, tmp_path):
    # 640x480 frames at 50 fps through 32x48 tiles: hundreds of model calls per frame, so the
    # model runs well below the camera's rate.
    stats_path = tmp_path / "stats.json"
    code = main([str(model), camera(100, live=True, fps=50, w=640, h=480), "-o",
                 str(tmp_path / "live.avi"), "--quiet", "--stats", str(stats_path)])  # fmt: skip
    assert code == 0
    (s,) = json.loads(stats_path.read_text())["streams"]
    assert s["live"] and s["frames_in"] == 100
    assert s["dropped"] > 0 and s["frames_in"] == s["frames_out"] + s["dropped"], s
    # Queued frames would make latency grow towards the whole run (100 frames at fps_out);
    # with the newest frame taken it stays near one restoration plus one capture interval.
    restore_ms = s["stage_median_ms"]["restore"]
    assert s["latency_ms"]["p95"] <= 3 * restore_ms + 250, s
    video = cv2.VideoCapture(str(tmp_path / "live.avi"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == s["frames_out"]


def test_ctrl_c_ends_a_live_run_with_outputs_finalised(model, tmp_path):
    out = tmp_path / "live.avi"
    stats_path = tmp_path / "stats.json"
    proc = popen_for_ctrl_c(
        [sys.executable, "-m", "restorekit.cli.run", str(model), camera(None, live=True),
         "-o", str(out), "--quiet", "--stats", str(stats_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(tmp_path.glob(".live.partial*")):
        time.sleep(0.2)  # recording has started
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    (s,) = json.loads(stats_path.read_text())["streams"]
    assert s["ended"] == "interrupted" and s["frames_out"] > 0
    assert "ended: interrupted" in stdout and "Traceback" not in stderr
    video = cv2.VideoCapture(str(out))
    assert video.isOpened() and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == s["frames_out"]
    assert not list(tmp_path.glob(".live.partial*"))


def test_a_silent_camera_ends_the_run_after_the_stall_timeout(model, tmp_path, capsys):
    # One frame per 30 s and no end of stream: without the timeout the run would wait.
    silent = camera(None, live=True).replace("framerate=25/1", "framerate=1/30")
    start = time.monotonic()
    code = main([str(model), silent, "-o", str(tmp_path / "silent.avi"), "--quiet",
                 "--stall-timeout", "1"])  # fmt: skip
    assert time.monotonic() - start < 10
    assert code != 0
    assert "source stalled: no frame for" in capsys.readouterr().err


def test_stall_timeout_must_be_seconds(model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(model), camera(5), "-o", str(tmp_path / "x.avi"), "--stall-timeout", "-1"])
    assert exit_.value.code == 2
    assert "expected seconds >= 0" in capsys.readouterr().err

"""The scripts in examples/ run as written, on a tiny artifact, and do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import restorekit
from restorekit.runtime.opencv import cv2
from tests.runtime import tinynet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_camera_loop_writes_the_restored_video(tmp_path):
    model, _, _ = tinynet.export_net(tmp_path, batch=2, scale=2)
    clip = tmp_path / "camera.avi"  # a video file stands in for the camera
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "restored.avi"
    proc = _run("camera_loop.py", str(model), "--source", str(clip), "--frames", "5",
                "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = cv2.VideoCapture(str(out))
    got = []
    while True:
        ok, frame = written.read()
        if not ok:
            break
        got.append(frame)
    assert len(got) == 5 and got[0].shape == (48, 64, 3)
    decoded = cv2.VideoCapture(str(clip)).read()[1]  # what the loop read (after MJPG)
    with restorekit.open(model) as session:
        want = session.restore(decoded, bgr=True)
    # The restored frame went through MJPG on the way out too: encode ours the same way.
    again = tmp_path / "want.avi"
    writer = cv2.VideoWriter(str(again), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    writer.write(want)
    writer.release()
    assert np.array_equal(got[0], cv2.VideoCapture(str(again)).read()[1])


def test_restore_folder_restores_each_image_and_reports_a_bad_one(tmp_path):
    model, _, _ = tinynet.export_net(tmp_path, batch=1)
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = {
        "a.png": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "b.png": rng.integers(0, 65536, (17, 21), dtype=np.uint16),
        "c.png": rng.integers(0, 256, (15, 16, 4), dtype=np.uint8),
    }
    for name, image in images.items():
        cv2.imwrite(str(folder / name), image)
    (folder / "d.png").write_bytes(b"not an image")
    proc = _run("restore_folder.py", str(model), str(folder), str(tmp_path / "out"))
    assert proc.returncode == 1 and "skipped d.png" in proc.stderr
    with restorekit.open(model) as session:
        for name, image in images.items():
            got = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
            assert got.dtype == image.dtype and got.shape == image.shape, name
            assert np.array_equal(got, session.restore(image, bgr=True)), name


def test_stream_relay_sends_restored_frames_to_a_receiver(tmp_path):
    import socket

    import pytest

    from restorekit.runtime.gstreamer import has_gst_bindings, opencv_has_gstreamer

    if not (opencv_has_gstreamer() and has_gst_bindings()):
        pytest.skip("needs OpenCV with GStreamer and the GStreamer bindings; run in .venv-gst")
    from tests.gst_receiver import Receiver, free_port

    model, _, _ = tinynet.export_net(tmp_path, batch=2)
    port = free_port(socket.SOCK_DGRAM)
    caps = "application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000"
    receiver = Receiver(f'udpsrc port={port} caps="{caps}" ! rtph264depay ! avdec_h264')
    source = ("videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=160,height=120,"
              "framerate=25/1 ! videoconvert ! appsink")  # fmt: skip
    sink = f"appsrc ! videoconvert ! x264enc tune=zerolatency ! rtph264pay ! udpsink host=127.0.0.1 port={port}"
    try:
        proc = _run("stream_relay.py", str(model), source, sink)
        receiver.wait(5, timeout=10)
    finally:
        receiver.stop()
    assert proc.returncode == 0, proc.stderr
    relayed = int(proc.stdout.split()[0])
    assert relayed >= 5 and len(receiver.frames) >= 5
    assert receiver.frames[0].shape == (120, 160, 3)

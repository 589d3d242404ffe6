"""Frame sources against real OpenCV and real GStreamer pipelines (``videotestsrc`` as the camera).

Frames of ``videotestsrc pattern=ball`` depend only on their frame number (animation-mode=frames,
the default), so a frame's number is recovered from its pixels by looking it up among the frames
of the same pipeline read directly with ``cv2.VideoCapture``: that is how the tests check which
frames a live source handed out, independently of the source's own counters.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")

from restorekit.errors import InputError, MissingDependencyError
from restorekit.runtime.gstreamer import opencv_has_gstreamer, pipeline_error
from restorekit.runtime.sources import (
    STALLED,
    FileSource,
    LiveSource,
    open_source,
)
from tests.video_frames import read_rgb_frames

needs_gstreamer = pytest.mark.skipif(
    not opencv_has_gstreamer(),
    reason="this OpenCV was built without GStreamer (pip wheel); run in .venv-gst, see .ci/run",
)

FRAMES = 50
CAMERA = (
    "videotestsrc num-buffers={n} pattern=ball {live} "
    "! video/x-raw,format=BGR,width=160,height=120,framerate=50/1 ! videoconvert ! appsink"
)


def _key(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def reference() -> dict[str, int]:
    """Frame number of every frame of the test camera, read directly with OpenCV."""
    if not opencv_has_gstreamer():
        pytest.skip("this OpenCV was built without GStreamer")
    cap = cv2.VideoCapture(CAMERA.format(n=FRAMES, live=""), cv2.CAP_GSTREAMER)
    assert cap.isOpened()
    keys = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        keys.append(_key(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    cap.release()
    assert len(keys) == FRAMES
    assert len(set(keys)) == FRAMES, "the test pattern must differ in every frame"
    return {k: n for n, k in enumerate(keys)}


def _video(path, count: int = 12, size: tuple[int, int] = (96, 64)) -> None:
    rng = np.random.default_rng(3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size, True)
    assert writer.isOpened()
    for _ in range(count):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()


def test_file_source_gives_every_frame_in_order(tmp_path):
    path = tmp_path / "clip.avi"
    _video(path)
    direct = read_rgb_frames(str(path))
    assert len(direct) == 12
    with open_source(str(path)) as source:
        assert isinstance(source, FileSource) and not source.live
        assert source.fps == pytest.approx(10.0)
        got = list(source.frames())
        assert source.ended == "end of file"
    assert [f.index for f in got] == list(range(12))
    assert all(np.array_equal(f.image, d) for f, d in zip(got, direct, strict=True))
    assert np.all(np.diff([f.captured for f in got]) >= 0)
    assert (source.read, source.dropped, source.delivered) == (12, 0, 12)


def test_missing_or_unknown_locations_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no video file, camera or stream"):
        open_source(str(tmp_path / "nothing.mp4"))
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    with pytest.raises(InputError, match="cannot open video"):
        open_source(str(broken))


@pytest.mark.skipif(opencv_has_gstreamer(), reason="only where OpenCV lacks GStreamer")
def test_pipeline_without_gstreamer_names_the_fix():
    with pytest.raises(MissingDependencyError) as info:
        open_source(CAMERA.format(n=5, live=""))
    text = str(info.value)
    assert "--system-site-packages" in text
    assert "pip uninstall opencv-python opencv-python-headless" in text
    assert "gstreamer1.0-plugins-good" in text


@needs_gstreamer
def test_slow_consumer_gets_the_newest_frames_and_drops_are_counted(reference):
    handed = []
    with open_source(CAMERA.format(n=FRAMES, live="is-live=true")) as source:
        assert isinstance(source, LiveSource) and source.live
        assert source.fps == pytest.approx(50.0)
        for frame in source.frames():
            handed.append((frame.index, reference[_key(frame.image)], frame.captured))
            time.sleep(0.1)  # five frame times at 50 fps
        assert source.ended == "stream ended"
    numbers = [n for _, n, _ in handed]
    assert [i for i, _, _ in handed] == numbers  # index is the frame's number at the source
    assert np.all(np.diff(numbers) > 0)  # each newer than the last
    assert numbers[-1] == FRAMES - 1  # the last frame is not lost
    assert source.read == FRAMES
    assert source.dropped > 0
    assert source.delivered + source.dropped == source.read
    # Latest-frame: after each 0.1 s sleep, the frame handed out is about five frames newer.
    gaps = np.diff(numbers[:-1])
    assert gaps.mean() >= 3, gaps


@needs_gstreamer
def test_every_frame_drops_nothing(reference):
    with open_source(CAMERA.format(n=FRAMES, live="is-live=true"), every_frame=True) as source:
        numbers = []
        for frame in source.frames():
            numbers.append(reference[_key(frame.image)])
            time.sleep(0.01)
        assert source.ended == "stream ended"
    assert numbers == list(range(FRAMES))
    assert (source.read, source.dropped) == (FRAMES, 0)


@needs_gstreamer
def test_consumer_that_stops_early_is_interrupted_and_leftovers_count_as_dropped():
    with open_source(CAMERA.format(n=-1, live="is-live=true")) as source:
        frames = source.frames()
        taken = [next(frames) for _ in range(3)]
        time.sleep(0.1)
        frames.close()
        assert source.ended == "interrupted"
    assert len(taken) == 3
    assert source.delivered == 3
    assert source.read >= 3
    assert source.delivered + source.dropped == source.read


@needs_gstreamer
def test_a_source_that_goes_silent_ends_as_stalled_instead_of_hanging():
    # A live camera at one frame per 30 s: at most the first frame (OpenCV may take it while
    # opening), then nothing for 30 s and no end of stream, as from a hung RTSP server or a camera
    # driver that stopped.
    silent = CAMERA.format(n=-1, live="is-live=true").replace("framerate=50/1", "framerate=1/30")
    start = time.monotonic()
    with open_source(silent, stall_timeout=1.0) as source:
        taken = list(source.frames())
        waited = time.monotonic() - start
        assert source.ended.startswith(STALLED), source.ended
        assert "--stall-timeout 1" in source.ended
    closed = time.monotonic() - start
    assert len(taken) <= 1
    assert 1.0 <= waited < 5.0, waited  # ended by the timeout, long before the next frame
    assert closed - waited < 2.0  # closing does not wait for the blocked read


@needs_gstreamer
def test_pipelines_that_cannot_open_say_why():
    with pytest.raises(InputError, match='no element "nosuchelement"'):
        open_source("videotestsrc ! nosuchelement ! appsink")
    assert pipeline_error("videotestsrc ! nosuchelement ! appsink") is not None
    with pytest.raises(InputError, match="must end in appsink"):
        open_source("videotestsrc num-buffers=1 ! fakesink")


def test_vanished_camera_device_is_an_input_error():
    # /dev/video63 does not exist on a test machine; open fails with what to check.
    with pytest.raises(InputError, match="check that it exists"):
        open_source("/dev/video63")

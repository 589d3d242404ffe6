"""run_stream with a real video file source: every frame restored in order into the sink, the
figures counted, and a failing sink stopping the stream with its error (never a hang)."""

from __future__ import annotations

import numpy as np
import pytest

import restorekit
from restorekit.runtime.opencv import cv2
from restorekit.runtime.sources import open_source
from restorekit.runtime.stream import pipelined, run_stream
from tests.runtime import tinynet


class _Keep:
    name = "keep"

    def __init__(self, fail_at: int | None = None) -> None:
        self.frames: list[np.ndarray] = []
        self.fail_at = fail_at

    def write(self, frame: np.ndarray) -> None:
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise OSError("disk full")
        self.frames.append(frame)


@pytest.fixture()
def clip(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (40, 30))
    for k in range(9):
        writer.write(np.full((30, 40, 3), 20 * k, np.uint8))
    writer.release()
    return path


def test_file_stream_restores_every_frame_in_order(tmp_path, clip):
    model, _, _ = tinynet.export_net(tmp_path, batch=2)
    with open_source(str(clip)) as source:
        inputs = [f.image for f in source.frames()]
    sink = _Keep()
    with restorekit.open(model) as session, open_source(str(clip)) as source:
        stats = run_stream(source, session.restore_with_report, sink)
        want = [session.restore(f) for f in inputs]
    assert len(sink.frames) == len(want) == 9
    assert all(np.array_equal(a, b) for a, b in zip(sink.frames, want, strict=True))
    assert stats.frames_out == 9 and stats.dropped == 0 and not stats.live
    assert len(stats.latency) == 9 and stats.ended == "end of file"
    assert len(stats.stages["restore"]) == 9 and stats.to_dict()["latency_ms"]["p95"] > 0


def test_failing_sink_stops_the_stream_with_its_error(tmp_path, clip):
    model, _, _ = tinynet.export_net(tmp_path, batch=2)
    sink = _Keep(fail_at=3)
    with (
        restorekit.open(model) as session,
        open_source(str(clip)) as source,
        pytest.raises(OSError, match="disk full"),
    ):
        run_stream(source, session.restore_with_report, sink)
    assert len(sink.frames) == 3


def test_pipelined_keeps_order_and_raises_worker_errors():
    assert list(pipelined(range(20), lambda x: x * x, read_ahead=3)) == [x * x for x in range(20)]

    def bad(x):
        if x == 4:
            raise ValueError("frame 4")
        return x

    got = []
    with pytest.raises(ValueError, match="frame 4"):
        for value in pipelined(range(10), bad):
            got.append(value)
    assert got == [0, 1, 2, 3]

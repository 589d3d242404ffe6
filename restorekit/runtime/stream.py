"""Frames through a model as overlapping stages, with the figures a live pipeline is judged by.

Capture, restoration and output run at the same time, joined by bounded queues, so memory and
latency stay bounded whichever stage is slowest:

- capture: a live source's own thread keeps only the newest frame (``sources.LiveSource``); a
  file is read one frame ahead in a reader thread;
- restoration (tiling, pre-processing, inference, blending) in a worker thread, frame by frame,
  in order;
- output (encoding, streaming, display) in the caller's thread, or for :func:`run_stream` in a
  writer thread feeding the sinks.

:func:`pipelined` is the ordered, bounded worker both ``RestorationSession.stream`` and
:func:`run_stream` use. :class:`StreamStats` carries the figures: frames in and out, frames the
source dropped, end-to-end latency (capture to written) p50/p95, time per stage, NaN/Inf tiles
and tiles repaired by the fallback, and how the stream ended.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def pipelined(
    items: Iterable[T], fn: Callable[[T], U], *, depth: int = 2, read_ahead: int = 0
) -> Iterator[U]:
    """``fn`` over ``items`` in a worker thread, results in order, at most ``depth`` ahead.

    The caller's work on one result overlaps ``fn`` on the next items. With ``read_ahead`` > 0
    a reader thread pulls ``items`` that many ahead of ``fn`` (decoding a file while the model
    runs); with 0 the worker pulls each item only when it is free (a live source then hands it
    its newest frame, not one queued earlier). Exceptions in either thread are raised here;
    closing the generator stops both threads.
    """
    results: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()
    source: Iterator[Any]
    reader: threading.Thread | None = None
    if read_ahead > 0:
        inbox: queue.Queue = queue.Queue(maxsize=read_ahead)

        def read() -> None:
            try:
                for item in items:
                    if not _put(inbox, item, stop):
                        return
                _put(inbox, _DONE, stop)
            except BaseException as exc:  # handed to the consumer
                _put(inbox, _Failure(exc), stop)

        reader = threading.Thread(target=read, name="restorekit-read", daemon=True)
        reader.start()
        source = _drain(inbox, stop)
    else:
        source = iter(items)

    def work() -> None:
        try:
            for item in source:
                if isinstance(item, _Failure):
                    _put(results, item, stop)
                    return
                if not _put(results, fn(item), stop):
                    return
            _put(results, _DONE, stop)
        except BaseException as exc:
            _put(results, _Failure(exc), stop)

    worker = threading.Thread(target=work, name="restorekit-restore", daemon=True)
    worker.start()
    try:
        while True:
            got = results.get()
            if got is _DONE:
                return
            if isinstance(got, _Failure):
                raise got.exc
            yield got
    finally:
        stop.set()
        for thread in (worker, reader):
            if thread is not None:
                thread.join(timeout=5.0)


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless the consumer has gone; ``False`` when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _DONE:
            return
        yield item
        if isinstance(item, _Failure):
            return


@dataclass
class StreamStats:
    """What a stream did; :meth:`to_dict` is the ``--stats`` JSON, :meth:`readout` the live line.

    Latencies and stage times are in seconds, one entry per frame written.
    """

    source: str
    live: bool
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    nonfinite_tiles: int = 0
    repaired_tiles: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    latency: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(
        default_factory=lambda: {"wait": [], "restore": [], "write": []}
    )
    ended: str = ""
    sink_failures: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def fps_in(self) -> float:
        return self.frames_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps_out(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.quantile(self.latency, q)) * 1e3 if self.latency else float("nan")

    def readout(self) -> dict[str, str]:
        """The live figures, short, for a progress bar."""
        line = {
            "in": f"{self.fps_in:.1f}fps",
            "out": f"{self.fps_out:.1f}fps",
            "p50": f"{self.latency_ms(0.5):.0f}ms",
            "p95": f"{self.latency_ms(0.95):.0f}ms",
        }
        if self.dropped:
            line["dropped"] = str(self.dropped)
        if self.nonfinite_tiles:
            line["nan_tiles"] = str(self.nonfinite_tiles)
        if self.repaired_tiles:
            line["repaired"] = str(self.repaired_tiles)
        return line

    def to_dict(self) -> dict[str, Any]:
        def median_ms(values: list[float]) -> float | None:
            return round(float(np.median(values)) * 1e3, 3) if values else None

        return {
            "source": self.source,
            "live": self.live,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "megapixels": round(self.megapixels, 3),
            "seconds": round(self.seconds, 3),
            "fps_in": round(self.fps_in, 3),
            "fps_out": round(self.fps_out, 3),
            "latency_ms": {
                "p50": _finite_or_none(self.latency_ms(0.5)),
                "p95": _finite_or_none(self.latency_ms(0.95)),
            },
            "stage_median_ms": {k: median_ms(v) for k, v in self.stages.items()},
            "nonfinite_tiles": self.nonfinite_tiles,
            "repaired_tiles": self.repaired_tiles,
            "ended": self.ended,
            "sink_failures": [{"sink": s, "error": e} for s, e in self.sink_failures],
        }


def _finite_or_none(value: float) -> float | None:
    return round(value, 3) if np.isfinite(value) else None


def run_stream(
    source: Any,
    restore: Callable[[np.ndarray], Any],
    sink: Any,
    *,
    stats: StreamStats | None = None,
    on_frame: Callable[[StreamStats], None] | None = None,
    max_frames: int | None = None,
) -> StreamStats:
    """Frames of ``source`` through ``restore`` into ``sink``, as overlapping stages.

    Args:
        source: a ``sources.FrameSource`` (open): ``frames()`` of ``Frame`` records, ``live``,
            ``read``, ``dropped``, ``ended``.
        restore: an image -> ``Restored`` (``RestorationSession.restore_with_report``).
        sink: a ``sinks.FrameSink`` (e.g. a ``Tee`` of several): ``write(image)``.
        stats: figures to fill (default: new ones).
        on_frame: called after each frame is written (the live readout).
        max_frames: stop after this many frames.

    Returns:
        The figures; ``ended`` says how the stream ended ("end of file", "stream ended",
        "source vanished: ...", "interrupted", "frame limit"). Ctrl-C ends the stream cleanly:
        frames restored so far are written before this returns.
    """
    stats = stats or StreamStats(source=str(getattr(source, "location", source)),
                                 live=bool(getattr(source, "live", False)))  # fmt: skip
    stats.started = time.perf_counter()
    outbox: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        while True:
            item = outbox.get()
            if item is _DONE:
                return
            if failure:
                continue  # drain until the main loop has seen the stop
            frame, image = item
            t0 = time.perf_counter()
            try:
                sink.write(image)
            except BaseException as exc:  # the stream stops; the caller sees why
                failure.append(exc)
                stop.set()
                continue
            now = time.perf_counter()
            stats.stages["write"].append(now - t0)
            stats.latency.append(now - frame.captured)
            stats.frames_out += 1
            stats.frames_in = int(getattr(source, "read", stats.frames_out))  # live readout
            stats.dropped = int(getattr(source, "dropped", 0))
            stats.seconds = now - stats.started
            if on_frame is not None:
                on_frame(stats)

    def frames() -> Iterator[Any]:
        for count, frame in enumerate(source.frames()):
            if stop.is_set() or (max_frames is not None and count >= max_frames):
                return
            yield frame

    def restore_one(frame: Any) -> tuple[Any, Any, float]:
        t0 = time.perf_counter()
        restored = restore(frame.image)
        return frame, restored, time.perf_counter() - t0

    writer = threading.Thread(target=write, name="restorekit-write", daemon=True)
    writer.start()
    ended = ""
    results = pipelined(frames(), restore_one, read_ahead=0 if stats.live else 2)
    try:
        waited = time.perf_counter()
        for frame, restored, seconds in results:
            stats.stages["wait"].append(max(time.perf_counter() - waited - seconds, 0.0))
            stats.stages["restore"].append(seconds)
            stats.nonfinite_tiles += len(restored.nonfinite)
            stats.repaired_tiles += len(getattr(restored, "repaired", ()))
            stats.megapixels += frame.image.shape[0] * frame.image.shape[1] / 1e6
            if not _put(outbox, (frame, restored.image), stop):
                break
            waited = time.perf_counter()
    except KeyboardInterrupt:
        ended = "interrupted"
    finally:
        results.close()
        outbox.put(_DONE)
        writer.join()
    stats.frames_in = int(getattr(source, "read", stats.frames_out))
    stats.dropped = int(getattr(source, "dropped", 0))
    stats.seconds = time.perf_counter() - stats.started
    stats.sink_failures += list(getattr(sink, "failures", ()))
    if failure:
        raise failure[0]
    if not ended:
        limit = max_frames is not None and stats.frames_out >= max_frames
        ended = "frame limit" if limit else (getattr(source, "ended", "") or "end of stream")
    stats.ended = ended
    return stats

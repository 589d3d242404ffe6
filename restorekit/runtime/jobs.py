"""Batch jobs over many inputs: images, folders, globs, videos and camera streams.

A bad input (unreadable file, non-finite output) is reported and the job goes on; the summary at
the end lists every failure. Progress is shown with tqdm over tiles (images) or frames (video).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from restorekit.errors import InputError, RestoreKitError
from restorekit.runtime.imageio import keeps_alpha, read_image, write_image
from restorekit.runtime.media import (
    Source,
    expand_sources,
    output_path,
)
from restorekit.runtime.restore import Restorer
from restorekit.runtime.sources import DEFAULT_STALL_TIMEOUT, STALLED
from restorekit.runtime.stream import StreamStats, run_stream
from restorekit.runtime.tiling import describe_tiles


@dataclass(frozen=True)
class StreamOptions:
    """Where video and live streams go besides ``-o``, and how live sources are read.

    Attributes:
        pipelines: GStreamer pipelines starting with ``appsrc`` (``--sink``), one per stream.
        rtsp_port: serve the restored stream over RTSP on this port (``--rtsp-serve``).
        rtsp_address: the address the RTSP server listens on (``0.0.0.0``: every interface).
        show: show the restored frames in a window (``--show``).
        every_frame: read live sources frame by frame, as files (``--every-frame``); by default a
            live source hands over its newest frame and counts the ones it drops.
        stall_timeout: seconds without a frame after which a live source ends as stalled
            (``--stall-timeout``); ``None``: the default, 10 s; 0: wait for ever.
    """

    pipelines: tuple[str, ...] = ()
    rtsp_port: int | None = None
    show: bool = False
    every_frame: bool = False
    rtsp_address: str = "127.0.0.1"
    stall_timeout: float | None = None


@dataclass
class JobSummary:
    """What a job did: counts, sizes, time, and every failure or warning with its input."""

    images: int = 0
    frames: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    streams: list[StreamStats] = field(default_factory=list)

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        parts = [f"{self.images} images"]
        if self.frames:
            parts.append(f"{self.frames} frames")
        parts += [
            f"{self.megapixels:.2f} MP",
            f"{self.seconds:.2f} s",
            f"{self.megapixels_per_second:.2f} MP/s",
        ]
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        return ", ".join(parts)


def run_job(
    restorer: Restorer,
    inputs: list[str],
    output: str | Path | None,
    *,
    progress: bool = True,
    max_frames: int | None = None,
    stream: StreamOptions | None = None,
) -> JobSummary:
    """Restore every input into ``output`` (a file for one image/video, else a folder), and
    streams also into the sinks ``stream`` names.

    Args:
        restorer: wraps an open backend.
        inputs: files, folders, globs, videos, cameras (``camera:N``, ``/dev/videoN``), RTSP/HTTP
            URLs or GStreamer pipelines.
        output: target file or folder (images need one; streams may go to sinks only).
        progress: show tqdm bars and the live readout.
        max_frames: stop video/camera streams after this many frames (live sources run until
            they end or Ctrl-C otherwise).
        stream: the stream sinks and reading options.

    Raises:
        InputError: nothing to do (no input matched), images without ``output``, or a live
            source cannot be opened.
    """
    options = stream or StreamOptions()
    output = Path(output) if output is not None else None
    summary = JobSummary()
    sources, missing = expand_sources(inputs)
    summary.failures += missing
    if not sources:
        detail = "; ".join(f"{i}: {r}" for i, r in missing)
        raise InputError(f"no inputs to restore ({detail})")
    single = len(sources) == 1
    started = time.perf_counter()
    files = tqdm(sources, desc="files", unit="file", disable=not progress or single)
    # Decoding the next image and encoding the previous result run in threads (OpenCV releases
    # the GIL) while the backend computes; at most one read and one write are pending, so memory
    # stays bounded.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="restorekit-io") as io:
        reads: dict[int, Future] = {}
        writes: deque[tuple[Source, Path, float, Future]] = deque()

        def prefetch(k: int) -> None:
            if k < len(sources) and sources[k].kind == "image" and k not in reads:
                reads[k] = io.submit(read_image, sources[k].path)

        if output is None and any(s.kind == "image" for s in sources):
            raise InputError(
                "images are restored into files: give -o FILE (one image) or -o FOLDER"
            )
        prefetch(0)
        for k, source in enumerate(files):
            try:
                if source.kind == "image":
                    prefetch(k)
                    pending_read = reads.pop(k)
                    prefetch(k + 1)  # even when this read fails
                    image = pending_read.result()
                    pending_read = None  # the future holds the image too
                    done = _run_image(restorer, source, image, output, single, summary, progress)
                    del image  # the input is not needed while the result is encoded
                    _drain(writes, summary)  # the previous write, before queueing another
                    if done is not None:
                        target, restored, mp = done
                        writes.append(
                            (source, target, mp, io.submit(write_image, target, restored))
                        )
                else:
                    prefetch(k + 1)
                    _run_stream(restorer, source, output, single, summary, progress, max_frames,
                                options)  # fmt: skip
            except (RestoreKitError, OSError) as exc:
                if source.kind == "camera" and isinstance(exc, RestoreKitError):
                    _drain(writes, summary)
                    raise  # a live source that cannot run ends the job with the reason
                summary.failures.append((source.location, str(exc)))
        _drain(writes, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _drain(writes: deque[tuple[Source, Path, float, Future]], summary: JobSummary) -> None:
    while writes:
        source, target, mp, future = writes.popleft()
        try:
            future.result()
        except (RestoreKitError, OSError) as exc:  # OSError: disk full, no permission
            summary.failures.append((source.location, str(exc)))
            continue
        summary.written.append(target)
        summary.images += 1
        summary.megapixels += mp


def _run_image(
    restorer: Restorer,
    source: Source,
    image: np.ndarray,
    output: Path,
    single: bool,
    summary: JobSummary,
    progress: bool,
) -> tuple[Path, np.ndarray, float] | None:
    """Restore one image; returns (target, result, megapixels) for the caller to write."""
    h, w = image.shape[:2]
    plan = restorer.plan((h, w))
    with tqdm(
        total=plan.count, desc=source.path.name, unit="tile", leave=False, disable=not progress
    ) as bar:
        result = restorer.restore(image, on_tiles=bar.update)
    if result.nonfinite:
        detail = describe_tiles(result.nonfinite)
        summary.failures.append(
            (source.location, f"output not written: NaN/Inf in the model output: {detail}")
        )
        return None
    target = output_path(source.path, output, single=single)
    if result.image.ndim == 3 and result.image.shape[2] == 4 and not keeps_alpha(target):
        summary.warnings.append(
            (source.location, f"{target.suffix} has no alpha channel: the image's alpha is not "
             "kept in the output; write .png, .tif or .webp to keep it")
        )  # fmt: skip
    return target, result.image, h * w / 1e6


def _stream_sinks(
    source: Source, output: Path | None, single: bool, options: StreamOptions, fps: float
) -> tuple[Any, Path | None]:
    """The sinks of one stream (a ``Tee``) and the video file it records, if any."""
    from restorekit.runtime.sinks import (
        DisplaySink,
        GStreamerSink,
        RtspServerSink,
        Tee,
        VideoFileSink,
    )

    sinks: list[Any] = []
    target = None
    if output is not None:
        if source.kind == "camera":
            name = f"camera{source.location}" if source.location.isdigit() else "stream"
            target = output if single and output.suffix else output / f"{name}.mp4"
        else:
            target = output_path(source.path, output, single=single)
        sinks.append(VideoFileSink(target, fps))
    sinks += [GStreamerSink(pipeline, fps) for pipeline in options.pipelines]
    if options.rtsp_port is not None:
        sinks.append(RtspServerSink(options.rtsp_port, fps=fps, address=options.rtsp_address))
    if options.show:
        sinks.append(DisplaySink(str(source.location)))
    if not sinks:
        raise InputError(
            f"{source.location}: nowhere to write the restored frames: give -o FILE/FOLDER, "
            "--sink PIPELINE, --rtsp-serve PORT or --show"
        )
    return Tee(sinks), target


def _run_stream(
    restorer: Restorer,
    source: Source,
    output: Path | None,
    single: bool,
    summary: JobSummary,
    progress: bool,
    max_frames: int | None,
    options: StreamOptions,
) -> None:
    from restorekit.runtime.sources import open_source

    every_frame = options.every_frame or source.kind == "video"
    with open_source(
        source.location,
        every_frame=every_frame,
        stall_timeout=DEFAULT_STALL_TIMEOUT
        if options.stall_timeout is None
        else options.stall_timeout,
    ) as frames_in:
        tee, target = _stream_sinks(source, output, single, options, frames_in.fps)
        stats = StreamStats(source=source.location, live=frames_in.live)
        count = getattr(frames_in, "frame_count", None)  # files: the container's estimate
        total = min(count, max_frames) if count and max_frames else (count or max_frames)
        ok = False
        with tqdm(total=total, desc=str(source.location), unit="frame",
                  disable=not progress) as bar:  # fmt: skip

            def on_frame(s: StreamStats) -> None:
                bar.update(1)
                bar.set_postfix(s.readout(), refresh=False)

            try:
                run_stream(frames_in, restorer.restore, tee, stats=stats, on_frame=on_frame,
                           max_frames=max_frames)  # fmt: skip
                # Ctrl-C is how a live run ends (keep what was recorded); a file cut short is
                # not a result: its partial output is discarded, as after any other error.
                cut_short = not frames_in.live and stats.ended == "interrupted"
                ok = stats.frames_out > 0 and not cut_short
            finally:
                tee.close(ok=ok)
        if not frames_in.live and stats.ended == "interrupted":
            raise KeyboardInterrupt
    stats.sink_failures += [f for f in getattr(tee, "failures", ()) if f not in stats.sink_failures]
    summary.streams.append(stats)
    summary.frames += stats.frames_out
    summary.megapixels += stats.megapixels
    if stats.nonfinite_tiles:
        summary.warnings.append(
            (source.location, f"{stats.nonfinite_tiles} tiles had NaN/Inf (written as 0)")
        )
    if stats.repaired_tiles:
        summary.warnings.append(
            (source.location, f"{stats.repaired_tiles} tiles recomputed by the FP32 fallback")
        )
    for sink, message in stats.sink_failures:
        summary.failures.append((source.location, f"{sink}: {message}"))
    if stats.frames_out == 0:
        raise InputError(f"{source.location}: no frames could be read ({stats.ended})")
    if stats.ended.startswith(("source vanished", STALLED)):
        summary.failures.append((source.location, stats.ended))
    if target is not None:
        summary.written.append(target)

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

import numpy as np
from tqdm import tqdm

from restorekit.errors import InputError, RestoreKitError
from restorekit.runtime.imageio import keeps_alpha, read_image, write_image
from restorekit.runtime.media import (
    AtomicVideoWriter,
    Source,
    capture_fps,
    expand_sources,
    frames,
    open_capture,
    output_path,
)
from restorekit.runtime.restore import Restorer


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
    output: str | Path,
    *,
    progress: bool = True,
    max_frames: int | None = None,
) -> JobSummary:
    """Restore every input into ``output`` (a file for one image/video, else a folder).

    Args:
        restorer: wraps an open backend.
        inputs: files, folders, globs, videos, ``camera:N`` or GStreamer pipelines.
        output: target file or folder.
        progress: show tqdm bars.
        max_frames: stop video/camera streams after this many frames (cameras run until
            interrupted otherwise).

    Raises:
        InputError: nothing to do (no input matched) or a camera cannot be opened.
    """
    output = Path(output)
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
                    _run_stream(restorer, source, output, single, summary, progress, max_frames)
            except InputError as exc:
                if source.kind == "camera":
                    _drain(writes, summary)
                    raise
                summary.failures.append((source.location, str(exc)))
            except (RestoreKitError, OSError) as exc:
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
        detail = "; ".join(t.describe() for t in result.nonfinite[:5])
        more = f" (and {len(result.nonfinite) - 5} more tiles)" if len(result.nonfinite) > 5 else ""
        summary.failures.append(
            (source.location, f"output not written: NaN/Inf in the model output: {detail}{more}")
        )
        return None
    target = output_path(source.path, output, single=single)
    if result.image.ndim == 3 and result.image.shape[2] == 4 and not keeps_alpha(target):
        summary.warnings.append(
            (source.location, f"{target.suffix} has no alpha channel: the image's alpha is not "
             "kept in the output; write .png, .tif or .webp to keep it")
        )  # fmt: skip
    return target, result.image, h * w / 1e6


def _run_stream(
    restorer: Restorer,
    source: Source,
    output: Path,
    single: bool,
    summary: JobSummary,
    progress: bool,
    max_frames: int | None,
) -> None:
    cap = open_capture(source)
    try:
        fps = capture_fps(cap)
        if source.kind == "camera":
            name = Path(f"camera{source.location}" if source.location.isdigit() else "pipeline")
            target = output if single and output.suffix else output / f"{name}.mp4"
            total = max_frames
        else:
            target = output_path(source.path, output, single=single)
            count = int(cap.get(7))  # CAP_PROP_FRAME_COUNT; an estimate for some containers
            total = min(count, max_frames) if max_frames else (count or None)
        with (
            AtomicVideoWriter(target, fps) as writer,
            tqdm(total=total, desc=str(source.location), unit="frame", disable=not progress) as bar,
        ):
            interval = None  # smoothed time between frames, capture included
            last = time.perf_counter()
            try:
                for index, frame in enumerate(frames(cap, max_frames)):
                    t0 = time.perf_counter()
                    result = restorer.restore(frame)
                    latency = time.perf_counter() - t0
                    for tile in result.nonfinite:
                        summary.warnings.append(
                            (source.location, f"frame {index}: {tile.describe()} (written as 0)")
                        )
                    writer.write(result.image)
                    summary.frames += 1
                    summary.megapixels += frame.shape[0] * frame.shape[1] / 1e6
                    now = time.perf_counter()
                    step, last = now - last, now
                    interval = step if interval is None else 0.9 * interval + 0.1 * step
                    bar.update(1)
                    bar.set_postfix(
                        fps=f"{1.0 / max(interval, 1e-9):.1f}", latency_ms=f"{latency * 1e3:.0f}"
                    )
            except KeyboardInterrupt:
                if source.kind != "camera":
                    raise
                # Ctrl-C is how a live camera run ends: keep what was recorded.
            if writer.frames == 0:
                raise InputError(f"{source.location}: no frames could be read")
            writer.commit()
        summary.written.append(target)
    finally:
        cap.release()

"""Live pipeline figures for the demo models on ONNX Runtime (CPU): backend alone vs the whole
pipeline, latency, drops on a live source, and flicker on a static scene.

    for m in mprnet grl panet nlrn; do restore-export $m -o live-models; done
    python benchmarks/live.py live-models/*.fp32.*.onnx --frames 12 --size 640x480

Torch-free, so it runs where the live pipeline runs: for the live-source figures, in a venv that
sees an OpenCV built with GStreamer (.venv-gst of .ci/run, or a Jetson's). For each artifact (the
demo models' FP32 graphs at their default tiles, exported as above):

- **backend alone**: the frame's tiles, cut once, through ``Backend.infer_many`` only: tiles/s,
  and the frames/s that means (tiles/s over tiles per frame);
- **pipeline**: a 640x480 clip of a static scene with fresh sensor noise on every frame, read,
  restored, encoded to a video file, as ``restore-run`` does it (``run_stream``): frames/s, its
  ratio to the backend alone (the target is >= 0.9), end-to-end latency p50/p95;
- **live source** (only where OpenCV has GStreamer, e.g. a venv made with
  ``--system-site-packages`` over Debian's or JetPack's OpenCV): ``videotestsrc is-live=true`` at
  25 fps through the same pipeline: frames read, dropped, written, latency p50/p95;
- **flicker**: mean absolute frame-to-frame change of the output over that of the input on the
  static scene (below 1: the model calms the noise; the tile grid and blend weights are fixed
  for the stream, so they add none).

One process, medians; the machine is shared, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from restorekit.data import sample_paths
from restorekit.runtime.imageio import read_image
from restorekit.runtime.opencv import cv2
from restorekit.runtime.restore import input_batches
from restorekit.runtime.session import open_artifact
from restorekit.runtime.stream import StreamStats, run_stream


class _Recorder:
    """A sink keeping the frames it gets (for the flicker figure)."""

    name = "recorder"

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.failures: list[tuple[str, str]] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def close(self, ok: bool = True) -> None:
        pass


def static_scene_clip(path: Path, size: tuple[int, int], frames: int, fps: float = 25.0) -> None:
    """A still photo with fresh Gaussian noise (sigma 4 of 255) on every frame, written with a
    lossless codec where OpenCV has one (FFV1), else MJPG."""
    w, h = size
    base = cv2.resize(read_image(sample_paths()[0]), (w, h), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    for fourcc in ("FFV1", "MJPG"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if writer.isOpened():
            break
    for _ in range(frames):
        noisy = np.clip(base + rng.normal(0, 4.0, base.shape), 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
    writer.release()


def flicker(frames: list[np.ndarray]) -> float:
    diffs = [
        np.abs(b.astype(np.float64) - a).mean()
        for a, b in zip(frames[:-1], frames[1:], strict=True)
    ]
    return float(np.mean(diffs)) if diffs else float("nan")


def backend_alone(session, frame: np.ndarray, runs: int) -> tuple[float, int]:
    """Tiles/s of the backend on one frame's tiles, cut once; and the tiles per frame."""
    restorer = session.restorer
    plan = restorer.plan(frame.shape[:2])
    batches = [t.array.copy() for t in input_batches(
        frame, session.manifest, plan, batch=restorer.batch, pad_batch=restorer.pad_batch,
        dtype=session.backend.input_spec.dtype)]  # fmt: skip
    list(session.backend.infer_many(iter(batches)))  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        list(session.backend.infer_many(iter(batches)))
        times.append(time.perf_counter() - t0)
    return plan.count / statistics.median(times), plan.count


def measure(artifact: Path, args: argparse.Namespace, folder: Path) -> dict:
    from restorekit.runtime.sinks import Tee, VideoFileSink
    from restorekit.runtime.sources import open_source

    clip = folder / "static.avi"
    if not clip.exists():
        static_scene_clip(clip, args.size, args.frames)
    model = artifact.name.split(".fp32.")[0]
    row: dict = {"model": model}
    with open_artifact(artifact, threads=args.threads, fallback=False) as session:
        with open_source(str(clip), every_frame=True) as source:
            first = next(iter(source.frames())).image
        tiles_per_s, tiles = backend_alone(session, first, args.runs)
        row.update(tiles=tiles, tiles_per_s=tiles_per_s, backend_fps=tiles_per_s / tiles)
        recorder = _Recorder()
        sink = Tee([VideoFileSink(folder / f"{model}.avi", 25.0), recorder])
        with open_source(str(clip), every_frame=True) as source:
            stats = run_stream(source, session.restore_with_report, sink)
        sink.close(ok=True)
        row.update(pipeline_fps=stats.fps_out, ratio=stats.fps_out / row["backend_fps"],
                   p50=stats.latency_ms(0.5), p95=stats.latency_ms(0.95))  # fmt: skip
        with open_source(str(clip), every_frame=True) as source:
            inputs = [f.image for f in source.frames()]
        row["flicker"] = flicker(recorder.frames) / flicker(inputs)
        if _has_gstreamer():
            w, h = args.size
            pipeline = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},"
                        f"height={h},framerate=25/1 ! videoconvert ! appsink")  # fmt: skip
            live = StreamStats(source="videotestsrc", live=True)
            with open_source(pipeline) as source:
                run_stream(source, session.restore_with_report, _Recorder(), stats=live,
                           max_frames=args.frames)  # fmt: skip
            row.update(live_read=live.frames_in, live_dropped=live.dropped,
                       live_out=live.frames_out, live_p50=live.latency_ms(0.5),
                       live_p95=live.latency_ms(0.95))  # fmt: skip
    return row


def _has_gstreamer() -> bool:
    from restorekit.runtime.gstreamer import opencv_has_gstreamer

    return opencv_has_gstreamer()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="+", type=Path, help="FP32 .onnx files (see above)")
    p.add_argument("--frames", type=int, default=12, help="frames per stream (default 12)")
    p.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of the backend alone")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    args.size = (w, h)
    rows = []
    with tempfile.TemporaryDirectory(prefix="restorekit-live-") as tmp:
        for artifact in args.artifacts:
            rows.append(measure(artifact, args, Path(tmp)))
            print(rows[-1], flush=True)
    print()
    print("| model | tiles/frame | backend fps | pipeline fps | ratio | latency p50 / p95 ms | "
          "flicker out/in | live: read / dropped / written | live p50 / p95 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        live = (f"{r['live_read']} / {r['live_dropped']} / {r['live_out']}" if "live_read" in r
                else "not run (no GStreamer in this OpenCV)")  # fmt: skip
        live_lat = f"{r['live_p50']:.0f} / {r['live_p95']:.0f}" if "live_p50" in r else "-"
        print(
            f"| {r['model']} | {r['tiles']} | {r['backend_fps']:.3f} | {r['pipeline_fps']:.3f} | "
            f"{r['ratio']:.2f} | {r['p50']:.0f} / {r['p95']:.0f} | {r['flicker']:.2f} | {live} "
            f"| {live_lat} |"
        )


if __name__ == "__main__":
    main()

"""Relay a live stream through a model: frames in from one GStreamer pipeline, restored frames out
to another (here an H.264 RTP stream), with restorekit's live source and sink.

    python examples/stream_relay.py MODEL.onnx \\
        "rtspsrc location=rtsp://camera/stream latency=0 ! decodebin ! videoconvert ! appsink" \\
        "appsrc ! videoconvert ! x264enc tune=zerolatency ! rtph264pay ! udpsink host=10.0.0.2 port=5600"

The source keeps only its newest frame, so a model slower than the camera drops frames (counted)
instead of falling behind. Needs OpenCV built with GStreamer and GStreamer's Python bindings (on a
Jetson: JetPack's, from a venv made with --system-site-packages).
"""

from __future__ import annotations

import argparse

import restorekit
from restorekit.runtime.sinks import GStreamerSink
from restorekit.runtime.sources import open_source


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an .onnx or .engine")
    p.add_argument("source", help="a GStreamer pipeline ending in appsink (or a camera, a URL)")
    p.add_argument("sink", help="a GStreamer pipeline starting with appsrc")
    p.add_argument("--frames", type=int, help="stop after this many frames")
    args = p.parse_args()

    with (
        restorekit.open(args.model) as model,
        open_source(args.source) as source,
        GStreamerSink(args.sink, fps=source.fps) as sink,
    ):
        frames = (frame.image for frame in source.frames())
        for count, restored in enumerate(model.stream(frames), start=1):
            sink.write(restored)
            if args.frames and count >= args.frames:
                break
    print(f"{sink.frames} frames relayed; the source read {source.read}, dropped {source.dropped}")


if __name__ == "__main__":
    main()

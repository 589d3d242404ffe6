"""Restore a camera (or any video source OpenCV opens) frame by frame from your own loop.

    python examples/camera_loop.py MODEL.onnx                       # camera 0, in a window
    python examples/camera_loop.py MODEL.onnx --source clip.mp4 --output restored.mp4
    python examples/camera_loop.py MODEL.engine --source "nvarguscamerasrc ! nvvidconv ! \\
        video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink"

``model.stream`` restores the next frame while this loop shows or writes the current one, and
asks the camera for a frame only when the model is free. Press Esc in the window to stop.
"""

from __future__ import annotations

import argparse

import cv2

import restorekit


def camera_frames(capture: cv2.VideoCapture, limit: int | None):
    """BGR frames until the source ends (or ``limit`` frames)."""
    count = 0
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok:
            return
        count += 1
        yield frame


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an .onnx or .engine written by restore-export / restore-build")
    p.add_argument("--source", default="0", help="camera index, video file or GStreamer pipeline")
    p.add_argument("--frames", type=int, help="stop after this many frames")
    p.add_argument("--output", help="write the restored video here (.mp4/.avi) instead of showing")
    args = p.parse_args()

    source = int(args.source) if args.source.isdigit() else args.source
    backend = cv2.CAP_GSTREAMER if "!" in args.source else cv2.CAP_ANY
    capture = cv2.VideoCapture(source, backend)
    if not capture.isOpened():
        raise SystemExit(f"cannot open {args.source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    with restorekit.open(args.model) as model:
        for restored in model.stream(camera_frames(capture, args.frames), bgr=True):
            if args.output:
                if writer is None:
                    h, w = restored.shape[:2]
                    writer = cv2.VideoWriter(
                        args.output, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h)
                    )
                writer.write(restored)
            else:
                cv2.imshow("restored", restored)
                if cv2.waitKey(1) == 27:  # Esc
                    break
    capture.release()
    if writer is not None:
        writer.release()


if __name__ == "__main__":
    main()

"""Run an ONNX graph with ONNX Runtime on the CPU and score its outputs against a reference.

Torch-free: FP16 planning, INT8 calibration and the checks of deployed artifacts use it on machines
without PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from restorekit.manifest import INPUT_NAME
from restorekit.metrics import Agreement, agreement
from restorekit.runtime.ort_backend import OrtOptions, ort_session


class OrtSession:
    """A CPU ONNX Runtime session over an in-memory or on-disk graph, for checks: runs a batch of
    the graph's image input and returns its first output."""

    def __init__(self, model: bytes | str | Path, threads: int | None = None) -> None:
        self._session = ort_session(model, OrtOptions(threads=threads, quiet=True))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {INPUT_NAME: batch})[0]


def compare_batches(
    outputs: np.ndarray, references: np.ndarray, names: Sequence[str], value_range: float
) -> list[Agreement]:
    """Per-image figures of (N, C, H, W) outputs against references, normalised to [0, 1]."""
    scale = np.float32(1.0 / value_range)
    return [
        agreement(o * scale, r * scale, data_range=1.0, channel_axis=0)
        for o, r in zip(outputs, references, strict=True)
    ]


def worst_of(figures: Sequence[Agreement]) -> Agreement:
    """The worst of several figures: largest error, lowest PSNR/SSIM, all NaN/Inf counted."""
    return Agreement(
        max_abs=max(f.max_abs for f in figures),
        psnr=min(f.psnr for f in figures),
        ssim=min(f.ssim for f in figures),
        nonfinite=sum(f.nonfinite for f in figures),
    )


def score_graph(
    model: bytes | str | Path, tiles: np.ndarray, reference: np.ndarray, value_range: float
) -> Agreement:
    """Run ``model`` on each tile (batch 1) and return the worst agreement with ``reference``."""
    session = OrtSession(model)
    outputs = np.concatenate([session.run(tiles[i : i + 1]) for i in range(len(tiles))])
    return worst_of(compare_batches(outputs, reference, [""] * len(tiles), value_range))

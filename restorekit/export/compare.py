"""Run an ONNX graph with ONNX Runtime on the CPU and score its outputs against a reference.

Torch-free: FP16 planning, INT8 calibration and the checks of deployed artifacts use it on machines
without PyTorch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

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


class RememberingSession(OrtSession):
    """An :class:`OrtSession` that runs each distinct input batch once and hands the same output
    back when asked again.

    A candidate graph of the FP16 plan or the INT8 search is scored on the verification images at
    batch 1; when it becomes the artifact, its verification asks for exactly those runs again.
    ONNX Runtime's CPU kernels are deterministic for one session, so the remembered output is the
    output a second run would give (tests/export/test_sessions.py checks it bit for bit).
    """

    def __init__(
        self,
        model: bytes | str | Path,
        threads: int | None = None,
        outputs: dict[tuple, np.ndarray] | None = None,
    ) -> None:
        super().__init__(model, threads)
        self._outputs = {} if outputs is None else outputs

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        key = (batch.shape, batch.dtype.str, hashlib.sha256(batch.data).digest())
        if key not in self._outputs:
            self._outputs[key] = super().run(batch)
        return self._outputs[key]


class SessionPool:
    """One :class:`RememberingSession` per distinct graph, for the graphs one export scores.

    Graphs are told apart by the sha256 of their serialized bytes, so a graph built twice (the FP16
    plan's final graph is its last accepted trial) is loaded once. Only the ``keep`` most recently
    used sessions are held, since each holds its weights and ONNX Runtime's activation arena; the
    remembered outputs of every graph are kept (a few tiles each), so a graph whose session was
    let go and is asked for again is loaded again but not run again on the same inputs.
    """

    def __init__(self, keep: int = 2, threads: int | None = None) -> None:
        self._keep = keep
        self._threads = threads
        self._sessions: OrderedDict[str, RememberingSession] = OrderedDict()
        self._outputs: dict[str, dict[tuple, np.ndarray]] = {}
        self.loads = 0  # sessions created (tests and benchmarks read it)

    def session(self, model: onnx.ModelProto | bytes) -> RememberingSession:
        """The session for ``model``, created on first use."""
        data = model if isinstance(model, bytes) else model.SerializeToString()
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._sessions:
            self._sessions.move_to_end(digest)
            return self._sessions[digest]
        while len(self._sessions) >= self._keep:
            self._sessions.popitem(last=False)
        self.loads += 1
        outputs = self._outputs.setdefault(digest, {})
        session = self._sessions[digest] = RememberingSession(data, self._threads, outputs)
        return session


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
    model: bytes | str | Path | OrtSession,
    tiles: np.ndarray,
    reference: np.ndarray,
    value_range: float,
) -> Agreement:
    """Run ``model`` (a graph or an open session) on each tile (batch 1) and return the worst
    agreement with ``reference``."""
    session = model if isinstance(model, OrtSession) else OrtSession(model)
    outputs = np.concatenate([session.run(tiles[i : i + 1]) for i in range(len(tiles))])
    return worst_of(compare_batches(outputs, reference, [""] * len(tiles), value_range))

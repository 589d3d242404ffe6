"""Whether the ONNX Runtime CPU INT8 graph is faster than the FP32 one, on this machine.

``--int8 --int8-layout ort-cpu`` exists for speed on a CPU, and whether it pays off depends on the
network and the CPU: on the project's earlier 2-core test machine the demo MPRNet's integer graph
took about half the FP32 time, while the demo GRL's was slower than FP32 (its attention stays
float, and the conversions around it cost more than the integer products save; figures:
benchmarks/README.md). So the export times both graphs on one real tile and says which one to
deploy on this CPU (docs/precision.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from restorekit.export.compare import OrtSession

SPEED_RUNS = 3
# Below this ratio of INT8 to FP32 latency the integer graph is worth deploying on this CPU.
WORTH_IT = 0.9


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls of ``fn``, after one warm-up call."""
    return alternating_medians([fn], runs)[0]


def alternating_medians(fns: Sequence[Callable[[], object]], runs: int) -> list[float]:
    """Median wall time of each of ``fns`` over ``runs`` rounds, one call of each per round.

    Alternating puts each function under the same load on a shared machine. Each gets one
    warm-up call first (ONNX Runtime allocates its buffers on the first run).
    """
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


@dataclass(frozen=True)
class CpuSpeed:
    """Median latency of the FP32 and the INT8 graph at batch 1 in ONNX Runtime on this CPU."""

    fp32_seconds: float
    int8_seconds: float
    runs: int
    tile: tuple[int, int]

    @property
    def ratio(self) -> float:
        return self.int8_seconds / self.fp32_seconds

    @property
    def worth_it(self) -> bool:
        return self.ratio < WORTH_IT

    def to_dict(self) -> dict[str, object]:
        return {"fp32_ms": round(self.fp32_seconds * 1e3, 3),
                "int8_ms": round(self.int8_seconds * 1e3, 3), "ratio": round(self.ratio, 4),
                "runs": self.runs, "tile": list(self.tile), "worth_it": self.worth_it}  # fmt: skip

    def lines(self, fp32_name: str, int8_name: str) -> list[str]:
        h, w = self.tile
        lines = [
            f"speed on this CPU (ONNX Runtime, one {h}x{w} tile, median of {self.runs}): "
            f"FP32 {self.fp32_seconds * 1e3:.1f} ms, INT8 {self.int8_seconds * 1e3:.1f} ms "
            f"= {self.ratio:.2f}x FP32"
        ]
        if not self.worth_it:
            slower = "slower than" if self.ratio >= 1 else "barely faster than"
            lines.append(
                f"warning: the INT8 CPU graph is {slower} FP32 on this CPU; deploy {fp32_name} "
                f"on this machine (ONNX Runtime's integer kernels do not pay off for this "
                f"network here). {int8_name} may still pay off on a CPU with faster integer "
                "kernels: run restore-export there."
            )
        return lines


def cpu_speed(fp32: bytes, int8: bytes, tile_batch: np.ndarray, runs: int = SPEED_RUNS) -> CpuSpeed:
    """Time both graphs alternately on ``tile_batch`` (1, C, H, W) with ONNX Runtime's defaults."""
    sessions = [OrtSession(fp32), OrtSession(int8)]
    fp32_s, int8_s = alternating_medians([lambda s=s: s.run(tile_batch) for s in sessions], runs)
    return CpuSpeed(fp32_s, int8_s, runs, (int(tile_batch.shape[2]), int(tile_batch.shape[3])))

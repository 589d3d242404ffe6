"""Wall time of each export stage, for the report and the summary ``restore-export`` prints.

The pipeline reports its stages through one callback (``on_stage``); :class:`StageTimer` sits in
front of it, so the times are taken where the stages are announced and nowhere else. Sub-steps
(``fp16: trying Softmax in FP16``) are charged to the stage they belong to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


class StageTimer:
    """Forwards stage names to ``on_stage`` and records when each top-level stage began.

    Args:
        stages: the top-level stage names (others are sub-steps of the current stage).
        on_stage: the caller's callback, or ``None``.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        stages: tuple[str, ...],
        on_stage: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._stages = set(stages)
        self._forward = on_stage or (lambda _name: None)
        self._clock = clock
        self._start = clock()
        self._marks: list[tuple[str, float]] = []

    def __call__(self, name: str) -> None:
        if name in self._stages:
            self._marks.append((name, self._clock()))
        self._forward(name)

    def seconds(self) -> dict[str, float]:
        """Seconds per stage so far (the current one up to now), then ``total``, rounded to 0.1 s.

        A stage announced twice (not done today) adds up.
        """
        now = self._clock()
        out: dict[str, float] = {}
        ends = [t for _, t in self._marks[1:]] + [now]
        for (name, begin), end in zip(self._marks, ends[: len(self._marks)], strict=True):
            out[name] = out.get(name, 0.0) + end - begin
        out = {k: round(v, 1) for k, v in out.items()}
        out["total"] = round(now - self._start, 1)
        return out

    def line(self) -> str:
        """:func:`stage_line` of the times so far."""
        return stage_line(self.seconds())


def stage_line(seconds: Mapping[str, float]) -> str:
    """One line for the terminal: ``time: build 0.1 s, trace 151.2 s, ..., total 4.8 min``."""
    return "time: " + ", ".join(f"{k} {_fmt(v)}" for k, v in seconds.items())


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

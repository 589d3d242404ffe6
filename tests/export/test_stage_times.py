"""Stage wall times: taken where the pipeline announces its stages, sub-steps charged to theirs."""

from __future__ import annotations

from restorekit.export.stage_times import StageTimer


def test_each_stage_runs_until_the_next_and_sub_steps_count_for_their_stage():
    now = [10.0]
    seen: list[str] = []
    timer = StageTimer(("build", "trace", "lower"), seen.append, clock=lambda: now[0])
    for name, later in (("build", 1.0), ("trace", 30.0), ("lower", 2.0),
                        ("fp16: trying Softmax in FP16", 5.0), ("fp16: trying Erf in FP16", 7.0)):  # fmt: skip
        timer(name)
        now[0] += later
    assert seen == ["build", "trace", "lower", "fp16: trying Softmax in FP16",
                    "fp16: trying Erf in FP16"]  # fmt: skip
    assert timer.seconds() == {"build": 1.0, "trace": 30.0, "lower": 14.0, "total": 45.0}
    assert timer.line() == "time: build 1.0 s, trace 30.0 s, lower 14.0 s, total 45.0 s"


def test_without_a_callback_and_before_any_stage():
    now = [0.0]
    timer = StageTimer(("build",), None, clock=lambda: now[0])
    now[0] = 200.0
    assert timer.seconds() == {"total": 200.0} and timer.line() == "time: total 3.3 min"

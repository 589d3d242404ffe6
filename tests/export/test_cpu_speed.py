"""The INT8 CPU layout's speed check: alternating medians on a controlled clock, the verdict, and
two real graphs whose work differs twentyfold."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from restorekit.export import cpu_speed as speed_module
from restorekit.export.cpu_speed import CpuSpeed, alternating_medians, cpu_speed


class FakeClock:
    """perf_counter that only moves when a timed function says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_alternating_medians_warms_up_then_alternates(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(speed_module.time, "perf_counter", clock)
    calls: list[str] = []
    durations = {"a": iter([9.0, 1.0, 5.0, 3.0]), "b": iter([7.0, 2.0, 2.0, 8.0])}

    def timed(name):
        def fn():
            calls.append(name)
            clock.now += next(durations[name])

        return fn

    medians = alternating_medians([timed("a"), timed("b")], runs=3)
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]  # warm-ups, then one of each a round
    assert medians == [3.0, 2.0]  # medians of (1, 5, 3) and (2, 2, 8); warm-ups not counted


@pytest.mark.parametrize(
    ("int8_ms", "warning"),
    [(50.0, None), (95.0, "barely faster than"), (122.0, "slower than")],
)
def test_verdict_names_the_graph_to_deploy(int8_ms, warning):
    speed = CpuSpeed(0.100, int8_ms / 1e3, runs=3, tile=(256, 256))
    assert speed.ratio == pytest.approx(int8_ms / 100.0)
    lines = speed.lines("m.fp32.256x256.onnx", "m.int8cpu.256x256.onnx")
    assert "FP32 100.0 ms" in lines[0] and f"INT8 {int8_ms:.1f} ms" in lines[0]
    assert speed.worth_it == (warning is None)
    if warning is None:
        assert len(lines) == 1
    else:
        assert warning in lines[1] and "deploy m.fp32.256x256.onnx" in lines[1]
    record = speed.to_dict()
    assert record["worth_it"] == speed.worth_it and record["tile"] == [256, 256]


def _conv_stack(depth: int) -> bytes:
    rng = np.random.default_rng(depth)
    nodes, inits, x = [], [], "input"
    for i in range(depth):
        w = (rng.standard_normal((16, 16, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        x = f"c{i}"
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    shape = [1, 16, 96, 96]
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def test_cpu_speed_times_the_two_graphs_it_is_given():
    """Real sessions: a 1-conv graph as "FP32" and a 20-conv one as "INT8" must come out slower."""
    x = np.random.default_rng(0).random((1, 16, 96, 96), dtype=np.float32)
    speed = cpu_speed(_conv_stack(1), _conv_stack(20), x, runs=3)
    assert speed.tile == (96, 96) and speed.runs == 3
    assert 0 < speed.fp32_seconds < speed.int8_seconds
    assert speed.ratio > 2 and not speed.worth_it
    swapped = cpu_speed(_conv_stack(20), _conv_stack(1), x, runs=3)
    assert swapped.ratio < 0.5 and swapped.worth_it

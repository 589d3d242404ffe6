"""Activation ranges computed inside the graph, checked against the tensors themselves (exposed whole
and reduced with numpy)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from restorekit.calibration.ranges import (
    activation_ranges,
    measured_and_derived,
    session_exposing,
)


def _graph(nodes, inits, shape=(1, 2, 4, 4)):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return onnx.shape_inference.infer_shapes(model)


def _chain():
    """Scale, reshape, softmax, ReLU, concat with a constant, subtract: measured and derived."""
    nodes = [
        helper.make_node("Mul", ["input", "k"], ["a"], name="scale"),
        helper.make_node("Reshape", ["a", "shape"], ["b"], name="flat"),
        helper.make_node("Softmax", ["b"], ["p"], name="softmax", axis=-1),
        helper.make_node("Sub", ["b", "shift"], ["c"], name="shift"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Concat", ["r", "p", "const"], ["cat"], name="cat", axis=-1),
        helper.make_node("Mul", ["cat", "k"], ["output"], name="out"),
    ]
    inits = {"k": -7.0, "shift": 3.0, "const": np.full((1, 2, 16), 50.0)}
    model = _graph(nodes, inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 16], np.int64), "shape"))
    return model


def _exact(model, names, x):
    session = session_exposing(model, names, None)
    return {n: v for n, v in zip(names, session.run(names, {"input": x}), strict=True)}


def test_measured_ranges_equal_the_tensors_and_derived_ones_bound_them():
    model = _chain()
    measured, derived = measured_and_derived(model)
    assert set(measured) == {"a", "c", "output"}
    assert set(derived) == {"b", "p", "r", "cat"}
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 2, 4, 4)).astype(np.float32) for _ in range(3)]
    ranges = activation_ranges(model, xs)
    names = measured + list(derived)
    exact = [_exact(model, names, x) for x in xs]
    for name in names:
        truth = max(float(np.abs(e[name]).max()) for e in exact)
        got = ranges[name].max_abs
        if name in measured:
            assert np.isclose(got, truth, rtol=1e-6), name
        else:
            assert got >= truth * (1 - 1e-6), name
        assert ranges[name].nonfinite == 0
    assert ranges["p"].max_abs == 1.0  # softmax: fixed bound, not measured
    assert ranges["cat"].max_abs >= 50.0  # the constant concatenated in counts


def test_nonfinite_values_are_counted_exactly():
    """Log of a tensor with zeros gives -inf; the count comes from the tensor itself."""
    nodes = [
        helper.make_node("Relu", ["input"], ["r"], name="relu"),
        helper.make_node("Log", ["r"], ["l"], name="log"),
        helper.make_node("Transpose", ["l"], ["output"], name="t", perm=[0, 1, 3, 2]),
    ]
    model = _graph(nodes, {})
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 2, 4, 4)
    ranges = activation_ranges(model, [x, x])
    zeros_per_tile = int(np.count_nonzero(x <= 0))
    assert ranges["l"].nonfinite == 2 * zeros_per_tile
    finite = np.log(x[x > 0])
    assert np.isclose(ranges["l"].max_abs, np.abs(finite).max(), rtol=1e-6)
    assert ranges["output"].nonfinite == ranges["l"].nonfinite  # derived through the transpose
    assert ranges["r"].nonfinite == 0


def test_min_max_of_every_tensor_equals_the_tensors():
    from restorekit.calibration.ranges import activation_sizes, tensor_min_max

    model = _chain()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 2, 4, 4)).astype(np.float32) for _ in range(3)]
    got = tensor_min_max(model, xs)
    names = list(activation_sizes(model))
    assert set(got) == set(names) | {"input"}
    exact = [_exact(model, names, x) for x in xs]
    for name in names:
        lo = min(float(e[name].min()) for e in exact)
        hi = max(float(e[name].max()) for e in exact)
        assert np.isclose(got[name][0], lo, rtol=1e-6) and np.isclose(got[name][1], hi, rtol=1e-6)
    assert got["input"] == (min(float(x.min()) for x in xs), max(float(x.max()) for x in xs))

"""The INT8 lowering's calibration fallback: when the layout's default method (entropy for the
TensorRT layout) clips what the output needs, min-max ranges are tried before the export fails.

The graph is a chain of 1x1 identity convolutions with ReLU, so its exact output is its input
(the expected values need no code under test). The tiles are dark with a few white pixels: the
entropy threshold sits near the dark values and clips every white pixel at every layer, which no
exclusion of a quarter of the layers can undo; min-max keeps the whole range at every layer.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from restorekit.calibration.cache import ALGORITHMS
from restorekit.calibration.feeds import CalibrationSet
from restorekit.manifest import INPUT_NAME, OUTPUT_NAME
from restorekit.metrics import psnr

pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("torch")  # the export package (its verification) imports it

from restorekit.export.lower_precision import FALLBACK_METHOD, int8_from_fp32  # noqa: E402
from restorekit.export.verify import ReferenceSet  # noqa: E402

LAYERS = 6
TARGET_DB = 35.0


def identity_chain(layers: int = LAYERS, channels: int = 3) -> onnx.ModelProto:
    nodes, inits, x = [], [], INPUT_NAME
    eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    for i in range(layers):
        inits += [numpy_helper.from_array(eye, f"w{i}"),
                  numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]  # fmt: skip
        y = OUTPUT_NAME if i == layers - 1 else f"r{i}"
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [y], name=f"relu{i}")]  # fmt: skip
        x = y
    shape = ["n", channels, "h", "w"]
    graph = helper.make_graph(
        nodes, "identity_chain",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, shape)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def dark_tiles_with_white_points(count: int, seed: int, first_dark: bool = False) -> np.ndarray:
    """Dark noise with six white points per tile (the PSNR figure is the worst tile's).

    ``first_dark``: the first tile has none. ONNX Runtime's entropy histogram is laid over the
    first tile's range and widened in bins of the same width for later tiles, so only then does
    it hold candidate ranges narrower than the whole (as with real photos, whose first tile rarely
    holds the extremes).
    """
    rng = np.random.default_rng(seed)
    tiles = rng.uniform(0.0, 0.05, (count, 3, 32, 32)).astype(np.float32)
    for t in tiles[1:] if first_dark else tiles:
        ys, xs = rng.integers(0, 32, 6), rng.integers(0, 32, 6)
        t[:, ys, xs] = 1.0
    return tiles


def lower(method: str | None, messages: list[str]):
    tiles = dark_tiles_with_white_points(8, seed=0, first_dark=True)
    calibration = CalibrationSet(tiles, "test", "synthetic", images=8)
    inputs = dark_tiles_with_white_points(3, seed=1)
    refs = ReferenceSet(("a", "b", "c"), inputs, inputs.copy())  # the chain's exact output
    lowered = int8_from_fp32(identity_chain(), calibration, refs, 1.0, TARGET_DB, method, 0.25,
                             "10.0", messages.append)  # fmt: skip
    return lowered, inputs


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


def test_entropy_alone_misses_the_target_on_this_graph():
    lowered, inputs = lower("entropy", [])
    assert lowered.details["target_met"] is False
    assert [t["method"] for t in lowered.details["calibration_tries"]] == ["entropy"]
    assert psnr(run(lowered.model, inputs), inputs) < TARGET_DB


def test_default_method_falls_back_to_min_max_and_meets_the_target():
    messages: list[str] = []
    lowered, inputs = lower(None, messages)
    tries = lowered.details["calibration_tries"]
    assert [t["method"] for t in tries] == ["entropy", FALLBACK_METHOD]
    assert [t["target_met"] for t in tries] == [False, True]
    assert lowered.details["target_met"] is True
    assert lowered.calibration.method == FALLBACK_METHOD  # the manifest names the ranges used
    assert lowered.cache is not None and lowered.cache.algorithm == ALGORITHMS[FALLBACK_METHOD]
    assert any("trying minmax ranges" in m for m in messages)
    # judged independently of the search's own figures: the written graph against the exact output
    assert psnr(run(lowered.model, inputs), inputs) >= TARGET_DB


def test_a_named_method_is_kept_even_when_it_misses():
    lowered, _ = lower("percentile", [])
    assert [t["method"] for t in lowered.details["calibration_tries"]] == ["percentile"]

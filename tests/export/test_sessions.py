"""The export's session pool: a graph scored while lowering is verified from the same session, and
a remembered output is the output a fresh run gives (no PyTorch)."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from restorekit.export import compare
from restorekit.export.compare import OrtSession, RememberingSession, SessionPool
from tests.toy_graphs import run_graph, toy_model


def _conv_graph(seed: int, channels: int = 16):
    """input (1, 3, 4, 4) -> Conv 3->C -> Relu -> Conv C->3: enough arithmetic for MLAS's
    blocked kernels and both threads."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, channels, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["h"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["output"], pads=[1, 1, 1, 1], name="c2"),
    ]
    model = toy_model(nodes, [w1, w2])
    # a free batch and a larger image than toy_model's 4x4
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_value, dims[3].dim_value = "n", 48, 48
    return model


def _tiles(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 48, 48), dtype=np.float32)


def test_a_remembered_output_is_what_a_fresh_run_gives(monkeypatch):
    model = _conv_graph(0)
    tiles = _tiles(3)
    calls = []
    real_run = OrtSession.run
    monkeypatch.setattr(
        OrtSession, "run", lambda self, b: calls.append(b.shape) or real_run(self, b)
    )
    session = RememberingSession(model.SerializeToString())
    first = [session.run(tiles[i : i + 1]) for i in range(3)]
    again = [session.run(tiles[i : i + 1].copy()) for i in range(3)]  # equal content, new arrays
    assert len(calls) == 3  # the second round ran nothing
    for i in range(3):
        independent = run_graph(model, tiles[i : i + 1])  # a new ONNX Runtime session
        assert np.array_equal(first[i], independent), np.abs(first[i] - independent).max()
        assert again[i] is first[i]
    # a batch is another input: it is run, not assembled from the remembered tiles
    batch = session.run(tiles)
    assert len(calls) == 4 and np.allclose(batch, np.concatenate(first), atol=1e-4)


def test_pool_loads_each_graph_once_and_keeps_outputs_past_eviction(monkeypatch):
    loads = []
    real_init = compare.OrtSession.__init__

    def counting_init(self, model, threads=None):
        loads.append(len(model))
        real_init(self, model, threads)

    monkeypatch.setattr(compare.OrtSession, "__init__", counting_init)
    pool = SessionPool(keep=1)
    tile = _tiles(1)
    a, b = _conv_graph(0), _conv_graph(1)
    first = pool.session(a).run(tile)
    assert pool.session(_conv_graph(0)) is pool.session(a)  # same bytes, built twice: one session
    assert pool.loads == 1 and len(loads) == 1
    other = pool.session(b).run(tile)  # keep=1: a's session is let go
    assert pool.loads == 2 and not np.array_equal(first, other)
    runs = []
    real_run = OrtSession.run
    monkeypatch.setattr(OrtSession, "run", lambda self, x: runs.append(1) or real_run(self, x))
    again = pool.session(a)  # loaded again ...
    assert pool.loads == 3
    assert again.run(tile) is first and not runs  # ... but its remembered output is served
    assert np.array_equal(first, run_graph(a, tile))

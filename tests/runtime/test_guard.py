"""The numeric guard: a tile whose FP16/INT8 output is NaN/Inf (or far outside the value range)
is computed again on an FP32 fallback and replaced, and only that tile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import restorekit
from restorekit.errors import InputError
from restorekit.manifest import PrecisionPlan, write_manifest
from restorekit.runtime.ort_backend import OrtBackend
from restorekit.runtime.restore import Restorer
from restorekit.runtime.tiling import TileGuard
from tests.runtime import tinynet

MARGIN = 8  # the runtime's reflected context: overlap 16 // 2


def _poisoned(folder, net, manifest):
    """tinynet + 0 * sqrt(0.999 - x): the same numbers, except NaN where a pixel is white."""
    model = tinynet.onnx_model(net, manifest.tile, 1)
    for node in model.graph.node:
        for k, name in enumerate(node.output):
            if name == "output":
                node.output[k] = "clean"
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(0.999, np.float32), "almost_white"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ])  # fmt: skip
    model.graph.node.extend([
        helper.make_node("Sub", ["almost_white", "input"], ["headroom"]),
        helper.make_node("Sqrt", ["headroom"], ["root"]),  # NaN where input > 0.999
        helper.make_node("Mul", ["root", "zero"], ["poison"]),
        helper.make_node("Add", ["clean", "poison"], ["output"]),
    ])  # fmt: skip
    path = folder / "poisoned.fp16.onnx"
    onnx.save(model, str(path))
    write_manifest(path, manifest)
    return path


def test_fallback_repairs_exactly_the_poisoned_tile(tmp_path):
    fp32, net, manifest = tinynet.export_net(tmp_path, batch=1, name="tiny.fp32")
    primary = _poisoned(tmp_path, net, manifest)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 250, size=(50, 90, 3), dtype=np.uint8)
    image[20, 45] = 255  # one white pixel, inside exactly one tile (rows 8..40, columns 40..72
    # of the canvas: tile (0, 2) reaches x 16..48 when margins are counted; see the plan below)
    with OrtBackend(primary) as backend, OrtBackend(fp32) as fallback:
        plain = Restorer(backend, manifest).restore(image)
        guarded = Restorer(backend, manifest, fallback=fallback).restore(image)
        plan = Restorer(backend, manifest).plan(image.shape[:2])
    covering = [
        (y0 - plan.y.margin, x0 - plan.x.margin)
        for y0, x0 in plan.positions()
        if y0 - plan.y.margin <= 20 < y0 - plan.y.margin + 32
        and x0 - plan.x.margin <= 45 < x0 - plan.x.margin + 48
    ]
    # Without a fallback the tiles reached by the white pixel are reported (and written as 0).
    assert sorted((t.y, t.x) for t in plain.nonfinite) == sorted(covering)
    # With it, exactly those tiles are computed again, nothing stays bad, and the image is the
    # network's own result everywhere (computed here in numpy).
    assert sorted((t.y, t.x) for t in guarded.repaired) == sorted(covering)
    assert not guarded.nonfinite
    want = tinynet.untiled(net, image.transpose(2, 0, 1).astype(np.float64) / 255, MARGIN)
    want = np.clip(want.transpose(1, 2, 0), 0, 1) * 255
    assert np.abs(guarded.image - want).max() <= 0.5 + 1e-3
    assert np.abs(plain.image.astype(int) - guarded.image).max() > 0  # the repair changed pixels


def test_open_finds_the_fp32_graph_beside_a_reduced_precision_one(tmp_path):
    # named as restore-export names them: <model>.<precision>.<tile>.onnx
    fp32, net, manifest = tinynet.export_net(tmp_path, batch=1, name="tiny.test.fp32.32x48")
    primary = _poisoned(tmp_path, net, manifest.replace(precision=PrecisionPlan("fp16")))
    image = np.full((30, 40, 3), 200, np.uint8)
    image[10, 10] = 255
    with restorekit.open(primary) as model:
        assert model.fallback_path == fp32
        report = model.restore_with_report(image)
    assert report.repaired and not report.nonfinite
    with restorekit.open(primary, fallback=False) as model:
        assert model.fallback_path is None
        assert model.restore_with_report(image).nonfinite
    with pytest.raises(InputError, match="must be an FP32 artifact"):
        restorekit.open(primary, fallback=primary)


def test_guard_limits_follow_the_value_range():
    guard = TileGuard.for_range(lambda tile: tile, value_range=255.0)
    values = np.array([-128.0, -127.0, 0.0, 255.0, 382.0, 383.0, np.nan, np.inf])
    assert guard.bad(values).tolist() == [True, False, False, False, False, True, True, True]

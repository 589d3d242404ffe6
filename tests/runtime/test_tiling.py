"""Tiled inference equals the untiled pass for a network whose receptive field fits the overlap.

The reference is computed independently: the network in numpy on the whole image, reflect-padded once by the
context margin, cropped. The tiled side is ONNX Runtime through the backend interface.
"""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.errors import InputError, TileSizeError
from restorekit.runtime.ort_backend import OrtBackend, OrtOptions
from restorekit.runtime.restore import Restorer, TileOptions
from restorekit.runtime.tiling import (
    axis_weights,
    plan_axis,
    plan_tiles,
    reflect_indices,
    run_tiled,
    tile_batches,
)
from tests.runtime import tinynet

OVERLAP = 16


def _tiled(image, plan, infer, *, batch=1, pad_batch=True, emit=None):
    """The tiler's two halves driven by a plain batch function."""
    batches = tile_batches(image, plan, batch=batch, pad_batch=pad_batch)
    return run_tiled(plan, batches, lambda arrays: (infer(a) for a in arrays), emit=emit)


def _report(got: np.ndarray, want: np.ndarray) -> str:
    err = np.abs(got - want)
    return (
        f"max {err.max():.3g}, mean {err.mean():.3g}, p99 {np.quantile(err, 0.99):.3g}, "
        f">1e-5 at {int((err > 1e-5).sum())} of {err.size} values"
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    made = {}
    for scale in (1, 2):
        for batch in (1, 3, None):
            name = f"s{scale}b{batch}"
            made[(scale, batch)] = tinynet.export_net(folder, scale=scale, batch=batch, name=name)
    return made


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("batch", [1, 3, None])
@pytest.mark.parametrize("shape", [(37, 53), (11, 13), (70, 101), (32, 48)])
def test_tiled_equals_untiled(artifacts, scale, batch, shape):
    path, net, manifest = artifacts[(scale, batch)]
    rng = np.random.default_rng(sum(shape) + scale)
    image = rng.random((*shape, 3), dtype=np.float32)
    plan = plan_tiles(shape, manifest.tile, OVERLAP, scale=scale)
    assert tinynet.RADIUS <= OVERLAP // 4 and plan.y.margin >= tinynet.RADIUS
    want = tinynet.untiled(net, image.transpose(2, 0, 1), plan.y.margin)
    with OrtBackend(path, OrtOptions(threads=1)) as backend:
        static = backend.input_spec.static_batch
        result = _tiled(image, plan, backend.infer, batch=static or 2, pad_batch=static is not None)
    assert result.output.shape == want.shape
    assert not result.nonfinite
    assert np.abs(result.output - want).max() <= 1e-5, _report(result.output, want)


def test_restorer_uint8_and_uint16_match_reference(artifacts):
    path, net, manifest = artifacts[(2, 3)]
    rng = np.random.default_rng(7)
    image8 = rng.integers(0, 256, size=(45, 67, 3), dtype=np.uint8)
    image16 = rng.integers(0, 65536, size=(45, 67, 3), dtype=np.uint16)
    with OrtBackend(path) as backend:
        restorer = Restorer(backend, manifest)
        out8 = restorer.restore(image8).image
        out16 = restorer.restore(image16).image
    margin = OVERLAP // 2
    for image, out, top in ((image8, out8, 255.0), (image16, out16, 65535.0)):
        want = tinynet.untiled(net, image.transpose(2, 0, 1).astype(np.float32) / top, margin)
        want = np.clip(want.transpose(1, 2, 0), 0, 1) * top
        assert out.dtype == image.dtype and out.shape == (90, 134, 3)
        # Rounding of a value within float error of .5 may go either way: at most 1 step.
        diff = np.abs(out.astype(np.float64) - want)
        assert diff.max() <= 0.5 + 1e-3 * top / 255, _report(out.astype(np.float64), want)


def test_gray_model_on_colour_restores_luma_keeps_chroma(tmp_path):
    import cv2

    path, net, manifest = tinynet.export_net(tmp_path, in_ch=1, out_ch=1, name="gray")
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    with OrtBackend(path) as backend:
        out = Restorer(backend, manifest).restore(image).image
    ycrcb = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2YCrCb)
    y = tinynet.untiled(net, ycrcb[None, :, :, 0], OVERLAP // 2)[0].astype(np.float32)
    want = cv2.cvtColor(np.dstack([y, ycrcb[:, :, 1:]]), cv2.COLOR_YCrCb2RGB)
    want = np.clip(want, 0, 1) * 255
    diff = np.abs(out.astype(np.float64) - want)
    assert diff.max() <= 0.5 + 1e-3, _report(out.astype(np.float64), want)
    # and the reverse: a gray image through a colour model comes back gray
    path3, _, manifest3 = tinynet.export_net(tmp_path, name="colour")
    with OrtBackend(path3) as backend:
        gray_out = Restorer(backend, manifest3).restore(image[:, :, 0]).image
    assert gray_out.shape == (40, 50) and gray_out.dtype == np.uint8


def test_value_range_255_model(tmp_path):
    path, net, manifest = tinynet.export_net(tmp_path, value_range=255.0, name="v255")
    image = np.random.default_rng(5).integers(0, 256, size=(33, 35, 3), dtype=np.uint8)
    with OrtBackend(path) as backend:
        out = Restorer(backend, manifest).restore(image).image
    want = tinynet.untiled(net, image.transpose(2, 0, 1).astype(np.float32), OVERLAP // 2)
    want = np.clip(want.transpose(1, 2, 0), 0, 255)
    diff = np.abs(out.astype(np.float64) - want)
    assert diff.max() <= 0.5 + 1e-3, _report(out.astype(np.float64), want)


def test_dynamic_graph_padded_to_multiple(tmp_path):
    path, net, manifest = tinynet.export_net(
        tmp_path, tile=None, batch=None, multiple_of=8, name="dyn"
    )
    image = np.random.default_rng(9).random((29, 45, 3), dtype=np.float32)
    with OrtBackend(path) as backend:
        restorer = Restorer(backend, manifest)
        plan = restorer.plan((29, 45))
        assert plan.tile == (32, 48) and plan.count == 1
        got = _tiled(image, plan, backend.infer, batch=1, pad_batch=False).output
    # Reference: the image reflect-padded at the bottom/right to the multiple of 8.
    padded = np.pad(image, ((0, 3), (0, 3), (0, 0)), mode="reflect").transpose(2, 0, 1)
    want = net(padded[None])[0][:, :29, :45]
    assert np.abs(got - want).max() <= 1e-5, _report(got, want)


def test_nonfinite_tiles_are_reported_with_position():
    plan = plan_tiles((40, 40), (16, 16), 4)

    def poisoned(batch):
        out = batch.copy()
        # the tile whose first pixel is image pixel (10, 22) gets a NaN
        for k in range(batch.shape[0]):
            if np.isclose(batch[k, 0, 0, 0], 10 * 1000 + 22):
                out[k, 0, 5, 5] = np.nan
        return out

    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    image = (yy * 1000 + xx)[:, :, None]
    result = _tiled(image, plan, poisoned, batch=2)
    assert [(t.y, t.x, t.count) for t in result.nonfinite] == [(10, 22, 1)]
    assert np.isfinite(result.output).all()


def test_average_blend_is_plain_mean_of_covering_tiles():
    # Identity model: any blend gives back the image; a model adding its tile index shows the mean.
    plan = plan_tiles((20, 3), (9, 9), 6, blend="average")  # one tile column
    image = np.zeros((20, 3, 1), dtype=np.float32)
    calls = iter(range(100))

    def tile_id(batch):
        return np.stack([np.full(b.shape, next(calls), np.float32) for b in batch])

    out = _tiled(image, plan, tile_id, batch=1).output[0, :, 0]
    starts = [s - plan.y.margin for s in plan.y.starts]
    for row in range(20):
        ids = [i for i, s in enumerate(starts) if s <= row < s + 9]
        assert out[row] == pytest.approx(np.mean(ids)), row


def test_reflect_indices_match_numpy_pad():
    for length in (1, 2, 5, 13):
        ref = np.pad(np.arange(length), (40, 40), mode="reflect")
        assert (reflect_indices(-40, length + 80, length) == ref).all(), length


def test_plan_axis_and_weights():
    plan = plan_axis(100, 32, 16)
    assert plan.margin == 8 and all(
        b - a == 16 for a, b in zip(plan.starts[:-1], plan.starts[1:], strict=True)
    )
    assert plan.canvas >= 100 + 16 and plan.starts[-1] - plan.margin < 100
    total = np.zeros(plan.canvas)
    for i, s in enumerate(plan.starts):
        w = axis_weights(plan, i, 1, "feather")
        total[s : s + 32] += w
        if i > 0:
            assert (w[:4] == 0).all()  # the outer quarter of the overlap is discarded
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    with pytest.raises(TileSizeError):
        plan_axis(100, 16, 16)
    with pytest.raises(TileSizeError):
        plan_tiles((100, 100), (16, 16), 9)


def test_restorer_rejects_wrong_overrides(artifacts):
    path, _, manifest = artifacts[(1, 3)]
    with OrtBackend(path) as backend:
        with pytest.raises(TileSizeError, match="32x48"):
            Restorer(backend, manifest, TileOptions(tile=(64, 64)))
        with pytest.raises(TileSizeError, match="--batch 3"):
            Restorer(backend, manifest, TileOptions(batch=2))
        with pytest.raises(InputError, match="dimension"):
            backend.infer(np.zeros((3, 3, 32, 32), np.float32))
        with pytest.raises(InputError, match="float32"):
            backend.infer(np.zeros((3, 3, 32, 48), np.float64))


@pytest.mark.parametrize("blend", ["feather", "average"])
@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("shape", [(70, 45), (9, 30), (33, 33)])
def test_streamed_rows_equal_the_whole_accumulator(blend, scale, shape):
    """With ``emit`` only one tile row is accumulated; rows arrive in order, each exactly once,
    and equal the whole-image result."""
    rng = np.random.default_rng(4)
    image = rng.random((*shape, 2), dtype=np.float32)

    def model(batch):  # any deterministic tile-dependent map, upscaled by ``scale``
        out = np.sin(3 * batch) + batch.mean(axis=(2, 3), keepdims=True)
        return out.repeat(scale, axis=2).repeat(scale, axis=3)

    plan = plan_tiles(shape, (16, 12), 6, scale=scale, blend=blend)
    whole = _tiled(image, plan, model, batch=3).output
    got = np.full_like(whole, np.nan)
    seen: list[tuple[int, int]] = []

    def emit(rows, block):
        seen.append((rows.start, rows.stop))
        got[:, rows] = block

    streamed = _tiled(image, plan, model, batch=3, emit=emit)
    assert streamed.output is None
    assert seen[0][0] == 0 and seen[-1][1] == shape[0] * scale
    assert all(a[1] == b[0] for a, b in zip(seen[:-1], seen[1:], strict=True))
    assert np.abs(got - whole).max() <= 1e-6, _report(got, whole)

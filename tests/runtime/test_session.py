"""``restorekit.open``: the entry point a user's own program calls (torch-free)."""

from __future__ import annotations

import numpy as np
import pytest

import restorekit
from restorekit.errors import InputError, NonFiniteOutputError
from restorekit.runtime.backend import BackendStateError
from tests.runtime import tinynet

MARGIN = 8  # overlap 16 // 2: the reflected context the runtime gives border pixels


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path, net, _ = tinynet.export_net(tmp_path_factory.mktemp("open"), batch=2, scale=2)
    return path, net


def _expected(net, rgb: np.ndarray) -> np.ndarray:
    out = tinynet.untiled(net, rgb.transpose(2, 0, 1).astype(np.float64) / 255, MARGIN)
    return np.clip(out.transpose(1, 2, 0), 0, 1) * 255


def test_restore_rgb_and_bgr_frames(artifact):
    path, net = artifact
    rgb = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    with restorekit.open(path) as model:
        out = model.restore(rgb)
        out_bgr = model.restore(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True)
    assert out.shape == (60, 82, 3) and out.dtype == np.uint8
    assert np.abs(out - _expected(net, rgb)).max() <= 0.5 + 1e-3
    assert np.array_equal(out_bgr, out[:, :, ::-1])  # BGR in, BGR out, same pixels


def test_gray_rgba_and_uint16_keep_their_layout(artifact):
    path, _ = artifact
    rng = np.random.default_rng(1)
    with restorekit.open(path, threads=1) as model:
        gray = model.restore(rng.integers(0, 256, (20, 21), dtype=np.uint8))
        rgba = model.restore(rng.integers(0, 256, (20, 21, 4), dtype=np.uint8), bgr=True)
        deep = model.restore(rng.integers(0, 65536, (20, 21, 3), dtype=np.uint16))
    assert gray.shape == (40, 42) and rgba.shape == (40, 42, 4) and deep.dtype == np.uint16


def test_misuse_raises_restorekit_errors_with_a_message(artifact):
    path, _ = artifact
    model = restorekit.open(path)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(BackendStateError, match="inside `with restorekit.open"):
        model.restore(image)
    with model:
        with pytest.raises(InputError, match="8- or 16-bit"):
            model.restore(image.astype(np.float32))
        with pytest.raises(InputError, match="got shape"):
            model.restore(np.zeros((8, 8, 5), np.uint8))
        with pytest.raises(InputError, match="numpy image"):
            model.restore([[0, 1], [2, 3]])
    with pytest.raises(BackendStateError):  # closed again after the block
        model.restore(image)
    with pytest.raises(InputError, match="artifact not found"):
        restorekit.open(path.with_name("missing.onnx"))


def test_nan_output_raises_with_the_tile(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path, _, _ = tinynet.export_net(tmp_path, batch=1, name="nan")
    graph = helper.make_graph(
        [helper.make_node("Sub", ["input", "half"], ["d"]), helper.make_node("Sqrt", ["d"], ["output"])],
        "sqrt_shift",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 48])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 32, 48])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))  # fmt: skip
    image = np.zeros((20, 20, 3), np.uint8)  # dark: sqrt of a negative number everywhere
    with restorekit.open(path) as model:
        with pytest.raises(NonFiniteOutputError, match="tile at y="):
            model.restore(image)
        report = model.restore_with_report(image)
    assert report.nonfinite and (report.image == 0).all()


def test_stream_yields_restored_frames_in_order_while_reading_on_demand(artifact):
    path, net = artifact
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(7)]
    pulled = []

    def camera():
        for k, frame in enumerate(frames):
            pulled.append(k)
            yield frame

    with restorekit.open(path) as model:
        singles = [model.restore(f) for f in frames]
        streamed = []
        for k, out in enumerate(model.stream(camera())):
            streamed.append(out)
            # the worker is at most a couple of frames ahead of this loop, never the whole clip
            assert len(pulled) <= k + 3
        assert len(streamed) == 7 and all(
            np.array_equal(a, b) for a, b in zip(streamed, singles, strict=True)
        )
        early = model.stream(iter(frames))
        first = next(early)
        early.close()  # stopping early stops the worker
        assert np.array_equal(first, singles[0])


def test_stream_outside_with_and_bad_frames_raise(artifact):
    path, _ = artifact
    model = restorekit.open(path)
    with pytest.raises(BackendStateError):
        next(model.stream(iter([np.zeros((8, 8, 3), np.uint8)])))
    with model:
        frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)]
        results = model.stream(iter(frames))
        assert next(results).shape == (16, 16, 3)
        with pytest.raises(InputError, match="8- or 16-bit"):
            next(results)

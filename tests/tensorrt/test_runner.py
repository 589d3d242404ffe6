"""The TensorRT engine runner on the CPU: the whole device path driven through fake ``tensorrt``
and device-memory objects that follow the documented API. The real device path is marked gpu/trt."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.errors import InputError, ManifestError
from restorekit.manifest import BatchRange, EngineRecord, write_manifest
from restorekit.runtime.restore import Restorer
from restorekit.tensorrt import cuda_memory
from restorekit.tensorrt.runner import TrtBackend
from tests.runtime import tinynet
from tests.tensorrt.fake_runtime import FakeMemory, fake_trt, manifest


def _engine_file(tmp_path, m):
    path = tmp_path / "model.engine"
    path.write_bytes(b"serialized engine")
    write_manifest(path, m)
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_trt_backend_end_to_end_with_fakes(tmp_path, dtype):
    mem = FakeMemory()
    m = manifest()
    path = _engine_file(tmp_path, m)
    backend = TrtBackend(path, m, memory=mem, trt_module=fake_trt(mem, dtype=dtype))
    assert mem.dev == {} and mem.pinned_live == 0  # nothing allocated before __enter__
    image = np.random.default_rng(1).integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
    with backend:
        assert backend.input_spec.dtype == np.dtype(dtype)  # asked from the engine
        # two slots of (input, output) device buffers, sized for the engine's batch
        assert sorted(a.size for a in mem.dev.values()) == sorted(
            [2 * 3 * 16 * 16 * np.dtype(dtype).itemsize] * 2
            + [2 * 3 * 32 * 32 * np.dtype(dtype).itemsize] * 2
        )
        restored = Restorer(backend, m).restore(image)
        with pytest.raises(InputError, match="dimension 0"):
            backend.infer(np.zeros((3, 3, 16, 16), dtype))
    assert mem.dev == {} and mem.pinned_live == 0  # all freed on exit
    # Independent expectation: the fake computes 0.5 * x upscaled 2x (nearest), an operation that
    # tiles exactly; blending of identical overlapping values leaves them unchanged.
    want = np.clip(0.5 * image.astype(np.float64) / 255, 0, 1).repeat(2, 0).repeat(2, 1) * 255
    diff = np.abs(restored.image.astype(np.float64) - want)
    tol = 0.5 + (1e-4 if dtype == np.float32 else 255 * 2**-11)
    assert diff.max() <= tol, f"max {diff.max()}, mean {diff.mean()}"
    assert restored.tiles > 2


def test_trt_backend_overlaps_next_batch_with_current(tmp_path):
    mem = FakeMemory()
    m = manifest()
    path = _engine_file(tmp_path, m)
    batches = [np.full((2, 3, 16, 16), k, np.float32) for k in range(3)]
    with TrtBackend(path, m, memory=mem, trt_module=fake_trt(mem)) as backend:
        outs = list(backend.infer_many(iter(batches)))
    for k, out in enumerate(outs):
        np.testing.assert_array_equal(out, np.full((2, 3, 32, 32), 0.5 * k, np.float32))
    ops = [op for op in mem.log if op in ("execute", "wait")]
    # batch 1 is enqueued before the host waits for batch 0
    assert ops[:3] == ["execute", "execute", "wait"], ops


def test_trt_backend_dynamic_profile_and_batch(tmp_path):
    mem = FakeMemory()
    m = manifest(tile=None, batch=BatchRange(1, 3, 8))
    path = _engine_file(tmp_path, m)
    profile = ((1, 3, 8, 8), (3, 3, 32, 32), (8, 3, 64, 64))
    trt = fake_trt(mem, shape=(-1, 3, -1, -1), profile=profile)
    with TrtBackend(path, m, memory=mem, trt_module=trt) as backend:
        # buffers for the manifest's opt batch (3) at the profile's largest tile
        assert sorted(a.size for a in mem.dev.values()) == sorted(
            [3 * 3 * 64 * 64 * 4] * 2 + [3 * 3 * 128 * 128 * 4] * 2
        )
        out = backend.infer(np.ones((2, 3, 24, 40), np.float32))
        assert out.shape == (2, 3, 48, 80) and np.all(out == 0.5)
        with pytest.raises(InputError, match="outside"):
            backend.infer(np.ones((4, 3, 24, 40), np.float32))  # more than the buffers hold
        with pytest.raises(InputError, match="outside"):
            backend.infer(np.ones((1, 3, 72, 40), np.float32))  # beyond the profile


def test_trt_backend_refuses_other_gpu_before_deserialising(tmp_path):
    mem = FakeMemory(cc="8.9")
    m = manifest()
    path = _engine_file(tmp_path, m)
    with (
        pytest.raises(ManifestError, match=r"sm_87 \(Orin\), this GPU is sm_89"),
        TrtBackend(path, m, memory=mem, trt_module=fake_trt(mem, version="10.8.0")),
    ):
        pass
    assert mem.dev == {}
    path.write_bytes(b"garbage")
    mem = FakeMemory(cc="8.7")
    with (
        pytest.raises(ManifestError, match="could not deserialise"),
        TrtBackend(path, m, memory=mem, trt_module=fake_trt(mem)),
    ):
        pass


@pytest.mark.gpu
@pytest.mark.trt
def test_real_engine_matches_onnxruntime(tmp_path):
    """Build a tiny engine on the GPU and compare it with ONNX Runtime on the same ONNX."""
    import tensorrt as trt

    from restorekit.runtime.ort_backend import OrtBackend

    onnx_path, _, m = tinynet.export_net(tmp_path, batch=2)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes())
    config = builder.create_builder_config()
    engine_path = tmp_path / "tiny.engine"
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))
    mem = cuda_memory.open_device_memory()
    record = EngineRecord(trt.__version__, mem.device_name(), mem.compute_capability())
    mem.close()
    em = m.replace(engine=record)
    write_manifest(engine_path, em)
    image = np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    with TrtBackend(engine_path, em) as backend:
        got = Restorer(backend, em).restore(image).image
    with OrtBackend(onnx_path) as backend:
        want = Restorer(backend, m).restore(image).image
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1

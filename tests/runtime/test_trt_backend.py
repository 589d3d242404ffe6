"""TensorRT backend on the CPU: manifest/version checks, buffer sizing and the whole device path
driven through fake ``tensorrt`` and device-memory objects that follow the documented API.
The real device path is marked gpu/trt."""

from __future__ import annotations

import types

import numpy as np
import pytest

from restorekit.device import DeviceFacts
from restorekit.engine_compat import check_engine_compat
from restorekit.errors import InputError, ManifestError, MissingDependencyError
from restorekit.files import file_sha256
from restorekit.manifest import (
    BatchRange,
    EngineRecord,
    Manifest,
    PrecisionPlan,
    TensorSpec,
    write_manifest,
)
from restorekit.runtime import cuda_memory
from restorekit.runtime.engine_check import EngineTensor, engine_tensors, plan_buffers
from restorekit.runtime.restore import Restorer
from restorekit.runtime.trt_backend import TrtBackend
from tests.runtime import tinynet


def manifest(tile=(16, 16), batch=None, trt="10.3.0", cc="8.7", scale=2, **engine) -> Manifest:
    return Manifest(
        model="mprnet.deblur",
        task="test",
        input=TensorSpec("input", 3),
        output=TensorSpec("output", 3),
        scale=scale,
        multiple_of=1,
        tile=tile,
        batch=batch or BatchRange(2, 2, 2),
        overlap=8,
        blend="feather",
        precision=PrecisionPlan("fp16"),
        opset=17,
        weights="random",
        engine=EngineRecord(trt, "Orin", cc, **engine),
    )


# -- compatibility ----------------------------------------------------------------------------------
def check_engine_manifest(engine_path, manifest, trt_version, cc, onnx_path=None):
    """The runtime's check, with a device of the given compute capability."""
    device = DeviceFacts("Orin" if cc == "8.7" else f"GPU sm{cc}", cc)
    return check_engine_compat(manifest, trt_version, device, engine_path, onnx_path)


def test_mismatch_names_versions_gpus_and_rebuild_command(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(ManifestError) as info:
        check_engine_manifest(engine, manifest(trt="10.3.0.30"), "10.8.0.43", "8.9")
    msg = str(info.value)
    assert msg.startswith(
        "m.engine was built for TensorRT 10.3.0.30, this device has TensorRT 10.8.0.43"
    )
    assert "sm_87 (Orin), this GPU is sm_89" in msg
    assert msg.endswith("`restore-build mprnet.deblur.fp16.16x16.onnx --batch 2`")


@pytest.mark.parametrize(
    ("built", "here", "cc_built", "cc_here", "flags", "ok"),
    [
        ("10.3.0", "10.3.0", "8.7", "8.7", {}, True),
        ("10.3.0.30", "10.3.0.26", "8.7", "8.7", {}, True),  # build number does not matter
        ("10.3.0", "10.3.1", "8.7", "8.7", {}, False),
        ("10.3.0", "10.3.0", "8.7", "8.6", {}, False),
        ("10.3.0", "10.8.0", "8.6", "8.6", {"version_compatible": True}, True),
        ("10.8.0", "10.3.0", "8.6", "8.6", {"version_compatible": True}, False),  # older runtime
        ("10.3.0", "11.0.0", "8.6", "8.6", {"version_compatible": True}, False),  # new major
        ("10.3.0", "10.3.0", "8.6", "8.9", {"hardware_compatible": True}, True),
        ("10.3.0", "10.3.0", "8.6", "7.5", {"hardware_compatible": True}, False),  # pre-Ampere
        ("10.10.0", "10.9.0", "8.6", "8.6", {}, False),  # compared as versions, not strings
    ],
)
def test_version_and_hardware_rules(tmp_path, built, here, cc_built, cc_here, flags, ok):
    m = manifest(trt=built, cc=cc_built, **flags)
    if ok:
        check_engine_manifest(tmp_path / "m.engine", m, here, cc_here)
    else:
        with pytest.raises(ManifestError, match="restore-build"):
            check_engine_manifest(tmp_path / "m.engine", m, here, cc_here)


def test_onnx_hash_mismatch_and_missing_record(tmp_path):
    onnx = tmp_path / "mprnet.deblur.fp16.16x16.onnx"
    onnx.write_bytes(b"graph v1")
    m = manifest().replace(onnx_sha256=file_sha256(onnx))
    check_engine_manifest(tmp_path / "m.engine", m, "10.3.0", "8.7")  # beside and matching
    onnx.write_bytes(b"graph v2")
    with pytest.raises(ManifestError, match="another version of mprnet.deblur.fp16.16x16.onnx"):
        check_engine_manifest(tmp_path / "m.engine", m, "10.3.0", "8.7")
    # the engine record names its source ONNX when the builder wrote one
    named = m.replace(engine=m.engine.__class__(**{**m.engine.__dict__, "onnx_file": "src.onnx"}))
    with pytest.raises(ManifestError, match="`restore-build src.onnx"):
        check_engine_manifest(tmp_path / "m.engine", named, "10.4.0", "8.7")
    with pytest.raises(ManifestError, match="no engine record"):
        check_engine_manifest(tmp_path / "m.engine", m.replace(engine=None), "10.3.0", "8.7")


# -- buffer sizing ----------------------------------------------------------------------------------
def test_plan_buffers_static_and_dynamic():
    f32, f16 = np.dtype(np.float32), np.dtype(np.float16)
    static = [
        EngineTensor("input", True, f16, (2, 3, 16, 16)),
        EngineTensor("output", False, f16, (2, 3, 32, 32)),
    ]
    plans = plan_buffers(static, None, lambda ins: {})
    assert [(p.name, p.shape, p.nbytes) for p in plans] == [
        ("input", (2, 3, 16, 16), 2 * 3 * 16 * 16 * 2),
        ("output", (2, 3, 32, 32), 2 * 3 * 32 * 32 * 2),
    ]
    with pytest.raises(ManifestError, match="exactly 2"):
        plan_buffers(static, 4, lambda ins: {})

    profile = ((1, 3, 8, 8), (4, 3, 64, 64), (16, 3, 128, 96))
    dynamic = [
        EngineTensor("input", True, f32, (-1, 3, -1, -1), profile),
        EngineTensor("output", False, f32, (-1, 3, -1, -1)),
    ]
    seen = {}

    def infer_shapes(ins):
        seen.update(ins)
        n, c, h, w = ins["input"]
        return {"output": (n, c, 2 * h, 2 * w)}

    plans = plan_buffers(dynamic, 4, infer_shapes)
    # the batch as asked, the spatial dims at the profile maximum
    assert seen == {"input": (4, 3, 128, 96)}
    assert [p.shape for p in plans] == [(4, 3, 128, 96), (4, 3, 256, 192)]
    assert plans[1].nbytes == 4 * 3 * 256 * 192 * 4
    with pytest.raises(ManifestError, match="outside the engine's profile 1..16"):
        plan_buffers(dynamic, 17, infer_shapes)
    with pytest.raises(ManifestError, match="cannot resolve"):
        plan_buffers(dynamic, 4, lambda ins: {})


# -- fakes that follow the TensorRT 10 Python API ----------------------------------------------------
class FakeMemory(cuda_memory.DeviceMemory):
    library = "fake"

    def __init__(self, cc="8.7"):
        self.cc = cc
        self.dev: dict[int, np.ndarray] = {}
        self.pinned_live = 0
        self.log: list[str] = []
        self.next = 0x1000

    def device_name(self):
        return "Fake Orin"

    def compute_capability(self):
        return self.cc

    def malloc(self, nbytes):
        self.next += 0x100000
        self.dev[self.next] = np.zeros(nbytes, np.uint8)
        return self.next

    def free(self, ptr):
        del self.dev[ptr]

    def pinned(self, shape, dtype):
        self.pinned_live += 1
        return np.zeros(shape, dtype)

    def free_pinned(self, array):
        self.pinned_live -= 1

    def create_stream(self):
        return "stream"

    def destroy_stream(self, stream):
        self.log.append("destroy_stream")

    def stream_handle(self, stream):
        return 0xABC

    def synchronize(self, stream):
        pass

    def copy_to_device(self, dst, src, stream):
        assert src.flags.c_contiguous
        raw = src.reshape(-1).view(np.uint8)
        assert raw.size <= self.dev[dst].size, "copy overflows the device buffer"
        self.dev[dst][: raw.size] = raw
        self.log.append("h2d")

    def copy_to_host(self, dst, src, stream):
        raw = dst.reshape(-1).view(np.uint8)
        raw[:] = self.dev[src][: raw.size]
        self.log.append("d2h")

    def create_event(self):
        return object()

    def record_event(self, event, stream):
        self.log.append("record")

    def wait_event(self, event):
        self.log.append("wait")

    def destroy_event(self, event):
        pass


class FakeContext:
    """Computes output = nearest-neighbour 2x upscale of 0.5 * input, on the fake device."""

    def __init__(self, engine):
        self.engine = engine
        self.shapes = {}
        self.addresses = {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name == "input":
            return self.shapes["input"]
        n, c, h, w = self.shapes["input"]
        return (n, c, 2 * h, 2 * w)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle):
        assert stream_handle == 0xABC
        mem, dt = self.engine.memory, self.engine.dtype
        n, c, h, w = self.shapes["input"]
        x = mem.dev[self.addresses["input"]][: n * c * h * w * dt.itemsize].view(dt)
        x = x.reshape(n, c, h, w).astype(np.float32)
        y = (0.5 * x).repeat(2, axis=2).repeat(2, axis=3).astype(dt)
        raw = y.reshape(-1).view(np.uint8)
        mem.dev[self.addresses["output"]][: raw.size] = raw
        mem.log.append("execute")
        return True


class FakeEngine:
    def __init__(self, memory, trt, dtype=np.float32, shape=(2, 3, 16, 16), profile=None):
        self.memory, self.trt, self.dtype = memory, trt, np.dtype(dtype)
        self.shape, self.profile = shape, profile
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["input", "output"][i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name == "input" else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.trt.DataType.HALF if self.dtype == np.float16 else self.trt.DataType.FLOAT

    def get_tensor_shape(self, name):
        if name == "input":
            return self.shape
        n, c, h, w = self.shape
        return (n, c, h * 2 if h > 0 else -1, w * 2 if w > 0 else -1)

    def get_tensor_profile_shape(self, name, profile):
        return self.profile

    def create_execution_context(self):
        return FakeContext(self)


def fake_trt(memory, version="10.3.0", **engine_kwargs):
    trt = types.SimpleNamespace(__version__=version)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.DataType = types.SimpleNamespace(FLOAT="f32", HALF="f16")
    trt.nptype = lambda t: {"f32": np.float32, "f16": np.float16}[t]

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None if data == b"garbage" else FakeEngine(memory, trt, **engine_kwargs)

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


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


def test_engine_tensors_reads_dtypes_from_engine():
    mem = FakeMemory()
    trt = fake_trt(mem)
    engine = FakeEngine(
        mem,
        trt,
        dtype=np.float16,
        shape=(-1, 3, 16, 16),
        profile=((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16)),
    )
    ins, outs = engine_tensors(engine, trt)
    assert (ins.name, ins.dtype, ins.shape, ins.profile[2]) == (
        "input",
        np.float16,
        (-1, 3, 16, 16),
        (4, 3, 16, 16),
    )
    assert (outs.name, outs.is_input, outs.dtype) == ("output", False, np.float16)


# -- device-memory layer without CUDA ----------------------------------------------------------------
def test_no_cuda_library_gives_install_hint(monkeypatch):
    monkeypatch.setattr(cuda_memory, "available_library", lambda: None)
    with pytest.raises(MissingDependencyError, match=r"restorekit\[tensorrt\]"):
        cuda_memory.open_device_memory()


def test_cuda_python_without_device_is_a_clear_error(monkeypatch):
    errors = types.SimpleNamespace(cudaSuccess=0, cudaErrorNoDevice=100)
    rt = types.SimpleNamespace(
        cudaError_t=errors, cudaGetDeviceCount=lambda: (errors.cudaErrorNoDevice, 0)
    )
    with pytest.raises(cuda_memory.CudaUnavailableError, match="no CUDA device"):
        cuda_memory.CudaPythonMemory(0, rt=rt)


def test_pycuda_without_device_is_a_clear_error():
    def init():
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    drv = types.SimpleNamespace(init=init)
    with pytest.raises(cuda_memory.CudaUnavailableError, match="no CUDA-capable device"):
        cuda_memory.PyCudaMemory(0, drv=drv)


def test_real_cuda_library_here_reports_no_device():
    """On this machine (no GPU) whatever is installed must fail clearly, never crash."""
    with pytest.raises((MissingDependencyError, cuda_memory.CudaUnavailableError)):
        cuda_memory.open_device_memory()


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


@pytest.mark.gpu
def test_device_memory_round_trip_on_a_real_gpu():
    mem = cuda_memory.open_device_memory()
    try:
        assert mem.compute_capability().count(".") == 1 and mem.device_name()
        host_in = mem.pinned((4, 5), np.float32)
        host_out = mem.pinned((4, 5), np.float32)
        host_in[...] = np.arange(20, dtype=np.float32).reshape(4, 5)
        ptr = mem.malloc(host_in.nbytes)
        stream, event = mem.create_stream(), mem.create_event()
        mem.copy_to_device(ptr, host_in, stream)
        mem.copy_to_host(host_out, ptr, stream)
        mem.record_event(event, stream)
        mem.wait_event(event)
        np.testing.assert_array_equal(host_out, host_in)
        mem.free(ptr)
        mem.free_pinned(host_in)
        mem.free_pinned(host_out)
        mem.destroy_event(event)
        mem.destroy_stream(stream)
    finally:
        mem.close()

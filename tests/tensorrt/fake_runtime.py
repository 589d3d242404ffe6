"""Fakes of the TensorRT 10 runtime API (engine, execution context, ``tensorrt`` names) and of the
device-memory layer, for CPU tests of the engine runner and buffer sizing.

The fake engine computes output = nearest-neighbour 2x upscale of 0.5 * input on the fake device,
an operation whose expected result tests can compute independently.
"""

from __future__ import annotations

import types

import numpy as np

from restorekit.manifest import BatchRange, EngineRecord, Manifest, PrecisionPlan, TensorSpec
from restorekit.tensorrt import cuda_memory


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

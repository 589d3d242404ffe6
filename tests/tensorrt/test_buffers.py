"""An engine's I/O tensors and buffer sizing, in plain Python."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.errors import ManifestError
from restorekit.tensorrt.buffers import EngineTensor, engine_tensors, plan_buffers
from tests.tensorrt.fake_runtime import FakeEngine, FakeMemory, fake_trt


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

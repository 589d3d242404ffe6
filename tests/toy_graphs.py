"""Small ONNX graphs built with ``onnx.helper`` for torch-free tests, and a plain way to run them."""

from __future__ import annotations

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def toy_model(nodes, inits, channels: int = 3) -> onnx.ModelProto:
    """A graph from ``input`` (1, ``channels``, 4, 4) to ``output`` (float, shape left free)."""
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what this ONNX Runtime reads
    return model


def run_graph(path_or_model, x):
    """The first output of a graph (file or model) for input ``x``, run by ONNX Runtime directly
    (not through restorekit's session factory: an independent runner for checks)."""
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]

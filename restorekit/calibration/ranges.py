"""Activation ranges of an ONNX graph, measured with ONNX Runtime on real tiles.

ONNX Runtime has no per-node hooks, so intermediate tensors are made graph outputs. All of them at
once would need the memory of every activation of the network at the same time (gigabytes for a
256x256 tile of a restoration net), so they are exposed in chunks that fit a memory budget, one
session per chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from restorekit.errors import require


@dataclass(frozen=True)
class TensorRange:
    """Statistics of one float tensor over the calibration tiles."""

    max_abs: float
    nonfinite: int


def float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Float32 node outputs of the main graph and their element count per sample (batch 1)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes: dict[str, int] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = info.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim]
        sizes[info.name] = int(np.prod(dims)) if dims else 1
    produced = {o for n in model.graph.node for o in n.output}
    return {k: v for k, v in sizes.items() if k in produced}


def chunk_by_budget(sizes: dict[str, int], batch: int, budget_bytes: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    used = 0
    for name, elems in sizes.items():
        nbytes = elems * 4 * batch
        if chunks[-1] and used + nbytes > budget_bytes:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += nbytes
    return chunks


def session_exposing(model: onnx.ModelProto, names: list[str], threads: int | None):
    ort = require("onnxruntime", "calibration", "Measuring activation ranges")
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    del exposed.graph.output[:]
    for name in names:
        exposed.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Keep every tensor as named: fusions would drop the ones we ask for.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(
        exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )


def activation_ranges(
    model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    budget_bytes: int = 1 << 30,
    threads: int | None = None,
) -> dict[str, TensorRange]:
    """Max |value| and non-finite count of every float node output over ``batches``."""
    batch_list = list(batches)
    sizes = float_tensors(model)
    batch = max(b.shape[0] for b in batch_list)
    input_name = model.graph.input[0].name
    stats: dict[str, list[float]] = {}
    for names in chunk_by_budget(sizes, batch, budget_bytes):
        session = session_exposing(model, names, threads)
        for b in batch_list:
            for name, value in zip(names, session.run(names, {input_name: b}), strict=True):
                finite = np.isfinite(value)
                bad = int(value.size - np.count_nonzero(finite))
                peak = float(np.abs(value[finite]).max()) if bad < value.size else 0.0
                prev = stats.setdefault(name, [0.0, 0])
                prev[0], prev[1] = max(prev[0], peak), prev[1] + bad
    return {k: TensorRange(v[0], int(v[1])) for k, v in stats.items()}

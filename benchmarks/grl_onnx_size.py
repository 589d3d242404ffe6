"""ONNX size vs parameter bytes, ONNX Runtime vs PyTorch agreement and CPU latency of GRL.

Traces with restorekit's exporter pieces (free batch, onnxsim), random weights:

    PYTHONPATH=$PWD python benchmarks/grl_onnx_size.py --model grl-t.dn_c3s25 --tiles 128 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from restorekit.export.simplify import simplify_graph
from restorekit.export.trace import INPUT_NAME, onnx_from_model
from restorekit.models.registry import resolve
from restorekit.runtime.ort_backend import OrtOptions, ort_session


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers and Constant-node tensors."""
    total = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                total += onnx.numpy_helper.to_array(attr.t).nbytes
    return total


def compact_size(model: onnx.ModelProto) -> int:
    """Serialized size without value_info and with short intermediate tensor names.

    Close to what the export's ``compact_graph`` saves (it also keeps node and initializer names):
    the exporter names every tensor by its module scope (~70 bytes each, three to four per node)
    and onnxsim adds shape annotations.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    keep = {v.name for v in (*m.graph.input, *m.graph.output)} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        return name if name in keep else names.setdefault(name, f"t{len(names)}")

    for init in m.graph.initializer:
        init.name = short(init.name)
    for node in m.graph.node:
        node.name = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    return m.ByteSize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="grl-t.dn_c3s25")
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = resolve(args.model)
    torch.manual_seed(0)
    model = ref.build().eval()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"{ref.name}: {param_bytes / 1e6:.2f} MB of parameters (fp32)")
    for tile in args.tiles:
        t0 = time.perf_counter()
        graph = simplify_graph(onnx_from_model(model, (tile, tile), ref.variant.in_channels)).model
        export_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "grl.onnx"
            onnx.save(graph, str(path))
            size = path.stat().st_size
            session = ort_session(path, OrtOptions(threads=args.threads))
            x = torch.rand(
                1, ref.variant.in_channels, tile, tile, generator=torch.Generator().manual_seed(1)
            )
            with torch.no_grad():
                t0 = time.perf_counter()
                y_torch = model(x).numpy()
                torch_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            y_ort = session.run(None, {INPUT_NAME: x.numpy()})[0]
            ort_s = time.perf_counter() - t0
        print(
            f"tile {tile}x{tile}: onnx {size / 1e6:.2f} MB ({size / param_bytes:.3f} x params; "
            f"tensors {tensor_bytes(graph) / 1e6:.2f} MB; without value_info and with short "
            f"tensor names {compact_size(graph) / param_bytes:.3f} x params), "
            f"nodes {len(graph.graph.node)}, "
            f"export+simplify {export_s:.0f} s, max|ORT-PyTorch| {np.abs(y_ort - y_torch).max():.2e}, "
            f"CPU latency batch 1: PyTorch {torch_s:.1f} s, ORT {ort_s:.1f} s (first run each)"
        )


if __name__ == "__main__":
    main()

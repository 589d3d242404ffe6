"""Trace a PyTorch model to an ONNX graph at a fixed tile shape with a free batch dimension."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from restorekit.errors import ExportError
from restorekit.manifest import INPUT_NAME, OUTPUT_NAME

TRACE_BATCH = 2  # tracing at 2 (and verifying at 1 and more) exposes a batch size baked in
# The tracer's warnings when a forward pass reads a tensor's value into Python ("Converting a
# tensor to a Python boolean/float/number might cause the trace to be incorrect"): the graph may
# have frozen a branch taken on the traced input's values. Reading shapes as ints is expected.
VALUE_READS = ("Python boolean", "Python float", "Python number")


class ResultOnly(nn.Module):
    """Returns only the restored image of a model whose ``forward`` returns several outputs."""

    def __init__(self, model: nn.Module, output_index: int | None) -> None:
        super().__init__()
        self.model = model
        self.output_index = output_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if self.output_index is None else out[self.output_index]


def onnx_from_model(
    model: nn.Module,
    tile: tuple[int, int],
    in_channels: int,
    output_index: int | None = None,
    opset: int = 17,
    dynamic_hw: bool = False,
) -> onnx.ModelProto:
    """Trace ``model`` on a random (2, C, H, W) input and return the ONNX graph (I/O
    ``input``/``output``).

    The batch dimension is always symbolic; height and width too when ``dynamic_hw``.

    Raises:
        ExportError: the exporter fails (the message carries the exporter's first line).
    """
    dummy = torch.rand(TRACE_BATCH, in_channels, *tile, generator=torch.Generator().manual_seed(0))
    return _export(model, dummy, output_index, opset, dynamic_hw)[0]


def onnx_and_outputs(
    model: nn.Module,
    batch: np.ndarray,
    output_index: int | None = None,
    opset: int = 17,
    dynamic_hw: bool = False,
) -> tuple[onnx.ModelProto, np.ndarray | None]:
    """Trace ``model`` on ``batch`` (N >= :data:`TRACE_BATCH` real inputs) and return the graph
    and the outputs of the forward pass the trace ran.

    The tracer runs the model's forward once, eagerly, with the same kernels as a plain call, so
    those outputs are PyTorch's own for ``batch`` (bit for bit; tested): an export that verifies
    on ``batch`` needs no second forward pass for its reference.

    The outputs are ``None`` when the forward pass read tensor values into Python (the tracer's
    :data:`VALUE_READS` warnings): the graph may hold branches ``batch`` took, which only a
    check on other inputs can show; trace on other inputs instead.

    Raises:
        ValueError: fewer than :data:`TRACE_BATCH` inputs (a batch of 1 would be baked in).
        ExportError: the exporter fails.
    """
    if len(batch) < TRACE_BATCH:
        raise ValueError(f"tracing needs a batch of at least {TRACE_BATCH}, got {len(batch)}")
    graph, outputs, branched = _export(
        model, torch.from_numpy(batch), output_index, opset, dynamic_hw
    )
    return graph, None if branched else outputs.float().numpy()


def _export(
    model: nn.Module,
    dummy: torch.Tensor,
    output_index: int | None,
    opset: int,
    dynamic_hw: bool,
) -> tuple[onnx.ModelProto, torch.Tensor, bool]:
    """The TorchScript exporter on ``dummy``: the graph, the traced forward's output and whether
    that forward branched on tensor values."""
    wrapper = ResultOnly(model, output_index).eval()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    outputs: list[torch.Tensor] = []
    hook = wrapper.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().clone()))
    buf = io.BytesIO()
    try:
        with (
            torch.inference_mode(False),
            torch.no_grad(),
            warnings.catch_warnings(record=True) as seen,
        ):
            # TracerWarnings are expected (shapes read as ints); verification decides. Those
            # of VALUE_READS say the forward read values into Python (see onnx_and_outputs).
            warnings.simplefilter("always")
            torch.onnx.export(
                wrapper,
                (dummy,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"ONNX export failed at tile {dummy.shape[2]}x{dummy.shape[3]}: {first}"
        ) from exc
    finally:
        hook.remove()
    branched = any(kind in str(w.message) for w in seen for kind in VALUE_READS)
    return onnx.load_from_string(buf.getvalue()), outputs[-1], branched

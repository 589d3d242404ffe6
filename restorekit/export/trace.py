"""Trace a PyTorch model to an ONNX graph at a fixed tile shape with a free batch dimension."""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from restorekit.errors import ExportError
from restorekit.manifest import INPUT_NAME, OUTPUT_NAME

TRACE_BATCH = 2  # tracing at 2 (and verifying at 1 and more) exposes a batch size baked in


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
    """Trace ``model`` on a (2, C, H, W) input and return the ONNX graph (I/O ``input``/``output``).

    The batch dimension is always symbolic; height and width too when ``dynamic_hw``.

    Raises:
        ExportError: the exporter fails (the message carries the exporter's first line).
    """
    wrapper = ResultOnly(model, output_index).eval()
    dummy = torch.rand(TRACE_BATCH, in_channels, *tile, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    buf = io.BytesIO()
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings are expected; verification decides
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
        raise ExportError(f"ONNX export failed at tile {tile[0]}x{tile[1]}: {first}") from exc
    return onnx.load_from_string(buf.getvalue())

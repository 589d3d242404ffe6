"""A tiny convolutional network for runtime tests, exported to ONNX with its manifest.

Three 3x3 convolutions: the receptive radius is 3 input pixels, below overlap // 4 for the overlap
of 16 the tests use, so tiled inference must equal the untiled pass exactly (up to float rounding).
With ``scale=2`` the last convolution feeds a pixel shuffle (super-resolution layout).
"""

from __future__ import annotations

import warnings
from pathlib import Path

RADIUS = 3


def build_net(scale: int = 1, in_ch: int = 3, out_ch: int = 3, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(8, out_ch * scale * scale, 3, padding=1),
    ]
    if scale > 1:
        layers.append(nn.PixelShuffle(scale))
    layers.append(nn.Sigmoid())  # outputs in [0, 1] like an image
    return nn.Sequential(*layers).eval()


def export_net(
    folder: Path,
    *,
    scale: int = 1,
    tile: tuple[int, int] | None = (32, 48),
    batch: int | None = 1,
    overlap: int = 16,
    in_ch: int = 3,
    out_ch: int = 3,
    blend: str = "feather",
    value_range: float = 1.0,
    multiple_of: int = 1,
    name: str = "tiny",
):
    """Export :func:`build_net` to ``folder/<name>.onnx`` with a sidecar manifest.

    ``tile=None`` exports dynamic height/width; ``batch=None`` a dynamic batch (1..8).
    Returns (onnx path, torch module, manifest).
    """
    import torch

    from restorekit.manifest import BatchRange, Manifest, PrecisionPlan, TensorSpec, write_manifest

    net = build_net(scale, in_ch, out_ch)
    if value_range != 1.0:
        inner = net

        class Scaled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x / value_range) * value_range

        net = Scaled().eval()
    th, tw = tile if tile is not None else (32, 48)
    example = torch.rand(batch or 2, in_ch, th, tw)
    axes: dict[int, str] = {}
    if batch is None:
        axes[0] = "batch"
    if tile is None:
        axes.update({2: "height", 3: "width"})
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter suffices
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": {k: "out_" + v for k, v in axes.items()}}
            if axes
            else None,
            opset_version=17,
            dynamo=False,
        )
    manifest = Manifest(
        model="tiny.test",
        task="test",
        input=TensorSpec("input", in_ch, value_range=value_range),
        output=TensorSpec("output", out_ch, value_range=value_range),
        scale=scale,
        multiple_of=multiple_of,
        tile=tile,
        batch=BatchRange(1, batch or 4, batch or 8)
        if batch is None
        else BatchRange(batch, batch, batch),
        overlap=overlap,
        blend=blend,
        precision=PrecisionPlan(),
        opset=17,
        weights="random",
    )
    write_manifest(path, manifest)
    return path, net, manifest


def untiled(net, image_chw, margin: int):
    """The whole image, reflect-padded by ``margin`` on every side, through PyTorch; cropped back."""
    import numpy as np
    import torch

    padded = np.pad(image_chw, ((0, 0), (margin, margin), (margin, margin)), mode="reflect")
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(padded))[None])[0].numpy()
    s = out.shape[1] // padded.shape[1]
    h, w = image_chw.shape[1:]
    return out[:, margin * s : (margin + h) * s, margin * s : (margin + w) * s]

"""A tiny convolutional network for runtime tests, written as ONNX with its manifest, no PyTorch.

Three 3x3 convolutions (ReLU, tanh, then a sigmoid so outputs look like an image): the receptive
radius is 3 input pixels, below overlap // 4 for the overlap of 16 the tests use, so tiled
inference must equal the untiled pass exactly (up to float rounding). With ``scale=2`` the last
convolution feeds a pixel shuffle (DepthToSpace, CRD: super-resolution layout).

The graph is built with ``onnx.helper`` and run by ONNX Runtime through the runtime under test;
the reference, :class:`TinyNet`, computes the same network in plain numpy (float64), so expected
values never come from ONNX Runtime or the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

RADIUS = 3
WIDTH = 8


@dataclass(frozen=True)
class TinyNet:
    """The network's weights and its numpy forward pass (NCHW float in, NCHW float64 out)."""

    weights: tuple[np.ndarray, np.ndarray, np.ndarray]
    biases: tuple[np.ndarray, np.ndarray, np.ndarray]
    scale: int = 1
    value_range: float = 1.0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float64) / self.value_range
        x = np.maximum(_conv3x3(x, self.weights[0], self.biases[0]), 0.0)
        x = np.tanh(_conv3x3(x, self.weights[1], self.biases[1]))
        x = _conv3x3(x, self.weights[2], self.biases[2])
        if self.scale > 1:
            x = _depth_to_space(x, self.scale)
        return 1.0 / (1.0 + np.exp(-x)) * self.value_range


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Zero-padded 3x3 convolution (ONNX Conv with pads 1), float64."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float64)) + b[None, :, None, None]


def _depth_to_space(x: np.ndarray, s: int) -> np.ndarray:
    """DepthToSpace in CRD mode (PyTorch's PixelShuffle): channel c*s*s + i*s + j -> (c, y*s+i, x*s+j)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c // (s * s), s, s, h, w).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // (s * s), h * s, w * s)


def build_net(scale: int = 1, in_ch: int = 3, out_ch: int = 3, seed: int = 0) -> TinyNet:
    rng = np.random.default_rng(seed)
    shapes = ((WIDTH, in_ch), (WIDTH, WIDTH), (out_ch * scale * scale, WIDTH))
    weights = tuple(
        rng.uniform(-1, 1, (o, i, 3, 3)).astype(np.float32) / np.float32(3 * np.sqrt(i))
        for o, i in shapes
    )
    biases = tuple(rng.uniform(-0.1, 0.1, o).astype(np.float32) for o, _ in shapes)
    return TinyNet(weights, biases, scale)  # type: ignore[arg-type]


def onnx_model(net: TinyNet, tile: tuple[int, int] | None, batch: int | None):
    """The ONNX graph of ``net``: static or symbolic batch / height / width."""
    from onnx import TensorProto, helper, numpy_helper

    in_ch, out_ch = net.weights[0].shape[1], net.weights[2].shape[0] // (net.scale**2)
    n = batch if batch is not None else "batch"
    h, w = tile if tile is not None else ("height", "width")
    out_h = h * net.scale if tile is not None else "out_height"
    out_w = w * net.scale if tile is not None else "out_width"
    inits = [numpy_helper.from_array(a, f"w{k}") for k, a in enumerate(net.weights)]
    inits += [numpy_helper.from_array(a, f"b{k}") for k, a in enumerate(net.biases)]
    pads = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    x = "input"
    if net.value_range != 1.0:
        inits.append(numpy_helper.from_array(np.array(net.value_range, np.float32), "range"))
    nodes = []
    if net.value_range != 1.0:
        nodes.append(helper.make_node("Div", [x, "range"], ["unit"], name="to_unit"))
        x = "unit"
    nodes += [
        helper.make_node("Conv", [x, "w0", "b0"], ["c0"], name="conv0", **pads),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", **pads),
        helper.make_node("Tanh", ["c1"], ["t1"], name="tanh1"),
        helper.make_node("Conv", ["t1", "w2", "b2"], ["c2"], name="conv2", **pads),
    ]
    last = "c2"
    if net.scale > 1:
        nodes.append(helper.make_node("DepthToSpace", [last], ["d2"], name="shuffle",
                                      blocksize=net.scale, mode="CRD"))  # fmt: skip
        last = "d2"
    sigmoid_out = "output" if net.value_range == 1.0 else "s2"
    nodes.append(helper.make_node("Sigmoid", [last], [sigmoid_out], name="sigmoid"))
    if net.value_range != 1.0:
        nodes.append(helper.make_node("Mul", ["s2", "range"], ["output"], name="to_range"))
    graph = helper.make_graph(
        nodes,
        "tinynet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, in_ch, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, out_ch, out_h, out_w])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


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
    """Write the net to ``folder/<name>.onnx`` with a sidecar manifest.

    ``tile=None`` writes dynamic height/width; ``batch=None`` a dynamic batch (1..8).
    Returns (onnx path, the numpy :class:`TinyNet`, manifest).
    """
    import onnx

    from restorekit.manifest import BatchRange, Manifest, PrecisionPlan, TensorSpec, write_manifest

    base = build_net(scale, in_ch, out_ch)
    net = TinyNet(base.weights, base.biases, scale, value_range)
    path = Path(folder) / f"{name}.onnx"
    onnx.save(onnx_model(net, tile, batch), str(path))
    manifest = Manifest(
        model="tiny.test",
        task="test",
        input=TensorSpec("input", in_ch, value_range=value_range),
        output=TensorSpec("output", out_ch, value_range=value_range),
        scale=scale,
        multiple_of=multiple_of,
        tile=tile,
        batch=BatchRange(1, 4, 8) if batch is None else BatchRange(batch, batch, batch),
        overlap=overlap,
        blend=blend,
        precision=PrecisionPlan(),
        opset=17,
        weights="random",
    )
    write_manifest(path, manifest)
    return path, net, manifest


def untiled(net: TinyNet, image_chw: np.ndarray, margin: int) -> np.ndarray:
    """The whole image, reflect-padded by ``margin`` on every side, through the numpy reference;
    cropped back."""
    padded = np.pad(image_chw, ((0, 0), (margin, margin), (margin, margin)), mode="reflect")
    out = net(padded[None])[0]
    s = net.scale
    h, w = image_chw.shape[1:]
    return out[:, margin * s : (margin + h) * s, margin * s : (margin + w) * s]

"""Pyramid attention (Mei et al., "Pyramid Attention Networks for Image Restoration", 2020).

Every 3x3 patch of a query feature map attends to every 3x3 patch of a five-level feature pyramid
(scales 1.0 ... 0.6) of the same map, and the softmax-weighted value patches are pasted back
(paper Sec. 3, Eq. 4-5). Module and buffer names follow the official code
(SHI-Labs/Pyramid-Attention-Networks, ``attention.py``) so its checkpoints load strictly.

The official forward loops over the batch in Python and convolves each image with its own patches
(kernels computed from the input), then pastes them back with a transposed convolution; neither
exports to ONNX, and the batch size is baked in. Here the same computation is written as batched
matrix products, which export and which TensorRT can run:

* patches (im2col with 'same' zero padding) come from a grouped convolution with a fixed one-hot
  kernel: output channel ``c*9 + k`` is input channel ``c`` shifted by kernel offset ``k``;
* keys are normalised by ``max(||key||, escape_NaN)`` (a clamp), scores are one batched matmul
  ``queries^T @ keys`` of shape [B, H*W, L], and the softmax runs over all L pyramid keys;
* values are gathered by a second matmul ``weights @ values^T`` and pasted back (col2im with
  stride 1, padding 1) by a grouped convolution with a fixed one-hot, spatially flipped kernel,
  because TensorRT has no Col2Im; then divided by 4 as the original.

Memory is dominated by the score matrix: L x H*W floats per image with
L = sum_s floor(H*s) * floor(W*s) (about 3.3 * H*W), i.e. it grows with the square of the tile
area; :func:`attention_bytes` gives the figure for a tile so a tile can be chosen from a budget.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: The pyramid of the official code, ``1 - i/10`` for five levels, written the same way so the
#: floating-point scale factors (and hence the floor(H*s) level sizes) are bit-identical.
PYRAMID_SCALES: tuple[float, ...] = tuple(1 - i / 10 for i in range(5))

KSIZE = 3  # patch size of matching and pasting; the one-hot kernels below assume 3


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Feature-map sizes of the pyramid levels: ``floor(H*s) x floor(W*s)`` for each scale."""
    return [(level_size(height, s), level_size(width, s)) for s in PYRAMID_SCALES]


def level_size(n: int | torch.Tensor, scale: float) -> int | torch.Tensor:
    """``floor(n * scale)`` in double precision, also when ``n`` is a traced shape value.

    PyTorch floors ``n * scale`` in float64. Traced, ``F.interpolate(scale_factor=...)`` floors in
    float32 instead, which gives one row more at some sizes (90 * 0.7 is 62.99999999999999 in
    float64 but 63.0 in float32), so an exported graph would disagree with PyTorch there. Casting
    the traced size to float64 keeps them equal; a static export folds this to a constant. The
    operands are 1-element tensors because the ONNX exporter treats 0-dim ones as scalars and
    computes them in float32 again.
    """
    if isinstance(n, torch.Tensor):
        scaled = n.reshape(1).to(torch.float64) * torch.tensor([scale], dtype=torch.float64)
        return torch.floor(scaled).to(torch.int64).reshape(())
    return math.floor(n * scale)


def attention_bytes(tile: tuple[int, int], batch: int = 1, bytes_per_value: int = 4) -> int:
    """Bytes of one attention score matrix (L x H*W per image) for a feature tile.

    This is the term that grows with the square of the tile area. A forward pass holds the scores
    and their softmax at the same time, so budget at least twice this figure (full PANet in ONNX
    Runtime: peak growth 2.0 to 2.2 times it at 48x48 to 80x80; benchmarks/README.md). For
    PANet and PA-EDSR the attention runs at the input resolution, so ``tile`` is the input tile.

    Args:
        tile: (height, width) of the feature map the attention sees.
        batch: tiles per batch.
        bytes_per_value: 4 for FP32, 2 for FP16.

    Returns:
        ``batch * L * H * W * bytes_per_value`` with ``L = sum_s floor(H*s) * floor(W*s)``.

    Raises:
        ValueError: a non-positive tile or batch.
    """
    h, w = tile
    if h <= 0 or w <= 0 or batch <= 0:
        raise ValueError(f"tile {h}x{w} and batch {batch} must be positive")
    keys = sum(ph * pw for ph, pw in pyramid_sizes(h, w))
    return batch * keys * h * w * bytes_per_value


#: Keys' cubic-convolution coefficient of PyTorch's and ONNX Resize's bicubic mode.
_CUBIC_A = -0.75


def _cubic_taps(t: torch.Tensor) -> torch.Tensor:
    """Weights ``[..., 4]`` of the samples at offsets -1, 0, 1, 2 for fractional positions ``t``."""
    a = _CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far((1 - t) + 1)], dim=-1)


def bicubic_matrix(
    n_out: int | torch.Tensor, n_in: int | torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[n_out, n_in]`` weights of 1-d bicubic resampling as PyTorch does it for an explicit size.

    ``F.interpolate(mode="bicubic", align_corners=False)`` (and ONNX Resize cubic, half_pixel):
    output ``o`` samples the input at ``(o + 0.5) * n_in / n_out - 0.5`` (scale in float32), mixes
    the four samples around it with Keys' weights (a = -0.75), and repeats the border sample where
    taps fall outside; repeated taps add up here. Sizes may be traced values: in a graph with a
    fixed tile the matrix folds to a constant.
    """
    n_out_f = torch.as_tensor(n_out).to(torch.float32)
    scale = torch.as_tensor(n_in).to(torch.float32) / n_out_f
    src = (torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5
    base = torch.floor(src)
    t = (src - base).clamp(0, 1)
    taps = base.to(torch.int64)[:, None] + torch.arange(-1, 3)  # [n_out, 4]
    taps = torch.minimum(taps.clamp_min(0), torch.as_tensor(n_in) - 1)
    one_hot = (taps[:, :, None] == torch.arange(n_in)).to(dtype)  # [n_out, 4, n_in]
    return (one_hot * _cubic_taps(t).to(dtype)[:, :, None]).sum(dim=1)


def resize_bicubic(x: torch.Tensor, size: tuple) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bicubic", align_corners=False)``, in ONNX as two matmuls.

    Eager PyTorch calls ``F.interpolate``. Exported, the resize becomes ``rows @ x @ cols^T``
    with constant matrices (for a fixed tile): ONNX Runtime's cubic Resize was several times
    slower than PyTorch's and about a quarter of the demo PANet's ONNX Runtime time (figures:
    benchmarks/README.md, ort_profile.py), and a matrix product is what every backend runs fast,
    in FP16 and INT8 too (ONNX Runtime's integer graph cannot run a cubic Resize at all).
    """
    if not torch.onnx.is_in_onnx_export():
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    rows = bicubic_matrix(size[0], x.shape[-2], x.dtype)
    cols = bicubic_matrix(size[1], x.shape[-1], x.dtype)
    return torch.matmul(rows, torch.matmul(x, cols.transpose(0, 1)))


def _basic_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 convolution + PReLU (``common.BasicBlock`` with kernel 1: keys ``0.*`` and ``1.*``)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU())


def _patch_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot kernel [channels*9, 1, 3, 3] whose grouped convolution is a 3x3 im2col."""
    eye = torch.eye(KSIZE * KSIZE, dtype=like.dtype, device=like.device)
    return eye.reshape(KSIZE * KSIZE, 1, KSIZE, KSIZE).repeat(channels, 1, 1, 1)


def _paste_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot kernel [channels, 9, 3, 3] whose grouped convolution is col2im (stride 1, pad 1).

    Column ``k = (ky, kx)`` of a patch lands ``(ky - 1, kx - 1)`` pixels away from the patch centre,
    so the output gathers it from offset ``(1 - ky, 1 - kx)``: the kernel is the im2col kernel
    flipped in both spatial axes.
    """
    eye = torch.eye(KSIZE * KSIZE, dtype=like.dtype, device=like.device)
    kernel = eye.reshape(KSIZE * KSIZE, KSIZE, KSIZE).flip(1, 2)
    return kernel.unsqueeze(0).repeat(channels, 1, 1, 1)


def extract_patches(x: torch.Tensor, channels: int) -> torch.Tensor:
    """3x3 patches of ``x`` [B, C, H, W] with zero padding 1, as [B, C*9, H*W] (``F.unfold`` order).

    ``channels`` is C as a Python int: a kernel shaped from ``x.shape`` would be traced as a
    tensor of unknown shape, which the ONNX exporter refuses as convolution weights.
    """
    cols = F.conv2d(x, _patch_kernel(channels, x), padding=KSIZE // 2, groups=channels)
    return cols.flatten(2)


def paste_patches(cols: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """Sum overlapping 3x3 patches [B, C*9, H*W] back into an image [B, C, H, W] (col2im, pad 1)."""
    cols = cols.unflatten(2, (height, width))
    return F.conv2d(cols, _paste_kernel(channels, cols), padding=KSIZE // 2, groups=channels)


class PyramidAttention(nn.Module):
    """Non-local attention over a five-level feature pyramid, in batched matmul form.

    Args:
        channel: feature channels of the input.
        reduction: the matching (query/key) embedding has ``channel // reduction`` channels.
        res_scale: the input is added back scaled by this factor.
        softmax_scale: temperature of the softmax over matching scores (10 in the paper).
    """

    def __init__(
        self,
        channel: int = 64,
        reduction: int = 2,
        res_scale: float = 1.0,
        softmax_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.channel = channel
        self.match_channel = channel // reduction
        self.softmax_scale = softmax_scale
        # A persistent buffer in the official code, hence part of every released checkpoint.
        self.register_buffer("escape_NaN", torch.tensor([1e-4]))
        self.conv_match_L_base = _basic_block(channel, channel // reduction)  # queries (theta)
        self.conv_match = _basic_block(channel, channel // reduction)  # keys (g)
        self.conv_assembly = _basic_block(channel, channel)  # values (f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        queries = extract_patches(self.conv_match_L_base(x), self.match_channel)  # [B, Cm*9, HW]
        keys, values = [], []
        for scale in PYRAMID_SCALES:
            ref = x
            if scale != 1:
                # Explicit sizes: the grid is sampled at floor(H*s)/H like PyTorch 1.1, which the
                # released models were trained with (newer PyTorch would sample at exactly s).
                size = (level_size(height, scale), level_size(width, scale))
                ref = resize_bicubic(x, size)
            values.append(extract_patches(self.conv_assembly(ref), self.channel))  # [B, C*9, Ls]
            keys.append(extract_patches(self.conv_match(ref), self.match_channel))  # [B, Cm*9, Ls]
        key = torch.cat(keys, dim=2)
        value = torch.cat(values, dim=2)
        norm = key.norm(dim=1, keepdim=True).clamp(min=self.escape_NaN)
        # The softmax temperature goes into the (small) keys rather than the L x HW scores: one
        # pass and one score-sized buffer fewer.
        key = key * (self.softmax_scale / norm)
        # Query-major scores [B, HW, L]: the softmax runs over the last, contiguous axis and the
        # value product reads rows of it (measured three times faster on CPU than [B, L, HW]).
        scores = torch.matmul(queries.transpose(1, 2), key)
        weights = torch.softmax(scores, dim=-1)  # over all L pyramid keys
        cols = torch.matmul(weights, value.transpose(1, 2)).transpose(1, 2)  # [B, C*9, HW]
        pasted = paste_patches(cols, self.channel, height, width)
        # Each output pixel is covered by nine overlapping patches; the paper divides by 4.
        return pasted / 4.0 + x * self.res_scale

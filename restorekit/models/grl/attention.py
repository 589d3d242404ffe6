"""GRL's mixed attention: window attention plus anchored stripe attention.

Module and parameter names follow the official ``models/common/mixed_attn_block_efficient.py`` and
``mixed_attn_block.py`` so official checkpoints load strictly. The arithmetic is the official
formulation; what differs is how positions and masks reach it (see ``positions.py``) and that
tensors are reshaped with a free batch dimension (``-1``), never with ``int(...)`` of a batch
size, and with sizes known as Python ints (no Shape arithmetic in a traced graph).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Logit scale is clamped at log(1 / 0.01) as in Swin V2 / the official code.
_MAX_LOGIT_SCALE = math.log(1.0 / 0.01)


@dataclass(frozen=True)
class Positions:
    """Coordinate table, position index and additive shift mask of one attention.

    ``mask`` is :meth:`SeparableMask.additive`'s ``(windows, 1, N1, N2)`` tensor, ``None`` when
    the attention is not shifted.

    ``queries`` and ``keys`` (N1, N2) are the index's shape as Python ints: shapes are never read
    back from tensors, so the traced graph needs no Shape arithmetic.
    """

    table: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor | None
    queries: int
    keys: int


def partition_heads(
    x: torch.Tensor,
    window: Sequence[int],
    size: Sequence[int],
    parts: int,
    heads: int,
    head_dim: int,
) -> torch.Tensor:
    """(B, H, W, parts * heads * head_dim) -> (parts, B * windows, heads, wh * ww, head_dim).

    Windows in row-major order, channels split as (parts, heads, head_dim): the official window
    partition followed by its qkv/head permutation, as one transpose instead of two.
    """
    h, w = size
    wh, ww = window
    x = x.reshape(-1, h // wh, wh, w // ww, ww, parts, heads, head_dim)
    x = x.permute(5, 0, 1, 3, 6, 2, 4, 7)  # (parts, B, rows, cols, heads, wh, ww, head_dim)
    return x.reshape(parts, -1, heads, wh * ww, head_dim)


def merge_heads(
    x: torch.Tensor, window: Sequence[int], size: Sequence[int], heads: int, head_dim: int
) -> torch.Tensor:
    """(B * windows, heads, wh * ww, head_dim) -> (B, H, W, heads * head_dim), the inverse of
    :func:`partition_heads` for one part (heads merged, windows put back), as one transpose."""
    h, w = size
    wh, ww = window
    x = x.reshape(-1, h // wh, w // ww, heads, wh, ww, head_dim)
    x = x.permute(0, 1, 4, 2, 5, 3, 6)  # (B, rows, wh, cols, ww, heads, head_dim)
    return x.reshape(-1, h, w, heads * head_dim)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    # F.normalize(x, dim=-1) without its expand_as (which costs Shape/Expand nodes in ONNX):
    # broadcasting divides by the same clamped norm.
    return x / _norm(x)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)


class CPB_MLP(nn.Sequential):  # noqa: N801 - official name
    """Continuous position bias MLP: 2 -> 512 -> heads (Swin V2)."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 512) -> None:
        super().__init__(
            nn.Linear(in_channels, channels, bias=True),
            nn.ReLU(inplace=True),
            nn.Linear(channels, out_channels, bias=False),
        )


class AffineTransform(nn.Module):
    """Logit scale of the cosine attention, continuous relative-position bias and shift mask."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = CPB_MLP(2, num_heads)

    def scale(self) -> torch.Tensor:
        """The per-head logit scale ``(heads, 1, 1)`` (official: clamp, then exp)."""
        return torch.clamp(self.logit_scale, max=_MAX_LOGIT_SCALE).exp()

    def forward(self, attn: torch.Tensor, pos: Positions) -> torch.Tensor:
        """Bias and mask of the scaled cosine logits (the scale is applied to q, see _attend)."""
        heads = self.num_heads
        # 16 * sigmoid is element-wise, so applying it to the small table before the gather gives
        # the same values as the official order (gather, then sigmoid) at a fraction of the cost.
        table = 16 * torch.sigmoid(self.cpb_mlp(pos.table))  # (Dh, Dw, heads)
        table = table.reshape(-1, heads).transpose(0, 1)  # (heads, Dh * Dw)
        bias = torch.index_select(table, 1, pos.index.reshape(-1))
        attn = attn + bias.reshape(1, heads, pos.queries, pos.keys)
        if pos.mask is not None:
            # (B * windows, ...) -> (B, windows, ...): a plain broadcast over batch and heads.
            # x + (-100.0) is exactly x - 100.0 and x + 0.0 is x, as in the official add.
            windows = int(pos.mask.shape[0])
            shape = (-1, heads, pos.queries, pos.keys)
            attn = (attn.reshape(-1, windows, *shape[1:]) + pos.mask).reshape(shape)
        return attn


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, transform: AffineTransform, pos: Positions
) -> torch.Tensor:
    # Cosine attention (Swin V2 style): scale * (normalised q . normalised k), plus bias and mask.
    # The per-head scale multiplies q's reciprocal norm, (heads, N1, 1) values, instead of the
    # (heads, N1, N2) logits: the same product, without one full pass over the logits.
    q = q * (transform.scale() / _norm(q))
    attn = q @ _normalize(k).transpose(-2, -1)
    attn = torch.softmax(transform(attn, pos), dim=-1)
    return attn @ v  # (B_, heads, N1, head_dim)


class WindowAttention(nn.Module):
    """Window self-attention on one half of the qkv channels, optionally shifted by half a window."""

    def __init__(
        self, channels: int, window_size: Sequence[int], num_heads: int, window_shift: bool
    ) -> None:
        super().__init__()
        self.channels = channels  # of q (and k, v): half the block width
        self.window_size = tuple(window_size)
        self.num_heads = num_heads
        self.shift_size = self.window_size[0] // 2 if window_shift else 0
        self.attn_transform = AffineTransform(num_heads)

    def forward(self, qkv: torch.Tensor, x_size: tuple[int, int], pos: Positions) -> torch.Tensor:
        h, w = x_size
        c = self.channels
        qkv = qkv.reshape(-1, h, w, 3 * c)
        s = self.shift_size
        if s:
            qkv = torch.roll(qkv, shifts=(-s, -s), dims=(1, 2))
        heads, head_dim = self.num_heads, c // self.num_heads
        q, k, v = partition_heads(qkv, self.window_size, x_size, 3, heads, head_dim)
        x = _attend(q, k, v, self.attn_transform, pos)
        x = merge_heads(x, self.window_size, x_size, heads, head_dim)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x.reshape(-1, h * w, c)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}, num_heads={self.num_heads}"


class AnchorStripeAttention(nn.Module):
    """Anchored stripe attention: anchors attend to the stripe, then the stripe to the anchors.

    ``stripe_size`` is already oriented (horizontal stripes ``[h, w]``, vertical ``[w, h]``).
    """

    def __init__(
        self,
        channels: int,
        stripe_size: Sequence[int],
        stripe_shift: bool,
        num_heads: int,
        anchor_window_down_factor: int,
    ) -> None:
        super().__init__()
        self.channels = channels  # of q, k, v and the anchors: half the block width
        self.stripe_size = tuple(stripe_size)
        self.stripe_shift = stripe_shift
        self.num_heads = num_heads
        self.anchor_window_down_factor = anchor_window_down_factor
        self.attn_transform1 = AffineTransform(num_heads)
        self.attn_transform2 = AffineTransform(num_heads)

    def forward(
        self,
        qkv: torch.Tensor,
        anchor: torch.Tensor,
        x_size: tuple[int, int],
        pos_a2w: Positions,
        pos_w2a: Positions,
    ) -> torch.Tensor:
        h, w = x_size
        c = self.channels
        df = self.anchor_window_down_factor
        stripe = self.stripe_size
        anchor_stripe = tuple(s // df for s in stripe)
        qkv = qkv.reshape(-1, h, w, 3 * c)
        if self.stripe_shift:
            shift = tuple(s // 2 for s in stripe)
            qkv = torch.roll(qkv, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            anchor = torch.roll(anchor, shifts=(-(shift[0] // df), -(shift[1] // df)), dims=(1, 2))
        heads, head_dim = self.num_heads, c // self.num_heads
        q, k, v = partition_heads(qkv, stripe, x_size, 3, heads, head_dim)
        anchor = partition_heads(anchor, anchor_stripe, (h // df, w // df), 1, heads, head_dim)[0]
        # anchor <- stripe (N2 x N1), then stripe <- anchor (N1 x N2): linear in the stripe length.
        x = _attend(anchor, k, v, self.attn_transform1, pos_a2w)
        x = _attend(q, anchor, x, self.attn_transform2, pos_w2a)
        x = merge_heads(x, stripe, x_size, heads, head_dim)
        if self.stripe_shift:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x.reshape(-1, h * w, c)

    def extra_repr(self) -> str:
        return (
            f"stripe_size={self.stripe_size}, stripe_shift={self.stripe_shift}, "
            f"num_heads={self.num_heads}, anchor_window_down_factor={self.anchor_window_down_factor}"
        )


class QKVProjection(nn.Module):
    """Linear projection to q, k, v (official ``qkv_proj_type="linear"``)."""

    def __init__(self, dim: int, qkv_bias: bool) -> None:
        super().__init__()
        self.body = nn.Linear(dim, dim * 3, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch.split(self(x), 3 * dim // 2, -1)`` as two projections by the weights' halves.

        Each output is its own matrix product, so the graph has no Split copying the whole
        ``(B, H*W, 3 * dim)`` projection (2.6 ms a block in ONNX Runtime at 256x256, demo GRL).
        """
        half = self.body.out_features // 2
        w, b = self.body.weight, self.body.bias
        return tuple(  # type: ignore[return-value]
            F.linear(x, w[i : i + half], None if b is None else b[i : i + half]) for i in (0, half)
        )


class AnchorLinear(nn.Module):
    """Anchors: average pooling by the down-sampling factor, then a linear map to half the width."""

    def __init__(self, in_channels: int, out_channels: int, down_factor: int) -> None:
        super().__init__()
        self.down_factor = down_factor
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.pooling = nn.AvgPool2d(down_factor, down_factor)
        self.reduction = nn.Linear(in_channels, out_channels, bias=True)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        d = self.down_factor
        x = self.pooling(x.transpose(1, 2).reshape(-1, self.in_channels, h, w))
        x = self.reduction(x.reshape(-1, self.in_channels, (h // d) * (w // d)).transpose(1, 2))
        return x.reshape(-1, h // d, w // d, self.out_channels)


class AnchorProjection(nn.Module):
    """Official ``AnchorProjection`` with ``anchor_proj_type="avgpool"``, one stage."""

    def __init__(self, dim: int, anchor_window_down_factor: int) -> None:
        super().__init__()
        self.body = nn.ModuleList([AnchorLinear(dim, dim // 2, anchor_window_down_factor)])

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        return self.body[0](x, x_size)


class MixedAttention(nn.Module):
    """Shared qkv projection split between window and anchored stripe attention, then ``proj``."""

    def __init__(
        self,
        dim: int,
        num_heads_w: int,
        num_heads_s: int,
        window_size: Sequence[int],
        window_shift: bool,
        stripe_size: Sequence[int],
        stripe_shift: bool,
        qkv_bias: bool,
        anchor_window_down_factor: int,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.qkv = QKVProjection(dim, qkv_bias)
        self.anchor = AnchorProjection(dim, anchor_window_down_factor)
        self.window_attn = WindowAttention(dim // 2, window_size, num_heads_w, window_shift)
        self.stripe_attn = AnchorStripeAttention(
            dim // 2, stripe_size, stripe_shift, num_heads_s, anchor_window_down_factor
        )
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        x_size: tuple[int, int],
        pos_w: Positions,
        pos_a2w: Positions,
        pos_w2a: Positions,
    ) -> torch.Tensor:
        qkv_window, qkv_stripe = self.qkv.halves(x)
        anchor = self.anchor(x, x_size)
        x_window = self.window_attn(qkv_window, x_size, pos_w)
        x_stripe = self.stripe_attn(qkv_stripe, anchor, x_size, pos_a2w, pos_w2a)
        return self.proj(torch.cat([x_window, x_stripe], dim=-1))

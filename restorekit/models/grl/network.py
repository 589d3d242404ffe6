"""GRL: "Efficient and Explicit Modelling of Image Hierarchies for Image Restoration" (Li et al.,
CVPR 2023), the network of ``models/networks/grl.py`` in ofsoundof/GRL-Image-Restoration.

Written from the paper and the official code's structure; module and parameter names follow the
official implementation so its checkpoints load with ``strict=True`` once the 13 persistent
table/index/mask buffers are dropped (``restorekit.models.catalog.grl``). Only the configuration
space of the released checkpoints is built: linear qkv, average-pooled one-stage anchors, fixed
stripe sizes (``stripe_groups=[None, None]``), shifted stripes, linear output projection, one 3x3
conv per stage.

Export-ready differences from the official ``forward`` (same results for the same weights):

* No padding inside: the input height and width must be multiples of ``pad_size`` (the largest
  window/stripe size); :func:`restore_any_size` pads (reflect, as the official
  ``check_image_size``) and crops outside the graph. An exported graph is valid for its one tile
  shape; the batch dimension stays free.
* Position tables, indices and shift masks are computed compactly in the graph
  (``positions.py``) instead of buffers rebuilt in Python for each new size, so the ONNX holds
  essentially only the weights; the position bias depends on weights only once exported, so
  runtimes fold it at load, and the shift masks are built once per forward pass.
* ``mean`` is a non-persistent buffer instead of an attribute reassigned inside ``forward``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from restorekit.errors import TileSizeError
from restorekit.models.grl.attention import MixedAttention, Positions
from restorekit.models.grl.keys import describe_state_dict
from restorekit.models.grl.positions import (
    LoadTimeZero,
    coords_table,
    position_index,
    shape_anchor,
    shift_mask,
)

_RGB_MEAN = (0.4488, 0.4371, 0.4040)

# Largest position bias (all blocks, FP32) left for runtimes to fold at load. Folding holds it in
# the session or engine: about 1.1 GB for GRL-T/S denoising, as a plain export of the official
# code does; GRL-B's 64x128 stripes with anchor factor 2 would need about 17 GB, so configurations
# above this keep the bias as per-run work (slower, but they run).
FOLD_BIAS_BUDGET = 1_250_000_000


def bchw_to_blc(x: torch.Tensor, x_size: tuple[int, int], channels: int) -> torch.Tensor:
    # Explicit sizes (not flatten) so the traced graph has no Shape arithmetic.
    return x.reshape(-1, channels, x_size[0] * x_size[1]).transpose(1, 2)


def blc_to_bchw(x: torch.Tensor, x_size: tuple[int, int], channels: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(-1, channels, *x_size)


class Mlp(nn.Module):
    """Transformer feed-forward: fc1 -> GELU -> fc2."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ChannelAttention(nn.Module):
    """RCAN channel attention: global pooling -> squeeze -> ReLU -> excite -> sigmoid gate."""

    def __init__(self, num_feat: int, reduction: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // reduction, 1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // reduction, num_feat, 1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Local modelling branch of GRL-B (``local_connection=True``): conv -> GELU -> conv -> CA."""

    def __init__(self, num_feat: int, compress_ratio: int = 4, reduction: int = 18) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, reduction),
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        return bchw_to_blc(self.cab(blc_to_bchw(x, x_size, self.num_feat)), x_size, self.num_feat)


class EfficientMixAttnTransformerBlock(nn.Module):
    """Post-norm block: ``x + norm1(attn(x)) [+ CAB(x)]``, then ``x + norm2(mlp(x))``.

    Block ``i`` of a stage shifts its windows when ``i`` is even, uses horizontal stripes when
    ``i`` is even and vertical ones when odd, and shifts its stripes when ``i % 4`` is 2 or 3.
    """

    def __init__(
        self,
        dim: int,
        num_heads_w: int,
        num_heads_s: int,
        window_size: Sequence[int],
        window_shift: bool,
        stripe_size: Sequence[int],
        stripe_shift: bool,
        stripe_type: str,
        mlp_ratio: float,
        qkv_bias: bool,
        anchor_window_down_factor: int,
        local_connection: bool,
    ) -> None:
        super().__init__()
        self.window_shift = window_shift
        self.stripe_shift = stripe_shift
        self.stripe_type = stripe_type
        self.stripe_size = list(stripe_size[::-1] if stripe_type == "W" else stripe_size)
        self.local_connection = local_connection
        self.attn = MixedAttention(
            dim,
            num_heads_w,
            num_heads_s,
            window_size,
            window_shift,
            self.stripe_size,
            stripe_shift,
            qkv_bias,
            anchor_window_down_factor,
        )
        self.norm1 = nn.LayerNorm(dim)
        if local_connection:
            self.conv = CAB(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, x_size: tuple[int, int], positions: dict[str, Positions]
    ) -> torch.Tensor:
        kind = "sv" if self.stripe_type == "W" else "sh"
        shifted = "shifted" if self.stripe_shift else "plain"
        window = positions["w_shifted" if self.window_shift else "w_plain"]
        a2w = positions[f"{kind}_a2w_{shifted}"]
        w2a = positions[f"{kind}_w2a_{shifted}"]
        attn = self.norm1(self.attn(x, x_size, window, a2w, w2a))
        # GRL-B adds the local conv branch beside the attention (official order: x + attn + conv).
        x = x + attn + self.conv(x, x_size) if self.local_connection else x + attn
        return x + self.norm2(self.mlp(x))


class TransformerStage(nn.Module):
    """``depth`` blocks, a 3x3 conv and the stage residual."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads_window: int,
        num_heads_stripe: int,
        window_size: Sequence[int],
        stripe_size: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        anchor_window_down_factor: int,
        local_connection: bool,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(
            EfficientMixAttnTransformerBlock(
                dim=dim,
                num_heads_w=num_heads_window,
                num_heads_s=num_heads_stripe,
                window_size=window_size,
                window_shift=i % 2 == 0,
                stripe_size=stripe_size,
                stripe_shift=i % 4 in (2, 3),
                stripe_type="H" if i % 2 == 0 else "W",
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                anchor_window_down_factor=anchor_window_down_factor,
                local_connection=local_connection,
            )
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(
        self, x: torch.Tensor, x_size: tuple[int, int], positions: dict[str, Positions]
    ) -> torch.Tensor:
        res = x
        for block in self.blocks:
            res = block(res, x_size, positions)
        res = self.conv(blc_to_bchw(res, x_size, self.dim))
        return bchw_to_blc(res, x_size, self.dim) + x


class Upsample(nn.Module):
    """Conv + PixelShuffle(2) per factor 2, or one conv + PixelShuffle(3) (official ``Upsample``)."""

    def __init__(self, scale: int, num_feat: int) -> None:
        super().__init__()
        m: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale {scale} is not supported; use a power of 2 or 3")
        self.up = nn.Sequential(*m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class UpsampleOneStep(nn.Module):
    """One conv + PixelShuffle (GRL-T's light-weight SR tail)."""

    def __init__(self, scale: int, num_feat: int, num_out_ch: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Conv2d(num_feat, scale**2 * num_out_ch, 3, 1, 1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class GRL(nn.Module):
    """GRL restorer for inputs whose height and width are multiples of :attr:`pad_size`.

    Args:
        in_channels: image channels (3 for RGB, 1 for gray).
        out_channels: output channels (``None``: as ``in_channels``).
        embed_dim: feature width.
        upscale: super-resolution factor (1 for restoration).
        upsampler: ``"pixelshuffle"``, ``"pixelshuffledirect"``, ``"nearest+conv"`` or ``""``.
        depths: blocks per stage.
        num_heads_window / num_heads_stripe: heads per stage of each attention half.
        window_size: square window of window attention.
        stripe_size: stripe (height, width) of horizontal stripes; vertical stripes transpose it.
        anchor_window_down_factor: anchor down-sampling factor.
        mlp_ratio: feed-forward width / ``embed_dim``.
        qkv_bias: bias of the qkv projection.
        local_connection: add the CAB conv branch to every block (GRL-B).
        img_range: pixel value of white.

    Raises:
        ValueError: a configuration whose window, stripe and anchor sizes do not tile each other.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        embed_dim: int = 64,
        upscale: int = 1,
        upsampler: str = "",
        depths: Sequence[int] = (4, 4, 4, 4),
        num_heads_window: Sequence[int] = (2, 2, 2, 2),
        num_heads_stripe: Sequence[int] = (2, 2, 2, 2),
        window_size: int = 16,
        stripe_size: Sequence[int] = (64, 128),
        anchor_window_down_factor: int = 4,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        local_connection: bool = False,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.embed_dim = embed_dim
        self.upscale = upscale
        self.upsampler = upsampler
        self.img_range = img_range
        self.window_size = (window_size, window_size)
        self.stripe_size = tuple(stripe_size)
        self.anchor_window_down_factor = anchor_window_down_factor
        self.pad_size = max(window_size, *stripe_size)
        self._check_sizes()
        # The zero that position tables and indices start from (positions.py); no parameters.
        self.load_time_zero = LoadTimeZero()
        self.fold_position_bias = (
            self.position_bias_bytes(depths, num_heads_window, num_heads_stripe) <= FOLD_BIAS_BUDGET
        )
        mean = _RGB_MEAN if in_channels == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1), persistent=False)

        num_out_feats = 64
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        self.norm_start = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList(
            TransformerStage(
                dim=embed_dim,
                depth=depths[i],
                num_heads_window=num_heads_window[i],
                num_heads_stripe=num_heads_stripe[i],
                window_size=self.window_size,
                stripe_size=self.stripe_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                anchor_window_down_factor=anchor_window_down_factor,
                local_connection=local_connection,
            )
            for i in range(len(depths))
        )
        self.norm_end = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_out_feats, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
            self.upsample = Upsample(upscale, num_out_feats)
            self.conv_last = nn.Conv2d(num_out_feats, out_channels, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(upscale, embed_dim, out_channels)
        elif upsampler == "nearest+conv":
            if upscale != 4:
                raise ValueError("the nearest+conv upsampler is x4 only")
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_out_feats, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
            self.conv_up1 = nn.Conv2d(num_out_feats, num_out_feats, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_out_feats, num_out_feats, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_out_feats, num_out_feats, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_out_feats, out_channels, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        elif upsampler == "":
            if upscale != 1:
                raise ValueError("restoration (no upsampler) needs upscale=1")
            self.conv_last = nn.Conv2d(embed_dim, out_channels, 3, 1, 1)
        else:
            raise ValueError(f"unknown upsampler {upsampler!r}")
        self.apply(self._init_weights)

    def _check_sizes(self) -> None:
        df = self.anchor_window_down_factor
        sizes = (*self.window_size, *self.stripe_size)
        if any(self.pad_size % s for s in sizes):
            raise ValueError(
                f"window {self.window_size} and stripe {self.stripe_size} must divide {self.pad_size}"
            )
        if any(s % df for s in self.stripe_size):
            raise ValueError(
                f"stripe sizes {self.stripe_size} must be multiples of the anchor factor {df}"
            )

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Official initialisation (truncated normal linear weights); only matters for random weights.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def describe_mismatch(self, sd: Mapping[str, torch.Tensor]) -> str | None:
        """Name the network ``sd`` was saved from when it differs from this one, else ``None``.

        :func:`restorekit.models.checkpoint.load_weights` puts this first in its
        :class:`~restorekit.errors.WeightsError`. Window/stripe sizes are not in the weights, so
        a file of the right shape for another task of the same family still loads.
        """
        found = describe_state_dict(sd)
        ours = describe_state_dict(self.state_dict())
        if found is None or found == ours:
            return None
        return f"the file holds a {found} model, but this one is a {ours} model"

    def position_bias_bytes(
        self, depths: Sequence[int], heads_window: Sequence[int], heads_stripe: Sequence[int]
    ) -> int:
        """FP32 bytes of every block's relative-position bias (``heads x N1 x N2`` per transform:
        one window transform and two stripe transforms per block), what folding at load holds."""
        n_w = self.window_size[0] * self.window_size[1]
        n_s = self.stripe_size[0] * self.stripe_size[1]
        n_a = n_s // self.anchor_window_down_factor**2
        per_head = [n_w * n_w, 2 * n_s * n_a]
        total = sum(
            d * (hw * per_head[0] + hs * per_head[1])
            for d, hw, hs in zip(depths, heads_window, heads_stripe, strict=True)
        )
        return 4 * total

    def positions(
        self,
        x_size: tuple[int, int],
        anchor: int | torch.Tensor,
        mask_anchor: int | torch.Tensor,
    ) -> dict[str, Positions]:
        """Tables, indices and masks of every attention type at feature size ``x_size``.

        Keys: ``w_{plain,shifted}`` (window), ``{sh,sv}_{a2w,w2a}_{plain,shifted}`` (horizontal and
        vertical stripes, anchor->window and window->anchor), shared by all blocks as in the
        official code. Tables and indices start from ``anchor`` (the load-time zero), masks from
        ``mask_anchor`` (the run-time zero); see ``positions.py``.
        """
        df = self.anchor_window_down_factor
        ws = self.window_size
        table_w = coords_table(ws, 1, anchor)
        index_w = position_index(ws, 1, True, anchor)
        half = tuple(s // 2 for s in ws)
        n_w = ws[0] * ws[1]
        out = {
            "w_plain": Positions(table_w, index_w, None, n_w, n_w),
            "w_shifted": Positions(
                table_w, index_w, shift_mask(x_size, ws, half).additive(mask_anchor), n_w, n_w
            ),
        }
        for kind, stripe in (("sh", self.stripe_size), ("sv", self.stripe_size[::-1])):
            table = coords_table(stripe, df, anchor)
            shift = tuple(s // 2 for s in stripe)
            n_stripe = stripe[0] * stripe[1]
            n_anchor = (stripe[0] // df) * (stripe[1] // df)
            for name, w2a in (("a2w", False), ("w2a", True)):
                index = position_index(stripe, df, w2a, anchor)
                mask = shift_mask(x_size, stripe, shift, df, w2a).additive(mask_anchor)
                n = (n_stripe, n_anchor) if w2a else (n_anchor, n_stripe)
                out[f"{kind}_{name}_plain"] = Positions(table, index, None, *n)
                out[f"{kind}_{name}_shifted"] = Positions(table, index, mask, *n)
        return out

    def forward_features(
        self, x: torch.Tensor, x_size: tuple[int, int], batch: int | torch.Tensor
    ) -> torch.Tensor:
        zero = self.load_time_zero(batch) if self.fold_position_bias else shape_anchor(batch)
        positions = self.positions(x_size, zero, shape_anchor(batch))
        x = self.norm_start(bchw_to_blc(x, x_size, self.embed_dim))
        for layer in self.layers:
            x = layer(x, x_size, positions)
        return blc_to_bchw(self.norm_end(x), x_size, self.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` of shape (B, C, H, W), H and W multiples of :attr:`pad_size`.

        Raises:
            TileSizeError: H or W is not a multiple of ``pad_size`` (pad outside, e.g. with
                :func:`restore_any_size`).
        """
        # Height and width are fixed per graph (one export per tile shape), so they are taken as
        # Python ints; the batch dimension stays symbolic (the zeros of positions.py come from it).
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % self.pad_size or w % self.pad_size:
            raise TileSizeError(
                f"GRL input {h}x{w} is not a multiple of pad_size {self.pad_size}; pad it "
                "outside the model (restorekit.models.grl.restore_any_size) and crop the result"
            )
        x = (x - self.mean) * self.img_range
        x_first = self.conv_first(x)
        res = self.conv_after_body(self.forward_features(x_first, (h, w), x.shape[0])) + x_first
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(res)))
        elif self.upsampler == "pixelshuffledirect":
            x = self.upsample(res)
        elif self.upsampler == "nearest+conv":
            x = self.conv_before_upsample(res)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        elif self.in_channels == self.out_channels:
            x = x + self.conv_last(res)
        else:
            x = self.conv_last(res)
        return x / self.img_range + self.mean


def restore_any_size(model: GRL, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on any H x W the way the official ``forward`` does: reflect-pad the bottom
    and right to a multiple of ``pad_size`` (constant padding where reflection is impossible),
    run, and crop to ``H * upscale x W * upscale``. This is the host-side size rule of the export.
    """
    h, w = x.shape[-2:]
    p = model.pad_size
    ph, pw = (-h) % p, (-w) % p
    mode = "reflect" if ph < h and pw < w else "constant"
    x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return model(x)[..., : h * model.upscale, : w * model.upscale]

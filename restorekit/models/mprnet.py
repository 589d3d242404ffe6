"""MPRNet: Multi-Stage Progressive Image Restoration (Zamir et al., CVPR 2021).

Written from the paper and the official code's structure (swz30/MPRNet); module names follow the
official implementation so its checkpoints load with ``strict=True``.

Two deliberate differences from the official ``forward``, both exact:

* Split points are ``H // 2`` and ``W // 2`` taken from the tensor's shape. The official
  ``int(H / 2)`` turns into a constant under tracing, so a graph traced at one size slices wrongly at
  another.
* The four stage-1 patches (and the two stage-2 halves) go through their shared sub-networks as one
  stacked batch instead of four (two) separate calls. Every layer is per-sample (convolutions, the
  channel attention's global pooling), so the result is the same; the graph is four times smaller
  in that part and the GPU gets larger batches.

Down-sampling by bilinear interpolation at scale 0.5 (``align_corners=False``) averages each 2x2
block, so it is written as ``AvgPool2d(2)``: the same values, a cheaper operator.
"""

from __future__ import annotations

import torch
from torch import nn


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    """'same'-padded convolution, as every 3x3/1x1 convolution of the network."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class CALayer(nn.Module):
    """Channel attention: global average -> 1x1 squeeze -> ReLU -> 1x1 excite -> sigmoid gate."""

    def __init__(self, channel: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class CAB(nn.Module):
    """Channel attention block: conv -> act -> conv -> channel attention, plus the input."""

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feat, n_feat, kernel_size, bias), act, conv(n_feat, n_feat, kernel_size, bias)
        )
        self.CA = CALayer(n_feat, reduction, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised attention module (paper Fig. 3): a stage image and attention-gated features."""

    def __init__(self, n_feat: int, kernel_size: int, bias: bool, img_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias)
        self.conv2 = conv(n_feat, img_channels, kernel_size, bias)
        self.conv3 = conv(img_channels, n_feat, kernel_size, bias)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.conv2(x) + x_img
        gated = self.conv1(x) * torch.sigmoid(self.conv3(img))
        return gated + x, img


class DownSample(nn.Module):
    """Halve the resolution (2x2 average == bilinear at scale 0.5) and widen by ``s_factor``."""

    def __init__(self, in_channels: int, s_factor: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(in_channels, in_channels + s_factor, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Double the resolution (bilinear) and narrow by ``s_factor``."""

    def __init__(self, in_channels: int, s_factor: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels + s_factor, in_channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class SkipUpSample(UpSample):
    """:class:`UpSample` followed by adding the skip connection."""

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.up(x) + skip


def _cab_stack(n: int, n_feat: int, kernel_size: int, reduction: int, bias: bool, act: nn.Module):
    return nn.Sequential(*(CAB(n_feat, kernel_size, reduction, bias, act) for _ in range(n)))


class Encoder(nn.Module):
    """Three-level U-Net encoder; with ``csff`` it fuses the previous stage's features."""

    def __init__(self, n_feat, kernel_size, reduction, act, bias, scale_unetfeats, csff):
        super().__init__()
        widths = [n_feat + i * scale_unetfeats for i in range(3)]
        self.encoder_level1 = _cab_stack(2, widths[0], kernel_size, reduction, bias, act)
        self.encoder_level2 = _cab_stack(2, widths[1], kernel_size, reduction, bias, act)
        self.encoder_level3 = _cab_stack(2, widths[2], kernel_size, reduction, bias, act)
        self.down12 = DownSample(widths[0], scale_unetfeats)
        self.down23 = DownSample(widths[1], scale_unetfeats)
        self.csff = csff
        if csff:  # cross-stage feature fusion (paper Sec. 3.2)
            for i, c in enumerate(widths, start=1):
                setattr(self, f"csff_enc{i}", nn.Conv2d(c, c, 1, bias=bias))
            for i, c in enumerate(widths, start=1):
                setattr(self, f"csff_dec{i}", nn.Conv2d(c, c, 1, bias=bias))

    def _fuse(self, level: int, x, encoder_outs, decoder_outs):
        if encoder_outs is None:
            return x
        enc = getattr(self, f"csff_enc{level}")(encoder_outs[level - 1])
        dec = getattr(self, f"csff_dec{level}")(decoder_outs[level - 1])
        return x + enc + dec

    def forward(self, x, encoder_outs=None, decoder_outs=None) -> list[torch.Tensor]:
        enc1 = self._fuse(1, self.encoder_level1(x), encoder_outs, decoder_outs)
        enc2 = self._fuse(2, self.encoder_level2(self.down12(enc1)), encoder_outs, decoder_outs)
        enc3 = self._fuse(3, self.encoder_level3(self.down23(enc2)), encoder_outs, decoder_outs)
        return [enc1, enc2, enc3]


class Decoder(nn.Module):
    """Three-level U-Net decoder with channel-attention skip connections."""

    def __init__(self, n_feat, kernel_size, reduction, act, bias, scale_unetfeats):
        super().__init__()
        widths = [n_feat + i * scale_unetfeats for i in range(3)]
        self.decoder_level1 = _cab_stack(2, widths[0], kernel_size, reduction, bias, act)
        self.decoder_level2 = _cab_stack(2, widths[1], kernel_size, reduction, bias, act)
        self.decoder_level3 = _cab_stack(2, widths[2], kernel_size, reduction, bias, act)
        self.skip_attn1 = CAB(widths[0], kernel_size, reduction, bias, act)
        self.skip_attn2 = CAB(widths[1], kernel_size, reduction, bias, act)
        self.up21 = SkipUpSample(widths[0], scale_unetfeats)
        self.up32 = SkipUpSample(widths[1], scale_unetfeats)

    def forward(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        enc1, enc2, enc3 = outs
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a convolution, plus the input."""

    def __init__(self, n_feat, kernel_size, reduction, act, bias, num_cab):
        super().__init__()
        blocks = [CAB(n_feat, kernel_size, reduction, bias, act) for _ in range(num_cab)]
        # The official code builds this convolution with the default bias=False.
        self.body = nn.Sequential(*blocks, conv(n_feat, n_feat, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Stage 3: three ORBs at full resolution, fed with up-sampled stage-2 U-Net features."""

    def __init__(self, n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias,
                 scale_unetfeats, num_cab):  # fmt: skip
        super().__init__()
        width = n_feat + scale_orsnetfeats
        self.orb1 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.orb2 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.orb3 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.up_enc1 = UpSample(n_feat, scale_unetfeats)
        self.up_dec1 = UpSample(n_feat, scale_unetfeats)
        mid = n_feat + scale_unetfeats
        self.up_enc2 = nn.Sequential(
            UpSample(mid, scale_unetfeats), UpSample(n_feat, scale_unetfeats)
        )
        self.up_dec2 = nn.Sequential(
            UpSample(mid, scale_unetfeats), UpSample(n_feat, scale_unetfeats)
        )
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", nn.Conv2d(n_feat, width, 1, bias=bias))
        for i in (1, 2, 3):
            setattr(self, f"conv_dec{i}", nn.Conv2d(n_feat, width, 1, bias=bias))

    def forward(self, x, encoder_outs, decoder_outs) -> torch.Tensor:
        x = self.orb1(x) + self.conv_enc1(encoder_outs[0]) + self.conv_dec1(decoder_outs[0])
        x = (
            self.orb2(x)
            + self.conv_enc2(self.up_enc1(encoder_outs[1]))
            + self.conv_dec2(self.up_dec1(decoder_outs[1]))
        )
        return (
            self.orb3(x)
            + self.conv_enc3(self.up_enc2(encoder_outs[2]))
            + self.conv_dec3(self.up_dec2(decoder_outs[2]))
        )


def _unstack(t: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Undo a ``torch.cat(list, 0)`` of ``parts`` equal batches (batch size stays symbolic)."""
    return list(t.unflatten(0, (parts, -1)).unbind(0))


class MPRNet(nn.Module):
    """The three-stage network. Height and width must be multiples of 8.

    ``forward`` returns ``[stage3_img, stage2_img, stage1_img]`` as the official code does; the
    first is the restored image (the registry's ``output_index``).
    """

    def __init__(
        self,
        in_c: int = 3,
        out_c: int = 3,
        n_feat: int = 96,
        scale_unetfeats: int = 48,
        scale_orsnetfeats: int = 32,
        num_cab: int = 8,
        kernel_size: int = 3,
        reduction: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        # One PReLU (a single slope) is shared by every CAB in the network, as in the official code.
        act = nn.PReLU()
        self.shallow_feat1 = nn.Sequential(
            conv(in_c, n_feat, kernel_size, bias), CAB(n_feat, kernel_size, reduction, bias, act)
        )
        self.shallow_feat2 = nn.Sequential(
            conv(in_c, n_feat, kernel_size, bias), CAB(n_feat, kernel_size, reduction, bias, act)
        )
        self.shallow_feat3 = nn.Sequential(
            conv(in_c, n_feat, kernel_size, bias), CAB(n_feat, kernel_size, reduction, bias, act)
        )
        unet = (n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage1_encoder = Encoder(*unet, csff=False)
        self.stage1_decoder = Decoder(*unet)
        self.stage2_encoder = Encoder(*unet, csff=True)
        self.stage2_decoder = Decoder(*unet)
        self.stage3_orsnet = ORSNet(
            n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias, scale_unetfeats, num_cab
        )
        self.sam12 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)
        self.sam23 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)
        self.concat12 = conv(n_feat * 2, n_feat, kernel_size, bias)
        self.concat23 = conv(n_feat * 2, n_feat + scale_orsnetfeats, kernel_size, bias)
        self.tail = conv(n_feat + scale_orsnetfeats, out_c, kernel_size, bias)

    def forward(self, x3_img: torch.Tensor) -> list[torch.Tensor]:
        h, w = x3_img.shape[2] // 2, x3_img.shape[3] // 2
        top, bot = x3_img[:, :, :h], x3_img[:, :, h:]
        halves = torch.cat([top, bot], 0)  # stage 2 input: [top; bottom]
        quarters = torch.cat([top[..., :w], top[..., w:], bot[..., :w], bot[..., w:]], 0)

        # Stage 1: four patches through the shared encoder, left|right joined, top/bottom decoded.
        feat1 = self.stage1_encoder(self.shallow_feat1(quarters))
        feat1_halves = []
        for f in feat1:
            ltop, rtop, lbot, rbot = _unstack(f, 4)
            feat1_halves.append(
                torch.cat([torch.cat([ltop, rtop], 3), torch.cat([lbot, rbot], 3)], 0)
            )
        res1 = self.stage1_decoder(feat1_halves)
        samfeats2, img1_halves = self.sam12(res1[0], halves)
        stage1_img = torch.cat(_unstack(img1_halves, 2), 2)

        # Stage 2: two halves, fused with stage-1 features, joined along H and decoded whole.
        x2 = self.concat12(torch.cat([self.shallow_feat2(halves), samfeats2], 1))
        feat2 = [torch.cat(_unstack(f, 2), 2) for f in self.stage2_encoder(x2, feat1_halves, res1)]
        res2 = self.stage2_decoder(feat2)
        samfeats3, stage2_img = self.sam23(res2[0], x3_img)

        # Stage 3: full resolution ORSNet.
        x3 = self.concat23(torch.cat([self.shallow_feat3(x3_img), samfeats3], 1))
        x3 = self.stage3_orsnet(x3, feat2, res2)
        return [self.tail(x3) + x3_img, stage2_img, stage1_img]

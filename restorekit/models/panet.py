"""PANet and PA-EDSR (Mei et al., "Pyramid Attention Networks for Image Restoration", 2020).

Written from the paper and the structure of the official code (SHI-Labs/Pyramid-Attention-Networks:
``{DN_RGB,CAR,Demosaic}/code/model/panet.py``, ``SR/code/model/paedsr.py``, ``common.py``);
module names follow it so the released raw state dicts load with ``strict=True``.

* :class:`PANet` (denoising, JPEG artefact removal, demosaicking): a head conv, ``n_resblocks``
  residual blocks (conv-PReLU-conv) with the pyramid attention in the middle (``body.<n/2>``), a
  conv, a long skip and a tail conv. No mean shift in ``forward``; ``sub_mean``/``add_mean`` exist
  only because the checkpoints hold them.
* :class:`PAEDSR` (super-resolution): EDSR-L (256 features, ReLU, residual scale 0.1) with the
  attention at ``body.<n/2>``, mean shift around the network, PixelShuffle upsampler.

Differences from the official code, all intended:

* The attention is the batched, exportable rewrite of :mod:`restorekit.models.pyramid_attention`.
* The official PA-EDSR also registers its attention as ``msa``, so checkpoints hold every
  attention tensor twice (``msa.*`` and ``body.16.*``). Here it lives only in ``body``; the catalog's
  checkpoint fixup folds ``msa.*`` into ``body.<n/2>.*`` (and checks the copies are equal).
* The official upsampler passes ``bias`` positionally into the convolution's *stride* slot
  (PyTorch 1.1 read ``stride=True`` as 1; current PyTorch raises). Here: stride 1, bias True,
  which is what the released weights were trained with.
* The official loader is non-strict: an 80-block checkpoint loaded into a 16-block model (the
  option default) silently yields a half-random network. Ours loads strictly, and
  ``describe_mismatch`` names the block count a file has when it differs from the model's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from restorekit.models.pyramid_attention import PyramidAttention, attention_bytes

__all__ = ["PANet", "PAEDSR", "attention_bytes", "n_resblocks_from_state_dict"]

#: RGB mean of DIV2K used by the official MeanShift layers (std 1).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def default_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """'same'-padded convolution with bias, as every convolution of both networks."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 convolution adding ``sign * rgb_range * mean`` per RGB channel (not trained)."""

    def __init__(self, rgb_range: float, sign: int = -1) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(RGB_MEAN))
        self.requires_grad_(False)


class ResBlock(nn.Module):
    """conv -> act -> conv, scaled by ``res_scale``, plus the input (keys ``body.0/1/2``)."""

    def __init__(self, n_feats: int, act: nn.Module, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, 3), act, default_conv(n_feats, n_feats, 3)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.res_scale + x


class Upsampler(nn.Sequential):
    """conv to ``r*r*n_feats`` + PixelShuffle(r): once for x3, log2(scale) times for 2^n."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale > 0 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [default_conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [default_conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upsampling scale must be 3 or a power of 2, got {scale}")
        super().__init__(*layers)


def _check_blocks(n_resblocks: int) -> None:
    if n_resblocks < 2 or n_resblocks % 2:
        # The attention sits between two halves of n_resblocks // 2 blocks each.
        raise ValueError(f"n_resblocks must be even and >= 2, got {n_resblocks}")


class _PyramidNet(nn.Module):
    """Shared key-structure check of both networks (attention at ``body.<n/2>``)."""

    n_resblocks: int
    body: nn.Sequential

    @property
    def attention(self) -> PyramidAttention:
        """The pyramid attention module (``body.<n_resblocks/2>``)."""
        return self.body[self.n_resblocks // 2]

    def describe_mismatch(self, sd: Mapping[str, torch.Tensor]) -> str | None:
        """Say so when ``sd`` was saved from a network with another block count, else ``None``.

        :func:`restorekit.models.checkpoint.load_weights` puts this sentence first in the
        :class:`~restorekit.errors.WeightsError` it raises for weights that do not fit.
        """
        found = n_resblocks_from_state_dict(sd)
        if found is None or found == self.n_resblocks:
            return None
        return (
            f"the file holds {found} residual blocks (attention at body.{found // 2}, final body "
            f"conv at body.{found + 1}) but this {type(self).__name__} has {self.n_resblocks} "
            f"(attention at body.{self.n_resblocks // 2}); build it with n_resblocks={found}, "
            f"or use weights made for {self.n_resblocks} blocks"
        )


class PANet(_PyramidNet):
    """PANet for denoising, JPEG artefact removal and demosaicking (values in [0, 1]).

    Args:
        n_resblocks: residual blocks (80 in every released model); the attention sits after half.
        n_feats: feature channels (64).
        n_colors: image channels, 3 (RGB denoising, demosaicking) or 1 (Y-channel CAR).
        res_scale: residual scale of the blocks (1).
        rgb_range: pixel value of white; only initialises the unused mean-shift layers.
        reduction: channel reduction of the attention's matching embedding (2).

    Raises:
        ValueError: ``n_resblocks`` is odd or smaller than 2.
    """

    def __init__(
        self,
        n_resblocks: int = 80,
        n_feats: int = 64,
        n_colors: int = 3,
        res_scale: float = 1.0,
        rgb_range: float = 1.0,
        reduction: int = 2,
    ) -> None:
        super().__init__()
        _check_blocks(n_resblocks)
        self.n_resblocks = n_resblocks
        # In the checkpoints (3-channel even for gray CAR) but commented out of the official forward.
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, 3))
        half = n_resblocks // 2
        body: list[nn.Module] = [ResBlock(n_feats, nn.PReLU(), res_scale) for _ in range(half)]
        # The attention's own residual scale is 1 in PANet, independent of the blocks'.
        body.append(PyramidAttention(channel=n_feats, reduction=reduction, res_scale=1.0))
        body += [ResBlock(n_feats, nn.PReLU(), res_scale) for _ in range(half)]
        body.append(default_conv(n_feats, n_feats, 3))
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(default_conv(n_feats, n_colors, 3))
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(self.body(x) + x)


class PAEDSR(_PyramidNet):
    """PA-EDSR for super-resolution: EDSR-L with pyramid attention (values in [0, rgb_range]).

    Args:
        n_resblocks: residual blocks (32); the attention sits after half.
        n_feats: feature channels (256).
        scale: upscaling factor, 2, 3 or 4.
        n_colors: image channels (3; the mean shift is RGB).
        res_scale: residual scale of the blocks and of the attention (0.1).
        rgb_range: pixel value of white (1 for the released models); sets the mean shift.
        reduction: channel reduction of the attention's matching embedding (8).

    Raises:
        ValueError: ``n_resblocks`` is odd or smaller than 2, or ``scale`` is not 3 or 2^n.
    """

    def __init__(
        self,
        n_resblocks: int = 32,
        n_feats: int = 256,
        scale: int = 2,
        n_colors: int = 3,
        res_scale: float = 0.1,
        rgb_range: float = 1.0,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        _check_blocks(n_resblocks)
        self.n_resblocks = n_resblocks
        self.scale = scale
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, 3))
        half = n_resblocks // 2
        # ReLU has no parameters, so one instance serves every block (as in the official code).
        act = nn.ReLU(inplace=True)
        body: list[nn.Module] = [ResBlock(n_feats, act, res_scale) for _ in range(half)]
        body.append(PyramidAttention(channel=n_feats, reduction=reduction, res_scale=res_scale))
        body += [ResBlock(n_feats, act, res_scale) for _ in range(half)]
        body.append(default_conv(n_feats, n_feats, 3))
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors, 3))
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(x) + x))


_BODY_INDEX = re.compile(r"^body\.(\d+)\.")


def n_resblocks_from_state_dict(sd: Mapping[str, torch.Tensor]) -> int | None:
    """The residual-block count a PANet/PA-EDSR state dict was saved with, from its keys.

    The body holds ``n`` blocks, the attention and a final conv, so its highest index is ``n + 1``.
    Returns ``None`` when the dict has no ``body.<i>.`` keys (not this architecture).
    """
    indices = [int(m.group(1)) for k in sd if (m := _BODY_INDEX.match(k))]
    return max(indices) - 1 if indices else None

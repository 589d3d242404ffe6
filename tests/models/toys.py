"""Toy networks for tests of the registry and the exporter (not real restoration models)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch
from torch import nn


class Identity(nn.Module):
    def __init__(self, **_: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0 * self.conv(x)


class FrozenSplitNet(nn.Module):
    """Splits its input at ``int(H / 2)`` like the official MPRNet: tracing freezes the split."""

    def __init__(self, **_: object) -> None:
        super().__init__()
        self.top = nn.Conv2d(3, 3, 3, padding=1)
        self.bottom = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = int(x.shape[2] / 2)
        return torch.cat([self.top(x[:, :, :h]), self.bottom(x[:, :, h:])], 2)


class BranchyNet(nn.Module):
    """Takes a Python branch on the data: a trace records one branch only."""

    def __init__(self, **_: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 0.3:
            return self.conv(x)
        return x

"""What a GRL state dict says about the network that saved it (for mismatch messages).

Window, stripe and anchor sizes leave no trace in the weights; width, stage layout, channels and
the reconstruction tail do. :func:`describe_state_dict` names those, so a wrong checkpoint is
reported as "an x4 SR model, GRL-S width" rather than as a list of missing keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_SIZE_BY_WIDTH = {64: "GRL-T", 128: "GRL-S", 180: "GRL-B"}


def _tail(sd: Mapping[str, torch.Tensor], in_channels: int) -> str:
    if "conv_up1.weight" in sd:
        return "x4 real-world SR (nearest+conv tail)"
    if "conv_before_upsample.0.weight" in sd:
        steps = [k for k in sd if re.fullmatch(r"upsample\.up\.\d+\.weight", k)]
        ratio = sd[steps[0]].shape[0] // sd[steps[0]].shape[1] if steps else 0
        scale = 3 if ratio == 9 else 2 ** len(steps)
        return f"x{scale} SR (pixelshuffle tail)"
    if "upsample.up.0.weight" in sd:
        out = sd["upsample.up.0.weight"].shape[0]
        scale = round((out / in_channels) ** 0.5)
        return f"x{scale} SR (pixelshuffledirect tail)"
    return "restoration (no upsampler)"


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> str | None:
    """One phrase for the network ``sd`` came from, or ``None`` if it is not a GRL state dict."""
    first = sd.get("conv_first.weight")
    if first is None or first.ndim != 4:
        return None
    width, channels = int(first.shape[0]), int(first.shape[1])
    stages = sorted({int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))})
    depths = [
        len({k.split(".")[3] for k in sd if k.startswith(f"layers.{i}.blocks.")}) for i in stages
    ]
    size = _SIZE_BY_WIDTH.get(width, "GRL")
    local = ", local conv branch" if any(".conv.cab." in k for k in sd) else ""
    return (
        f"{_tail(sd, channels)}, {size} width {width}, depths {depths}, "
        f"{channels} input channel{'s' if channels != 1 else ''}{local}"
    )

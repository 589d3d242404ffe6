"""Build a registry model as a PyTorch module, with official weights or seeded random ones.

Export, verification and ``restore-check`` all build through here, so a random-weight artifact
can be rebuilt bit-for-bit later from what its manifest records (seed and configuration overrides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from restorekit.models.checkpoint import load_weights
from restorekit.models.registry import resolve
from restorekit.models.spec import ModelRef


@dataclass(frozen=True)
class BuiltModel:
    """A module in eval mode plus where its weights came from."""

    module: nn.Module
    ref: ModelRef
    weights: str  # "random (seed N)" or "<file> sha256:<hex>"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def random(self) -> bool:
        return self.weights.startswith("random")


def model_from_name(
    model: str | ModelRef,
    weights: str | Path | None = None,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> BuiltModel:
    """Construct ``model`` (a registry name or ref) and load ``weights`` strictly, in eval mode.

    Without ``weights``, a variant that ships trained weights inside the package (the demo
    variants) loads those; any other gets random but reproducible parameters
    (``torch.manual_seed(seed)`` precedes construction).

    Raises:
        UnknownModelError: the name is not in the registry.
        WeightsError: the weights file is unreadable or does not fit the model.
    """
    ref = resolve(model) if isinstance(model, str) else model
    overrides = dict(overrides or {})
    torch.manual_seed(seed)
    module = ref.build(**overrides)
    if weights is None and ref.variant.bundled_weights and not overrides:
        weights = bundled_weights_path(ref.variant.bundled_weights)
    if weights is None:
        record = f"random (seed {seed})"
    else:
        digest = load_weights(module, ref, weights)
        record = f"{Path(weights).name} sha256:{digest}"
    module.eval()
    return BuiltModel(module=module, ref=ref, weights=record, overrides=overrides)


def bundled_weights_path(name: str) -> Path:
    """Path of a weights file shipped in ``restorekit/data/weights``."""
    from importlib import resources

    return Path(str(resources.files("restorekit.data") / "weights" / name))


def seed_from_record(weights: str) -> int | None:
    """The seed of a ``"random (seed N)"`` record, else ``None``."""
    if weights.startswith("random (seed ") and weights.endswith(")"):
        return int(weights[len("random (seed ") : -1])
    return None

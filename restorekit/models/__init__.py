"""PyTorch networks (imported lazily) and the torch-free registry of their specs and variants."""

from __future__ import annotations

from restorekit.models.registry import REGISTRY, resolve
from restorekit.models.spec import ArchSpec, ModelRef, Variant

__all__ = ["REGISTRY", "ArchSpec", "ModelRef", "Variant", "resolve"]

"""PyTorch networks (imported lazily) and the torch-free registry of their specs and variants."""

from __future__ import annotations

from restorekit.models.registry import REGISTRY, ArchSpec, ModelRef, Variant, resolve

__all__ = ["REGISTRY", "ArchSpec", "ModelRef", "Variant", "resolve"]

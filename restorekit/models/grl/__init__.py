"""GRL (Li et al., CVPR 2023) in an export-ready formulation; see :mod:`.network`."""

from __future__ import annotations

from restorekit.models.grl.network import GRL, restore_any_size

__all__ = ["GRL", "restore_any_size"]

"""Read published checkpoints, normalise them, and load them strictly, with errors a user can act on.

Official checkpoints come wrapped (``{'state_dict': ...}``, Lightning ``.ckpt``, BasicSR
``params``), with prefixes (``module.`` from DataParallel, ``model.`` from Lightning) and with
buffers that are not weights of our modules. Each architecture's :class:`CheckpointFormat` says
which; this module applies it, then loads with ``strict=True``. A mismatch is reported with the
missing/unexpected/mis-shaped keys and the registry variants whose shapes do fit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from restorekit.errors import WeightsError
from restorekit.files import file_sha256
from restorekit.models.registry import REGISTRY
from restorekit.models.spec import CheckpointFormat, ModelRef


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``.pth/.pt/.ckpt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    Raises:
        WeightsError: the file is missing or is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise WeightsError(
            f"cannot read weights from {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
            "Expected a PyTorch checkpoint (.pth/.pt/.ckpt, loadable with weights_only=True) "
            "or a .safetensors file."
        ) from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict; save the weights with "
            "torch.save(model.state_dict(), path)"
        )
    return dict(obj)


def normalize_state_dict(raw: Mapping[str, Any], fmt: CheckpointFormat) -> dict[str, torch.Tensor]:
    """Unwrap, strip prefixes and drop non-weight keys as ``fmt`` describes.

    Raises:
        WeightsError: no tensors are left after unwrapping.
    """
    sd: Mapping[str, Any] = raw
    unwrapped = True
    while unwrapped:
        unwrapped = False
        for key in fmt.wrappers:
            if isinstance(sd.get(key), Mapping):
                sd, unwrapped = sd[key], True
                break
    out: dict[str, Any] = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue  # metric entries, epochs, optimizer states
        for prefix in fmt.strip_prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    drops = [re.compile(p) for p in fmt.drop_patterns]
    out = {k: v for k, v in out.items() if not any(p.search(k) for p in drops)}
    if fmt.fixup is not None:
        out = fmt.fixup(out)
    if not out:
        raise WeightsError("the checkpoint holds no weight tensors after unwrapping")
    return out


@dataclass(frozen=True)
class StateDictDiff:
    """How a state dict differs from a module's (after aliases of shared parameters are filled)."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, ckpt, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 3) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:limit])})")
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:limit])})"
            )
        if self.mismatched:
            shown = ", ".join(
                f"{k}: checkpoint {list(a)} vs model {list(b)}"
                for k, a, b in self.mismatched[:limit]
            )
            parts.append(f"{len(self.mismatched)} of another shape ({shown})")
        return "; ".join(parts)


def fill_shared_aliases(module: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add keys for parameters the module shares under several names (MPRNet's one PReLU).

    A de-duplicated file (safetensors) stores a shared tensor once; the module's state dict lists it
    under every alias. Each absent alias takes the value stored under another name of the same
    tensor.
    """
    groups: dict[int, list[str]] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    out = dict(sd)
    for names in groups.values():
        present = [n for n in names if n in out]
        if present:
            for n in names:
                out.setdefault(n, out[present[0]])
    return out


def diff_state_dict(module: nn.Module, sd: Mapping[str, torch.Tensor]) -> StateDictDiff:
    """Compare key sets and shapes of ``sd`` against ``module.state_dict()``."""
    own = module.state_dict()
    missing = tuple(k for k in own if k not in sd)
    unexpected = tuple(k for k in sd if k not in own)
    mismatched = tuple(
        (k, tuple(sd[k].shape), tuple(own[k].shape))
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    )
    return StateDictDiff(missing, unexpected, mismatched)


def matching_variants(sd: Mapping[str, torch.Tensor], exclude: str | None = None) -> list[str]:
    """Registry variants whose parameter names and shapes fit ``sd`` (built on the meta device).

    Variants with identical configurations are tried once; all their names are returned. GRL
    variants that differ only in window sizes share shapes, so several names may fit.
    """
    tried: dict[tuple[str, str], bool] = {}
    fits: list[str] = []
    for ref in REGISTRY:
        if ref.name == exclude:
            continue
        key = (ref.spec.build, repr(sorted(ref.variant.config.items())))
        if key not in tried:
            normalised = _try_normalize(sd, ref.spec.checkpoint)
            try:
                with torch.device("meta"):
                    module = ref.build()
            except Exception:  # a variant that cannot be built on meta is simply not a candidate
                tried[key] = False
            else:
                tried[key] = (
                    normalised is not None
                    and diff_state_dict(module, fill_shared_aliases(module, normalised)).ok
                )
        if tried[key]:
            fits.append(ref.name)
    return fits


def _try_normalize(sd: Mapping[str, Any], fmt: CheckpointFormat) -> dict[str, Any] | None:
    try:
        return normalize_state_dict(sd, fmt)
    except WeightsError:
        return None


def load_weights(module: nn.Module, ref: ModelRef, path: str | Path) -> str:
    """Load a checkpoint file into ``module`` strictly; returns the file's sha256.

    Raises:
        WeightsError: unreadable file, or weights that do not fit ``ref`` (the message lists the
            differences and the registry variants the weights do fit, if any).
    """
    path = Path(path)
    raw = read_checkpoint(path)
    sd = fill_shared_aliases(module, normalize_state_dict(raw, ref.spec.checkpoint))
    diff = diff_state_dict(module, sd)
    if not diff.ok:
        fits = matching_variants(sd, exclude=ref.name)
        if fits:
            hint = f"These weights fit {', '.join(fits[:6])}: pass that model name instead."
        else:
            hint = "They fit no known variant; check that the file belongs to this architecture."
        # A module whose configuration shows in its keys (PANet's block count) can name the
        # difference, which a list of missing/unexpected keys does not.
        describe = getattr(module, "describe_mismatch", None)
        reason = describe(sd) if callable(describe) else None
        detail = f"{reason} ({diff.summary()})" if reason else diff.summary()
        raise WeightsError(f"weights {path.name} do not fit {ref.name}: {detail}. {hint}")
    module.load_state_dict(sd, strict=True)
    return file_sha256(path)

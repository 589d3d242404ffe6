"""The registry of every architecture restorekit knows: one explicit list, filled here.

Each architecture's spec is declared in ``restorekit/models/catalog/<arch>.py`` (torch-free data,
types from ``spec.py``) and added below, in one place. No decorators and no folder scanning; a
duplicate name raises. A name resolves as ``<arch>.<variant>`` (``mprnet.deblur``), a bare
architecture name (``mprnet``) resolves to that architecture's documented default variant, and an
alias (``grl`` -> ``grl-t.demo_dn_s25``) to its target.

The catalog imports only ``spec.py``, never this module, so any catalog module can be imported
first. This module imports no torch: ``restore-export --list`` and the runtime read specs anywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from restorekit.errors import UnknownModelError
from restorekit.models.catalog import grl, mprnet, nlrn, panet
from restorekit.models.spec import ArchSpec, ModelRef


class Registry:
    """Specs by name, plus aliases; lookups give a :class:`ModelRef` or a helpful error."""

    def __init__(self) -> None:
        self._specs: dict[str, ArchSpec] = {}
        self._aliases: dict[str, str] = {}

    def add(self, spec: ArchSpec) -> None:
        """Register an architecture. Raises ``ValueError`` on a duplicate name."""
        if spec.name in self._specs or spec.name in self._aliases:
            raise ValueError(f"duplicate architecture name {spec.name!r}")
        self._specs[spec.name] = spec

    def alias(self, name: str, target: str) -> None:
        """Let ``name`` stand for the full name ``target`` (which must already resolve)."""
        if name in self._specs or name in self._aliases:
            raise ValueError(f"duplicate name {name!r}")
        self.resolve(target)
        self._aliases[name] = target

    @property
    def specs(self) -> tuple[ArchSpec, ...]:
        return tuple(self._specs.values())

    def __iter__(self) -> Iterator[ModelRef]:
        for spec in self._specs.values():
            for variant in spec.variants:
                yield ModelRef(spec, variant)

    def names(self) -> list[str]:
        """Every resolvable full name, in registration order."""
        return [ref.name for ref in self]

    def resolve(self, name: str) -> ModelRef:
        """Look up ``arch``, ``arch.variant`` or an alias.

        Raises:
            UnknownModelError: with the closest known names and how to list them all.
        """
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        arch, _, variant = key.partition(".")
        spec = self._specs.get(arch)
        if spec is not None:
            try:
                return ModelRef(spec, spec.variant(variant or spec.default_variant))
            except KeyError:
                pass
        known = self.names() + list(self._aliases) + list(self._specs)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(self.names())}. "
            "Run `restore-export --list` for tasks and weights."
        )


def _build_registry() -> Registry:
    registry = Registry()
    registry.add(mprnet.SPEC)
    registry.add(nlrn.SPEC)
    registry.add(panet.SPEC)
    registry.add(panet.PAEDSR_SPEC)
    registry.add(grl.SPEC_TINY)
    registry.add(grl.SPEC_SMALL)
    registry.add(grl.SPEC_BASE)
    registry.alias("grl", "grl-t.demo_dn_s25")  # the bundled demo weights
    return registry


REGISTRY = _build_registry()


def resolve(name: str) -> ModelRef:
    """Resolve a model name against the global registry (see :meth:`Registry.resolve`)."""
    return REGISTRY.resolve(name)

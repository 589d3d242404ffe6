"""What export and runtime need to know about an architecture and its checkpoint flavours.

Plain, torch-free data: :class:`ArchSpec` (one per architecture), :class:`Variant` (one per
checkpoint flavour), :class:`SizeRule`, :class:`CheckpointFormat`, and :class:`ModelRef`, the
resolved (architecture, variant) pair every command works on. The declarations themselves live in
``restorekit/models/catalog/<arch>.py`` and are collected by ``registry.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from restorekit.errors import TileSizeError
from restorekit.runtime.tiling import check_tile_multiple, round_up

PrecisionStatus = Literal["ok", "unsafe", "unverified"]
ColorOrder = Literal["RGB", "BGR", "Y", "GRAY"]
Blend = Literal["feather", "average"]


@dataclass(frozen=True)
class SizeRule:
    """Which input shapes an architecture's graph accepts.

    Attributes:
        multiple_of: height and width must be multiples of this (the runtime pads to it).
        max_tile_area: largest safe tile area in pixels (memory grows with the square of tile area
            in non-local attention); ``None`` when memory is linear in the tile.
        fixed_tile: the graph is only valid at this one shape (e.g. NLRN's patches); ``None`` if free.
        shape_general: after our export fixes the traced graph computes the right result at every
            valid shape, so a dynamic height/width ONNX may be offered (export still verifies it at
            a second shape before writing one).
    """

    multiple_of: int = 1
    max_tile_area: int | None = None
    fixed_tile: tuple[int, int] | None = None
    shape_general: bool = False

    def check_tile(self, tile: tuple[int, int], model: str) -> None:
        """Raise a :class:`TileSizeError` naming a valid tile when ``tile`` breaks this rule.

        Raises:
            TileSizeError: the tile is not positive, not a multiple of ``multiple_of``, differs from
                ``fixed_tile`` or exceeds ``max_tile_area``.
        """
        h, w = tile
        if h <= 0 or w <= 0:
            raise TileSizeError(f"{model}: tile {h}x{w} must be positive")
        check_tile_multiple(tile, self.multiple_of, model)
        if self.fixed_tile is not None and (h, w) != tuple(self.fixed_tile):
            fh, fw = self.fixed_tile
            raise TileSizeError(
                f"{model}: the graph is valid only at {fh}x{fw}; use --tile {fh}x{fw}"
            )
        if self.max_tile_area is not None and h * w > self.max_tile_area:
            raise TileSizeError(
                f"{model}: tile {h}x{w} ({h * w} px) exceeds the safe tile area of "
                f"{self.max_tile_area} px (attention memory grows with the square of the tile area); "
                "choose a smaller --tile"
            )

    def padded_shape(self, h: int, w: int) -> tuple[int, int]:
        """The smallest shape >= (h, w) that satisfies ``multiple_of``."""
        return round_up(h, self.multiple_of), round_up(w, self.multiple_of)


@dataclass(frozen=True)
class CheckpointFormat:
    """How published checkpoints of an architecture are wrapped, so they can be normalised.

    Attributes:
        wrappers: top-level keys whose mapping value holds the weights (unwrapped repeatedly).
        strip_prefixes: key prefixes removed where present (``module.`` from DataParallel).
        drop_patterns: regular expressions of keys that are not weights of our module (e.g.
            GRL's persistent index/mask buffers); matching keys are discarded before loading.
        fixup: optional last step over the normalised dict for anything declarative rules cannot
            say (a function in a torch-free module, taking and returning a dict).
    """

    wrappers: tuple[str, ...] = ("state_dict", "params_ema", "params", "model")
    strip_prefixes: tuple[str, ...] = ("module.",)
    drop_patterns: tuple[str, ...] = ()
    fixup: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Variant:
    """One checkpoint flavour of an architecture: its configuration and I/O conventions.

    Attributes:
        name: the part after the dot, e.g. ``"deblur"`` in ``mprnet.deblur``.
        task: a short human description, e.g. ``"motion deblurring (GoPro)"``.
        config: keyword arguments of the architecture's build function.
        default_tile: tile (height, width) exported when the user gives none.
        in_channels / out_channels: image channels of the input and output tensors.
        scale: output size / input size (super-resolution).
        value_range: pixel value of white in the model's tensors (1.0 or 255.0).
        color_order: channel order of the tensors: RGB, BGR, or Y/GRAY for one channel.
        overlap: tile overlap in input pixels; ``None`` takes the architecture default.
        weights: name and source of the official checkpoint (shown by ``--list``).
        bundled_weights: file name under ``restorekit/data/weights`` shipped with the package.
        size_rule: this variant's own size rule where it differs from the architecture's (GRL:
            ``multiple_of`` is the variant's window/stripe padding size); ``None`` takes the spec's.
    """

    name: str
    task: str
    config: Mapping[str, Any]
    default_tile: tuple[int, int]
    in_channels: int = 3
    out_channels: int = 3
    scale: int = 1
    value_range: float = 1.0
    color_order: ColorOrder = "RGB"
    overlap: int | None = None
    weights: str = ""
    bundled_weights: str | None = None
    size_rule: SizeRule | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


@dataclass(frozen=True)
class ArchSpec:
    """Everything export and runtime need to know about one architecture.

    Attributes:
        name: registry name, lower case (``"mprnet"``, ``"grl-b"``).
        title: paper title / authors / venue, for listings.
        build: ``"module:callable"`` of the PyTorch constructor, imported lazily.
        variants: the checkpoint flavours.
        default_variant: name of the variant a bare ``name`` resolves to (documented in README).
        size_rule: shapes the graph accepts.
        default_overlap: tile overlap in input pixels, sized from the receptive field.
        checkpoint: how published checkpoints are wrapped.
        output_index: which element of a tuple/list output is the restored image (``None``: a
            single tensor).
        fp16 / int8: whether the reduced precision is known to be accurate for this architecture.
        blend: how overlapping tiles are merged (``feather`` or plain ``average``).
        licence: licence of the official code and weights.
        tiny: configuration overrides giving a tiny network of the same code path (tests, smoke
            runs); not a model anyone should deploy.
    """

    name: str
    title: str
    build: str
    variants: tuple[Variant, ...]
    default_variant: str
    size_rule: SizeRule
    default_overlap: int
    checkpoint: CheckpointFormat = field(default_factory=CheckpointFormat)
    output_index: int | None = None
    fp16: PrecisionStatus = "unverified"
    int8: PrecisionStatus = "unverified"
    blend: Blend = "feather"
    licence: str = ""
    tiny: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{self.name}: duplicate variant names {dupes}")
        if self.default_variant not in names:
            raise ValueError(
                f"{self.name}: default variant {self.default_variant!r} not in {names}"
            )

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


@dataclass(frozen=True)
class ModelRef:
    """A resolved (architecture, variant) pair: what every command operates on."""

    spec: ArchSpec
    variant: Variant

    @property
    def name(self) -> str:
        """Full registry name, ``<arch>.<variant>``."""
        return f"{self.spec.name}.{self.variant.name}"

    @property
    def size_rule(self) -> SizeRule:
        """The variant's size rule, else the architecture's."""
        return self.variant.size_rule or self.spec.size_rule

    @property
    def overlap(self) -> int:
        return self.spec.default_overlap if self.variant.overlap is None else self.variant.overlap

    def build(self, **overrides: Any):
        """Construct the PyTorch module with randomly initialised weights (imports torch).

        ``overrides`` replace entries of the variant's configuration (tests use this for tiny
        configurations built through the same code path).
        """
        module_name, _, attr = self.spec.build.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**{**self.variant.config, **overrides})

"""Restore one image with a backend, as its manifest says: tile plan, batching, pixel conventions,
gray-model-on-colour handling and the NaN/Inf check. Frames of a video reuse the same plan."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from restorekit.errors import InputError, ManifestError, TileSizeError
from restorekit.manifest import Manifest
from restorekit.runtime.backend import Backend
from restorekit.runtime.pixels import (
    gray_from_rgb,
    luma_chroma,
    output_to_image,
    quantize,
    recombine_luma,
    to_model_input,
    to_unit_output,
    with_alpha,
)
from restorekit.runtime.tiling import (
    NonFiniteTile,
    TileBatch,
    TiledResult,
    TileGuard,
    TilePlan,
    check_tile_multiple,
    plan_tiles,
    round_up,
    run_tiled,
    tile_batches,
)


@dataclass(frozen=True)
class TileOptions:
    """User overrides of the manifest's tiling. ``None`` fields take the manifest's value.

    Attributes:
        tile: tile (height, width); must equal a static engine's shape.
        overlap: overlap in input pixels.
        batch: tiles per inference call; must equal a static engine's batch.
    """

    tile: tuple[int, int] | None = None
    overlap: int | None = None
    batch: int | None = None


@dataclass
class Restored:
    """A restored image (same dtype and channel count as the input) and what went wrong in it:
    tiles whose output stayed NaN/Inf (written as 0) and tiles the fallback computed again."""

    image: np.ndarray
    nonfinite: list[NonFiniteTile] = field(default_factory=list)
    tiles: int = 0
    repaired: list[NonFiniteTile] = field(default_factory=list)


def plan_for(
    manifest: Manifest,
    shape: tuple[int, int],
    tile: tuple[int, int] | None,
    overlap: int | None = None,
) -> TilePlan:
    """The tile plan the runtime uses for an image of (height, width) ``shape``.

    Args:
        manifest: the artifact's manifest (overlap, blend, scale, size multiple, safe area).
        shape: the image's (height, width).
        tile: the tile the artifact runs; ``None`` for a dynamic graph run on the whole image,
            padded to the size multiple.
        overlap: a user's overlap (checked against the tile); ``None``: the manifest's.

    Raises:
        TileSizeError: the whole image exceeds the safe tile area, or the overlap is too large.
    """
    m = manifest
    if tile is None:
        # Dynamic graph and no tile asked for: one pass over the image padded to multiple_of.
        whole = (round_up(shape[0], m.multiple_of), round_up(shape[1], m.multiple_of))
        if m.max_tile_area is not None and whole[0] * whole[1] > m.max_tile_area:
            raise TileSizeError(
                f"a {shape[0]}x{shape[1]} image in one pass exceeds {m.model}'s safe tile area "
                f"of {m.max_tile_area} px (attention memory grows with the square of the "
                "area); pass --tile, e.g. --tile 256"
            )
        return plan_tiles(shape, whole, 0, scale=m.scale, blend=m.blend, margin=0)
    wanted = m.overlap if overlap is None else overlap
    fitted = min(wanted, min(tile) // 2) if m.blend == "feather" else wanted
    if overlap is not None and fitted != overlap:
        raise TileSizeError(
            f"overlap {overlap} is more than half the tile {tile[0]}x{tile[1]}; "
            "choose a smaller --overlap"
        )
    return plan_tiles(shape, tuple(tile), fitted, scale=m.scale, blend=m.blend)


def input_batches(
    image: np.ndarray,
    manifest: Manifest,
    plan: TilePlan,
    *,
    batch: int = 1,
    pad_batch: bool = True,
    dtype: np.dtype | type = np.float32,
) -> Iterator[TileBatch]:
    """The tiles of an image, batched, in the model's input convention (channels, colour order,
    value range), as the runtime feeds them to the model.

    Raises:
        InputError: unsupported image shape or dtype.
    """
    image = _check_image(image)
    hwc = image[:, :, None] if image.ndim == 2 else image
    spec = manifest.input
    return tile_batches(
        hwc,
        plan,
        batch=batch,
        pad_batch=pad_batch,
        prepare=lambda tile, out: to_model_input(tile, spec, out),
        channels=spec.channels,
        dtype=dtype,
    )


class Restorer:
    """Drives an open backend over images, following the artifact's manifest.

    Args:
        backend: an open :class:`Backend` (the restorer never asks which kind).
        manifest: the artifact's manifest.
        options: tile/overlap/batch overrides.
        fallback: an open backend of a trusted (FP32) artifact of the same model and tile: a
            tile whose output is NaN/Inf or far outside the value range (:class:`TileGuard`) is
            computed again there and replaced.

    Raises:
        ManifestError: the manifest contradicts the artifact (tile shape, channels), or the
            fallback does not take the primary's tiles.
        TileSizeError: an override does not fit the artifact.
    """

    def __init__(
        self,
        backend: Backend,
        manifest: Manifest,
        options: TileOptions | None = None,
        fallback: Backend | None = None,
    ):
        self.backend = backend
        self.manifest = manifest
        self.options = options or TileOptions()
        self.fallback = fallback
        spec = backend.input_spec
        if len(spec.shape) != 4:
            raise ManifestError(f"input '{spec.name}' has shape {spec.shape}; expected NCHW")
        channels, h, w = spec.shape[1:]
        if channels is not None and channels != manifest.input.channels:
            raise ManifestError(
                f"the artifact takes {channels} channels, its manifest says "
                f"{manifest.input.channels}; the manifest belongs to another artifact"
            )
        self.static_tile = (h, w) if h is not None and w is not None else None
        if self.static_tile is not None:
            if manifest.tile is not None and tuple(manifest.tile) != self.static_tile:
                raise ManifestError(
                    f"the artifact's tile is {h}x{w} but its manifest says "
                    f"{manifest.tile[0]}x{manifest.tile[1]}; the manifest belongs to another artifact"
                )
            if self.options.tile is not None and tuple(self.options.tile) != self.static_tile:
                raise TileSizeError(
                    f"this artifact was exported for {h}x{w} tiles only; use --tile {h}x{w} or "
                    "export another tile shape"
                )
        elif self.options.tile is not None:
            check_tile_multiple(self.options.tile, manifest.multiple_of, manifest.model)
        self.batch, self.pad_batch = self._batch(spec.static_batch)
        self._plans: dict[tuple[int, int], TilePlan] = {}

    def _batch(self, static: int | None) -> tuple[int, bool]:
        want = self.options.batch
        if static is not None:
            if want is not None and want != static:
                raise TileSizeError(
                    f"this artifact runs batches of exactly {static}; use --batch {static} "
                    "or export another batch size"
                )
            return static, True
        rng = self.manifest.batch
        batch = rng.opt if want is None else want
        if batch < 1 or batch < rng.min or batch > rng.max:
            raise TileSizeError(
                f"batch {batch} is outside the artifact's range {rng.min}..{rng.max}"
            )
        # A short last batch is fine for a dynamic batch, unless it is below the profile minimum.
        return batch, rng.min > 1

    def plan(self, shape: tuple[int, int]) -> TilePlan:
        """The tile plan for an image of (height, width) (cached per shape)."""
        plan = self._plans.get(shape)
        if plan is None:
            plan = self._make_plan(shape)
            self._plans[shape] = plan
        return plan

    def _make_plan(self, shape: tuple[int, int]) -> TilePlan:
        return plan_for(
            self.manifest, shape, self.static_tile or self.options.tile, self.options.overlap
        )

    def infer_image(
        self,
        image: np.ndarray,
        on_tiles: Callable[[int], None] | None = None,
        *,
        keep_nonfinite: bool = False,
        emit: Callable[[slice, np.ndarray], None] | None = None,
    ) -> TiledResult:
        """The blended model output for an image, in the model's own units: (C, H*s, W*s) float32,
        not clamped, before any colour recombination (what ``restore-check`` compares).
        Non-finite tile outputs are reported and zeroed, or with ``keep_nonfinite`` left in.
        With ``emit``, finished rows are handed over as they complete (see :class:`Blender`).

        Raises:
            InputError: unsupported image shape or dtype.
            TileSizeError: the model's output shape does not fit the manifest.
        """
        plan = self.plan(_check_image(image).shape[:2])
        batches = input_batches(
            image,
            self.manifest,
            plan,
            batch=self.batch,
            pad_batch=self.pad_batch,
            dtype=self.backend.input_spec.dtype,  # the engine's, e.g. float16 I/O
        )
        guard = None
        if self.fallback is not None:
            guard = TileGuard.for_range(self._repair, self.manifest.output.value_range)
        return run_tiled(
            plan,
            batches,
            self.backend.infer_many,
            on_batch=on_tiles,
            keep_nonfinite=keep_nonfinite,
            emit=emit,
            guard=guard,
        )

    def _repair(self, tile: np.ndarray) -> np.ndarray:
        """One input tile (C, th, tw) through the fallback, as a batch it accepts."""
        assert self.fallback is not None
        spec = self.fallback.input_spec
        batch = spec.static_batch or 1
        x = np.repeat(tile.astype(spec.dtype)[None], batch, axis=0)
        reason = spec.accepts(x.shape)
        if reason is not None:
            raise ManifestError(
                f"the fallback artifact cannot take this model's tiles ({reason}); give an FP32 "
                "artifact exported with the same tile (restore-export writes one beside every "
                "FP16/INT8 graph)"
            )
        return self.fallback.infer(x)[0]

    def restore(self, image: np.ndarray, on_tiles: Callable[[int], None] | None = None) -> Restored:
        """Restore an RGB (H, W, 3), RGBA (H, W, 4) or gray (H, W) ``uint8``/``uint16`` image.

        Output values are clamped to the image range; a gray model on a colour image restores the
        luma and keeps the input's chroma; a colour model on a gray image returns gray. An alpha
        channel is not restored but carried over (resized with the image for super-resolution).

        Raises:
            InputError: unsupported image shape or dtype.
            TileSizeError: the model's output shape does not fit the manifest.
        """
        alpha = image[:, :, 3] if image.ndim == 3 and image.shape[2] == 4 else None
        restored = self._restore_colour(_check_image(image), on_tiles)
        if alpha is not None:
            restored.image = with_alpha(restored.image, alpha)
        return restored

    def _restore_colour(
        self, image: np.ndarray, on_tiles: Callable[[int], None] | None
    ) -> Restored:
        plan = self.plan(image.shape[:2])
        colour_in = image.ndim == 3
        spec = self.manifest.output
        if spec.channels == (3 if colour_in else 1):
            # The common case: finished rows go straight into the output image, so the float
            # accumulator holds one tile row, not the whole image.
            out_h, out_w = plan.output_shape
            out = np.empty((out_h, out_w, spec.channels), dtype=image.dtype)

            def emit(rows: slice, block: np.ndarray) -> None:
                out[rows] = output_to_image(block, spec, image.dtype)

            result = self.infer_image(image, on_tiles, emit=emit)
            image_out = out if colour_in else out[:, :, 0]
            return Restored(image_out, result.nonfinite, plan.count, result.repaired)
        result = self.infer_image(image, on_tiles)
        unit = to_unit_output(result.output, spec)  # (H, W, C) in [0, 1]
        if unit.shape[2] == 1 and colour_in:
            _, crcb = luma_chroma(image)
            unit = recombine_luma(unit[:, :, 0], crcb)
        elif unit.shape[2] == 3 and not colour_in:
            unit = gray_from_rgb(unit)[:, :, None]
        return Restored(quantize(unit, image.dtype), result.nonfinite, plan.count, result.repaired)


def _check_image(image: np.ndarray) -> np.ndarray:
    """The colour (or gray) part of an image, checked: what the model sees (alpha is dropped)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy image array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported image dtype {image.dtype}; use 8- or 16-bit images")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise InputError(
            f"expected an RGB (H, W, 3), RGBA (H, W, 4) or gray (H, W) image, got shape "
            f"{image.shape}"
        )
    return image

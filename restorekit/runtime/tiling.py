"""Tiled inference: cut an image into tiles of exactly the engine's shape, run them in batches and
blend the overlaps back into one image (numpy only).

Layout of the plan, per axis (the same along height and width):

* The image is virtually padded by reflection (numpy's ``reflect`` mode, repeated for images
  smaller than the padding): ``margin`` pixels before it, so border pixels see context as inner
  pixels do, and enough after it that every tile lies fully inside. Static engines therefore fit
  any image size, including images smaller than one tile. The padding is never materialised:
  each tile gathers its pixels through reflected indices: no padded copy, no list of tiles.
* Tiles start every ``tile - overlap`` pixels, so neighbours share exactly ``overlap`` pixels.
* ``feather`` blending weighs each overlap with complementary linear ramps that are zero over the
  outer quarter of the overlap: a tile's outermost ``overlap // 4`` pixels, the ones a network
  computes from a truncated receptive field, never reach the result, and a network whose
  receptive radius is at most ``overlap // 4`` gives exactly the untiled result. ``average`` (for
  NLRN's densely overlapping patches) weighs every tile pixel 1 and divides by the count.

Cutting and putting back are two pieces: :func:`tile_batches` yields the tiles, batched, in the
model's input convention (calibration takes its tiles from it too), and :class:`Blender` blends
the outputs; :func:`run_tiled` drives a model between them.

The weights are separable and the grid regular, so the sum of weights is the outer product of two
1-D sums: no weight image is kept. Tiles are visited row by row, so output rows above the current
tile row are final: with ``emit`` they leave as soon as they are done and the float accumulator
spans one tile row. Memory is the input, two tile batches, that band and the caller's output.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from restorekit.errors import TileSizeError

BLENDS = ("feather", "average")


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def check_tile_multiple(tile: tuple[int, int], multiple: int, model: str) -> None:
    """Refuse a tile whose sides are not multiples of the model's size multiple.

    Raises:
        TileSizeError: naming the nearest larger tile that fits.
    """
    h, w = tile
    if h % multiple or w % multiple:
        hint = f"{round_up(h, multiple)}x{round_up(w, multiple)}"
        raise TileSizeError(
            f"{model}: tile {h}x{w} is not a multiple of {multiple} in both sides; use e.g. "
            f"--tile {hint}"
        )


@dataclass(frozen=True)
class AxisPlan:
    """Tiling along one axis, in input pixels."""

    length: int  # image length
    tile: int
    overlap: int
    margin: int  # reflected context before the image
    starts: tuple[int, ...]  # tile starts on the padded canvas

    @property
    def canvas(self) -> int:
        return self.starts[-1] + self.tile


def plan_axis(length: int, tile: int, overlap: int, margin: int | None = None) -> AxisPlan:
    """Plan the tiles along one axis.

    Args:
        length: image length in pixels (>= 1).
        tile: tile length the engine takes.
        overlap: pixels shared by neighbouring tiles (< tile).
        margin: reflected context before the image; ``None`` takes ``overlap // 2``.

    Raises:
        TileSizeError: the overlap does not leave a positive stride.
    """
    if length < 1:
        raise TileSizeError(f"image side of {length} pixels cannot be tiled")
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise TileSizeError(
            f"overlap {overlap} must be >= 0 and smaller than the tile side {tile}; "
            "choose a smaller --overlap"
        )
    margin = overlap // 2 if margin is None else margin
    needed = length + 2 * margin  # context on both sides
    stride = tile - overlap
    count = 1 if needed <= tile else -(-(needed - tile) // stride) + 1
    return AxisPlan(length, tile, overlap, margin, tuple(i * stride for i in range(count)))


@dataclass(frozen=True)
class TilePlan:
    """The grid of tiles over one image, and how their outputs are blended."""

    y: AxisPlan
    x: AxisPlan
    scale: int = 1
    blend: str = "feather"

    @property
    def count(self) -> int:
        return len(self.y.starts) * len(self.x.starts)

    @property
    def tile(self) -> tuple[int, int]:
        return self.y.tile, self.x.tile

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.y.length, self.x.length

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.y.length * self.scale, self.x.length * self.scale

    def positions(self) -> Iterator[tuple[int, int]]:
        """Tile starts (y, x) on the padded canvas, row by row."""
        for y0 in self.y.starts:
            for x0 in self.x.starts:
                yield y0, x0


def plan_tiles(
    image_shape: tuple[int, int],
    tile: tuple[int, int],
    overlap: int,
    *,
    scale: int = 1,
    blend: str = "feather",
    margin: int | None = None,
) -> TilePlan:
    """Plan tiles of exactly ``tile`` over an image of ``image_shape`` (height, width).

    Raises:
        TileSizeError: bad overlap for the tile, or feathering with an overlap above half a tile.
    """
    if blend not in BLENDS:
        raise TileSizeError(f"unknown blend {blend!r}; use one of {', '.join(BLENDS)}")
    if blend == "feather" and 2 * overlap > min(tile):
        raise TileSizeError(
            f"overlap {overlap} is more than half the tile {tile[0]}x{tile[1]}; feathered "
            "blending needs overlap <= tile/2: choose a smaller --overlap"
        )
    if scale < 1:
        raise TileSizeError(f"scale must be >= 1, got {scale}")
    return TilePlan(
        plan_axis(image_shape[0], tile[0], overlap, margin),
        plan_axis(image_shape[1], tile[1], overlap, margin),
        scale,
        blend,
    )


def reflect_indices(start: int, count: int, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` for positions ``start .. start+count-1``, reflected at
    both ends without repeating the edge (numpy ``reflect``), repeatedly for short axes."""
    pos = np.arange(start, start + count)
    if length == 1:
        return np.zeros(count, dtype=np.intp)
    period = 2 * (length - 1)
    pos = np.mod(pos, period)
    return np.where(pos >= length, period - pos, pos).astype(np.intp)


def axis_weights(plan: AxisPlan, index: int, scale: int, blend: str) -> np.ndarray:
    """Blend weights of tile ``index`` along one axis, in output pixels."""
    size = plan.tile * scale
    w = np.ones(size, dtype=np.float32)
    if blend == "average" or plan.overlap == 0:
        return w
    span = plan.overlap * scale
    dead = (plan.overlap // 4) * scale  # outermost pixels of each overlap, never used
    ramp = np.clip((np.arange(span) - dead + 0.5) / (span - 2 * dead), 0.0, 1.0).astype(np.float32)
    if index > 0:
        w[:span] *= ramp
    if index < len(plan.starts) - 1:
        w[size - span :] *= ramp[::-1]
    return w


@dataclass(frozen=True)
class NonFiniteTile:
    """A tile whose output held NaN or Inf, in image (input) pixel coordinates."""

    y: int
    x: int
    height: int
    width: int
    count: int

    def describe(self) -> str:
        return (
            f"tile at y={self.y}, x={self.x} ({self.height}x{self.width}) produced "
            f"{self.count} NaN/Inf values"
        )


def describe_tiles(tiles: list[NonFiniteTile], limit: int = 5) -> str:
    """The first ``limit`` tiles, described, and how many more there are."""
    text = "; ".join(t.describe() for t in tiles[:limit])
    return text + (f" (and {len(tiles) - limit} more tiles)" if len(tiles) > limit else "")


@dataclass
class TiledResult:
    """Blended output (C, H*s, W*s) float32 (``None`` when rows were emitted), the tiles whose
    output stayed non-finite, and the tiles a fallback model computed again (see
    :class:`TileGuard`; ``count`` there is the bad values of the first output)."""

    output: np.ndarray | None
    nonfinite: list[NonFiniteTile]
    repaired: list[NonFiniteTile] = field(default_factory=list)


@dataclass(frozen=True)
class TileGuard:
    """Re-runs a tile whose output is not a plausible image on a second, trusted model.

    ``repair`` maps one input tile (C, th, tw) to its output (C', th*s, tw*s), e.g. through an
    FP32 artifact of the same model. A tile's output is implausible when it holds NaN/Inf or
    leaves ``[low, high]``: by default half the value range beyond either end of it. Restoration
    outputs are images: they overshoot the range at sharp edges by a few percent, never by half
    of it, so a value that far out is a numerical failure (an FP16 overflow that stopped short of
    Inf, an INT8 residual clipped at its calibrated range), not a pixel.
    """

    repair: Callable[[np.ndarray], np.ndarray]
    low: float = -math.inf
    high: float = math.inf

    @classmethod
    def for_range(
        cls, repair: Callable[[np.ndarray], np.ndarray], value_range: float, margin: float = 0.5
    ) -> TileGuard:
        return cls(repair, -margin * value_range, (1.0 + margin) * value_range)

    def bad(self, tile_out: np.ndarray) -> np.ndarray:
        """Mask of implausible values."""
        return ~np.isfinite(tile_out) | (tile_out < self.low) | (tile_out > self.high)


@dataclass(frozen=True)
class TileBatch:
    """One batch of tiles as the model takes it.

    ``array`` is (batch, C, th, tw) in the model's dtype, a view of one of two buffers that the
    iterator fills in turn (valid until the batch after next is made); ``members`` are the grid
    positions (tile row, tile column) of its real tiles, in order: a padded last batch has fewer
    members than rows.
    """

    array: np.ndarray
    members: tuple[tuple[int, int], ...]


def _transpose(tile: np.ndarray, out: np.ndarray) -> None:
    out[...] = tile.transpose(2, 0, 1)


def tile_batches(
    image: np.ndarray,
    plan: TilePlan,
    *,
    batch: int = 1,
    pad_batch: bool = True,
    prepare: Callable[[np.ndarray, np.ndarray], None] | None = None,
    channels: int | None = None,
    dtype: np.dtype | type = np.float32,
) -> Iterator[TileBatch]:
    """The tiles of ``image`` as the plan cuts them, row by row, in batches.

    Args:
        image: (H, W, C) array (any dtype ``prepare`` understands).
        plan: from :func:`plan_tiles` for this image's (H, W).
        batch: tiles per batch.
        pad_batch: fill a short last batch up to ``batch`` by repeating its last tile (static-batch
            engines); otherwise the last batch is shorter.
        prepare: writes a (th, tw, C) tile into the model's (C', th, tw) input slot ``out`` (a view
            into the batch, so no per-tile allocation); default: a plain transpose.
        channels: C' (default: the image's channel count).
        dtype: the model input's dtype (the engine's, e.g. float16).

    Raises:
        TileSizeError: the image does not match the plan.
    """
    if image.ndim != 3 or image.shape[:2] != plan.image_shape:
        raise TileSizeError(
            f"image of shape {image.shape} does not fit a plan for {plan.image_shape}"
        )
    prepare = prepare or _transpose
    th, tw = plan.tile
    # Interior tiles are plain slices (no copy until prepare); only edge tiles gather through
    # reflected indices.
    gather_y = [_gather(y0 - plan.y.margin, th, plan.y.length) for y0 in plan.y.starts]
    gather_x = [_gather(x0 - plan.x.margin, tw, plan.x.length) for x0 in plan.x.starts]
    grid = [(i, j) for i in range(len(plan.y.starts)) for j in range(len(plan.x.starts))]
    # Two batch buffers, used in turn: a backend may still hold one (TensorRT copies it while the
    # next is filled). Memory holds these, never all tiles.
    depth = channels or image.shape[2]
    buffers = [np.empty((batch, depth, th, tw), dtype=dtype) for _ in range(2)]
    for number, first in enumerate(range(0, len(grid), batch)):
        members = tuple(grid[first : first + batch])
        buf = buffers[number % 2]
        for k, (i, j) in enumerate(members):
            gy, gx = gather_y[i], gather_x[j]
            if not isinstance(gy, slice) and not isinstance(gx, slice):
                gy, gx = gy[:, None], gx[None, :]  # both reflected: an outer index
            prepare(image[gy, gx], buf[k])
        if pad_batch:
            buf[len(members) :] = buf[len(members) - 1]
        yield TileBatch(buf if pad_batch else buf[: len(members)], members)


class Blender:
    """Puts tile outputs back into one image: weights, NaN/Inf bookkeeping, finished rows.

    Feed it each batch's output with :meth:`add` in the order :func:`tile_batches` made them,
    then call :meth:`finish`. With ``emit``, finished output rows leave as soon as they are done,
    as ``(rows, block)``, top to bottom, where ``block`` is a (C', n, W*s) view valid only during
    the call (the caller may modify it); the accumulator then holds one tile row, not the image,
    and the result's ``output`` is ``None``. Without ``emit`` the whole output is returned.

    Args:
        plan: the plan the tiles were cut by.
        keep_nonfinite: leave NaN/Inf of a tile in the blend (accuracy checks count them); by
            default they are replaced by 0 after being recorded.
        emit: receives finished rows (see above).
        guard: re-run implausible tiles on a fallback model (:class:`TileGuard`); the input
            tiles must still be in their batch when its output is added (as
            :func:`tile_batches` keeps them until the batch after next).
    """

    def __init__(
        self,
        plan: TilePlan,
        *,
        keep_nonfinite: bool = False,
        emit: Callable[[slice, np.ndarray], None] | None = None,
        guard: TileGuard | None = None,
    ) -> None:
        self.plan = plan
        self.keep_nonfinite = keep_nonfinite
        self.emit = emit
        self.guard = guard
        self.repaired: list[NonFiniteTile] = []
        s = plan.scale
        out_h, out_w = plan.output_shape
        self.wy = [axis_weights(plan.y, i, s, plan.blend) for i in range(len(plan.y.starts))]
        self.wx = [axis_weights(plan.x, j, s, plan.blend) for j in range(len(plan.x.starts))]
        # Output rows a tile covers, clipped to the image: (dest slice, source slice).
        self.rows = [_clip(y0, plan.y, s) for y0 in plan.y.starts]
        self.cols = [_clip(x0, plan.x, s) for x0 in plan.x.starts]
        self.wsum_y = np.zeros(out_h, dtype=np.float64)
        self.wsum_x = np.zeros(out_w, dtype=np.float64)
        for i in range(len(self.rows)):
            self.wsum_y[self.rows[i][0]] += self.wy[i][self.rows[i][1]]
        for j in range(len(self.cols)):
            self.wsum_x[self.cols[j][0]] += self.wx[j][self.cols[j][1]]
        self.ones_y = [bool(np.all(w == 1.0)) for w in self.wy]
        self.ones_x = [bool(np.all(w == 1.0)) for w in self.wx]
        self.nonfinite: list[NonFiniteTile] = []
        self._band: _RowBand | None = None  # allocated once the output channel count is known
        self._full: np.ndarray | None = None

    def add(self, out: np.ndarray, tiles: TileBatch) -> None:
        """Blend the output (N, C', th*s, tw*s) of one batch of ``tiles``.

        Raises:
            TileSizeError: the model returned the wrong shape for the plan.
        """
        plan, s = self.plan, self.plan.scale
        th, tw = plan.tile
        n = tiles.array.shape[0]
        if out.ndim != 4 or out.shape[0] != n or out.shape[2:] != (th * s, tw * s):
            raise TileSizeError(
                f"the model returned shape {out.shape} for a batch of {n} {th}x{tw} tiles; "
                f"expected ({n}, C, {th * s}, {tw * s}) for scale {s}: the manifest's scale "
                "or tile does not match the artifact"
            )
        if self._band is None:
            out_h, out_w = plan.output_shape
            if self.emit is None:
                self._full = np.empty((out.shape[1], out_h, out_w), dtype=np.float32)
            sink = self.emit or _writer(self._full)
            self._band = _RowBand(out.shape[1], th * s, out_w, self.wsum_y, self.wsum_x, sink)
        band = self._band
        # One cheap reduction per batch; the per-tile search runs only when it fails.
        guard = self.guard
        if guard is None:
            batch_ok = bool(np.isfinite(out.sum()))
        else:
            low, high = float(out.min()), float(out.max())  # NaN compares False: not ok
            batch_ok = guard.low <= low and high <= guard.high
        for k, (i, j) in enumerate(tiles.members):
            tile_out = out[k]
            bad = None
            if not batch_ok:
                bad = ~np.isfinite(tile_out) if guard is None else guard.bad(tile_out)
            if bad is not None and bad.any():
                where = NonFiniteTile(
                    plan.y.starts[i] - plan.y.margin,
                    plan.x.starts[j] - plan.x.margin,
                    th,
                    tw,
                    int(bad.sum()),
                )
                if guard is not None:
                    again = np.asarray(guard.repair(tiles.array[k]), dtype=np.float32)
                    if not guard.bad(again).any():
                        self.repaired.append(where)
                        tile_out, bad = again, None
                if bad is not None:
                    self.nonfinite.append(where)
                    if not self.keep_nonfinite:
                        tile_out = np.where(bad, 0.0, tile_out).astype(np.float32)
            (dy, sy), (dx, sx) = self.rows[i], self.cols[j]
            # Rows above this tile row's top are final once the tile row begins.
            band.advance(dy.start)
            part = tile_out[:, sy, sx]
            if not (self.ones_y[i] and self.ones_x[j]):
                part = part * (self.wy[i][sy][:, None] * self.wx[j][sx][None, :])
            band.add(dy, dx, part)

    def finish(self) -> TiledResult:
        """Emit the last rows and return the result."""
        assert self._band is not None, "no tile was blended"
        self._band.advance(self.plan.output_shape[0])
        return TiledResult(self._full, self.nonfinite, self.repaired)


def run_tiled(
    plan: TilePlan,
    batches: Iterable[TileBatch],
    infer_many: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]],
    *,
    on_batch: Callable[[int], None] | None = None,
    keep_nonfinite: bool = False,
    emit: Callable[[slice, np.ndarray], None] | None = None,
    guard: TileGuard | None = None,
) -> TiledResult:
    """Run tile batches through a model and blend the outputs (see :class:`Blender`).

    Args:
        plan: the plan ``batches`` were cut by (:func:`tile_batches`).
        batches: the tile batches, in order.
        infer_many: maps an iterable of (N, C, th, tw) arrays to their outputs in order
            (:meth:`Backend.infer_many`, which lets TensorRT overlap copies and compute).
        on_batch: called with the number of real tiles after each batch (progress bars).
        keep_nonfinite, emit, guard: as for :class:`Blender`.

    Raises:
        TileSizeError: the model returned the wrong shape.
    """
    blender = Blender(plan, keep_nonfinite=keep_nonfinite, emit=emit, guard=guard)
    pending: deque[TileBatch] = deque()

    def arrays() -> Iterator[np.ndarray]:
        for tiles in batches:
            pending.append(tiles)
            yield tiles.array

    for out in infer_many(arrays()):
        tiles = pending.popleft()
        blender.add(out, tiles)
        if on_batch is not None:
            on_batch(len(tiles.members))
    return blender.finish()


def _writer(full: np.ndarray) -> Callable[[slice, np.ndarray], None]:
    def write(rows: slice, block: np.ndarray) -> None:
        full[:, rows] = block

    return write


class _RowBand:
    """The blend accumulator for the rows one tile row covers; finished rows are normalised by
    the weight sums and handed to ``emit``, then the band moves down."""

    def __init__(
        self,
        channels: int,
        capacity: int,
        width: int,
        wsum_y: np.ndarray,
        wsum_x: np.ndarray,
        emit: Callable[[slice, np.ndarray], None],
    ) -> None:
        self.buf = np.zeros((channels, capacity, width), dtype=np.float32)
        self.top = 0  # output row of buf[:, 0]
        self.emit = emit
        # Feathered ramps sum to one; only averaging (or rounding) leaves sums to divide by.
        self.inv_y = (
            None if np.abs(wsum_y - 1.0).max() <= 1e-6 else (1.0 / wsum_y).astype(np.float32)
        )
        self.inv_x = (
            None if np.abs(wsum_x - 1.0).max() <= 1e-6 else (1.0 / wsum_x).astype(np.float32)
        )

    def add(self, rows: slice, cols: slice, part: np.ndarray) -> None:
        self.buf[:, rows.start - self.top : rows.stop - self.top, cols] += part

    def advance(self, row: int) -> None:
        """Emit every row above ``row``; they receive no more tiles."""
        n = row - self.top
        if n <= 0:
            return
        block = self.buf[:, :n]
        if self.inv_y is not None:
            block *= self.inv_y[self.top : row, None]
        if self.inv_x is not None:
            block *= self.inv_x[None, None, :]
        self.emit(slice(self.top, row), block)
        keep = self.buf.shape[1] - n
        self.buf[:, :keep] = self.buf[:, n:]  # numpy copies overlapping ranges safely
        self.buf[:, keep:] = 0.0
        self.top = row


def _gather(start: int, count: int, length: int) -> slice | np.ndarray:
    """A slice when ``start .. start+count`` lies inside the axis, else reflected indices."""
    if start >= 0 and start + count <= length:
        return slice(start, start + count)
    return reflect_indices(start, count, length)


def _clip(start: int, axis: AxisPlan, scale: int) -> tuple[slice, slice]:
    """Where a tile starting at canvas ``start`` lands in the output, clipped to the image:
    (slice of the output, slice of the tile), in output pixels."""
    lo = (start - axis.margin) * scale
    hi = lo + axis.tile * scale
    top = axis.length * scale
    d0, d1 = max(lo, 0), min(hi, top)
    if d1 <= d0:
        return slice(0, 0), slice(0, 0)
    return slice(d0, d1), slice(d0 - lo, d1 - lo)


def seam_positions(plan: TilePlan) -> tuple[list[int], list[int]]:
    """Output rows and columns where neighbouring tiles meet: the middle of each overlap, in the
    image's output pixels, keeping only those inside the image."""

    def axis(a: AxisPlan) -> list[int]:
        seams = []
        for prev, nxt in zip(a.starts[:-1], a.starts[1:], strict=True):
            mid2 = nxt + prev + a.tile  # twice the overlap middle (start of next + end of prev)
            pos = (mid2 * plan.scale) // 2 - a.margin * plan.scale
            if 0 <= pos < a.length * plan.scale:
                seams.append(pos)
        return seams

    return axis(plan.y), axis(plan.x)


def seam_mask(plan: TilePlan, band: int) -> np.ndarray:
    """(H*s, W*s) boolean mask of output pixels within ``band`` pixels of a tile seam."""
    out_h, out_w = plan.output_shape
    rows, cols = seam_positions(plan)
    near_y = np.zeros(out_h, dtype=bool)
    near_x = np.zeros(out_w, dtype=bool)
    for r in rows:
        near_y[max(r - band, 0) : r + band] = True
    for c in cols:
        near_x[max(c - band, 0) : c + band] = True
    return near_y[:, None] | near_x[None, :]

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

The weights are separable and the grid regular, so the sum of weights is the outer product of two
1-D sums: no weight image is kept. Tiles are visited row by row, so output rows above the current
tile row are final: with ``emit`` they leave as soon as they are done and the float accumulator
spans one tile row. Memory is the input, two tile batches, that band and the caller's output.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from restorekit.errors import TileSizeError

BLENDS = ("feather", "average")


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


@dataclass
class TiledResult:
    """Blended output (C, H*s, W*s) float32 (``None`` when rows were emitted) and the tiles that
    produced non-finite values."""

    output: np.ndarray | None
    nonfinite: list[NonFiniteTile]


def _default_prepare(tile: np.ndarray, out: np.ndarray) -> None:
    out[...] = tile.transpose(2, 0, 1)


def run_tiled(
    image: np.ndarray,
    plan: TilePlan,
    infer: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    infer_many: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]] | None = None,
    batch: int = 1,
    pad_batch: bool = True,
    prepare: Callable[[np.ndarray, np.ndarray], None] | None = None,
    channels: int | None = None,
    dtype: np.dtype | type = np.float32,
    on_batch: Callable[[int], None] | None = None,
    keep_nonfinite: bool = False,
    emit: Callable[[slice, np.ndarray], None] | None = None,
) -> TiledResult:
    """Run ``infer`` over the tiles of ``image`` and blend the outputs.

    Args:
        image: (H, W, C) array (any dtype ``prepare`` understands).
        plan: from :func:`plan_tiles` for this image's (H, W).
        infer: maps a (N, C, th, tw) float32 batch to (N, C', th*s, tw*s).
        infer_many: instead of ``infer``, maps an iterable of batches to their outputs in order
            (:meth:`Backend.infer_many`, which lets TensorRT overlap copies and compute).
        batch: tiles per call.
        pad_batch: fill a short last batch up to ``batch`` by repeating its last tile (static-batch
            engines); otherwise the last call is shorter.
        prepare: writes a (th, tw, C) tile into the model's (C', th, tw) input slot ``out``
            (a view into the batch, so no per-tile allocation); default is a plain transpose.
        channels: C' (default: the image's channel count).
        dtype: the model input's dtype (the engine's, e.g. float16).
        on_batch: called with the number of real tiles after each batch (progress bars).
        keep_nonfinite: leave NaN/Inf of a tile in the blend (accuracy checks count them);
            by default they are replaced by 0 after being recorded in ``nonfinite``.
        emit: receives finished output rows as ``(rows, block)``, top to bottom, where
            ``block`` is a (C', n, W*s) view valid only during the call (the caller may modify
            it). The accumulator then holds one tile row, not the image, and the result's
            ``output`` is ``None``. Without ``emit`` the whole output is returned.

    Raises:
        TileSizeError: the image does not match the plan, or the model returned the wrong shape.
    """
    if image.ndim != 3 or image.shape[:2] != plan.image_shape:
        raise TileSizeError(
            f"image of shape {image.shape} does not fit a plan for {plan.image_shape}"
        )
    prepare = prepare or _default_prepare
    s = plan.scale
    th, tw = plan.tile
    out_h, out_w = plan.output_shape
    band: _RowBand | None = None  # allocated once the output channel count is known
    full: np.ndarray | None = None
    wsum_y = np.zeros(out_h, dtype=np.float64)
    wsum_x = np.zeros(out_w, dtype=np.float64)
    wy = [axis_weights(plan.y, i, s, plan.blend) for i in range(len(plan.y.starts))]
    wx = [axis_weights(plan.x, j, s, plan.blend) for j in range(len(plan.x.starts))]
    # Output rows a tile covers, clipped to the image: (dest slice, source slice).
    rows = [_clip(y0, plan.y, s) for y0 in plan.y.starts]
    cols = [_clip(x0, plan.x, s) for x0 in plan.x.starts]
    for i in range(len(rows)):
        wsum_y[rows[i][0]] += wy[i][rows[i][1]]
    for j in range(len(cols)):
        wsum_x[cols[j][0]] += wx[j][cols[j][1]]
    ones_y = [bool(np.all(w == 1.0)) for w in wy]
    ones_x = [bool(np.all(w == 1.0)) for w in wx]
    nonfinite: list[NonFiniteTile] = []

    # Interior tiles are plain slices (no copy until prepare); only edge tiles gather through
    # reflected indices.
    gather_y = [_gather(y0 - plan.y.margin, th, plan.y.length) for y0 in plan.y.starts]
    gather_x = [_gather(x0 - plan.x.margin, tw, plan.x.length) for x0 in plan.x.starts]
    grid = [(i, j) for i in range(len(plan.y.starts)) for j in range(len(plan.x.starts))]
    pending: deque[list[tuple[int, int]]] = deque()

    # Two batch buffers, used in turn: a backend may still hold one (TensorRT copies it while the
    # next is filled). Memory holds these, never all tiles.
    depth = channels or image.shape[2]
    buffers = [np.empty((batch, depth, th, tw), dtype=dtype) for _ in range(2)]

    def batches() -> Iterator[np.ndarray]:
        for number, first in enumerate(range(0, len(grid), batch)):
            members = grid[first : first + batch]
            buf = buffers[number % 2]
            for k, (i, j) in enumerate(members):
                gy, gx = gather_y[i], gather_x[j]
                if not isinstance(gy, slice) and not isinstance(gx, slice):
                    gy, gx = gy[:, None], gx[None, :]  # both reflected: an outer index
                prepare(image[gy, gx], buf[k])
            if pad_batch:
                buf[len(members) :] = buf[len(members) - 1]
            pending.append(members)
            yield buf if pad_batch else buf[: len(members)]

    if infer_many is None:
        if infer is None:
            raise TypeError("run_tiled needs infer or infer_many")
        infer_many = lambda stream: (infer(b) for b in stream)  # noqa: E731
    for out in infer_many(batches()):
        members = pending.popleft()
        n = batch if pad_batch else len(members)
        if out.ndim != 4 or out.shape[0] != n or out.shape[2:] != (th * s, tw * s):
            raise TileSizeError(
                f"the model returned shape {out.shape} for a batch of {n} {th}x{tw} tiles; "
                f"expected ({n}, C, {th * s}, {tw * s}) for scale {s}: the manifest's scale "
                "or tile does not match the artifact"
            )
        if band is None:
            if emit is None:
                full = np.empty((out.shape[1], out_h, out_w), dtype=np.float32)
            sink = emit or _writer(full)
            band = _RowBand(out.shape[1], th * s, out_w, wsum_y, wsum_x, sink)
        # One cheap reduction per batch; the per-tile search runs only when it fails.
        batch_finite = bool(np.isfinite(out.sum()))
        for k, (i, j) in enumerate(members):
            tile_out = out[k]
            bad = None if batch_finite else ~np.isfinite(tile_out)
            if bad is not None and bad.any():
                nonfinite.append(
                    NonFiniteTile(
                        plan.y.starts[i] - plan.y.margin,
                        plan.x.starts[j] - plan.x.margin,
                        th,
                        tw,
                        int(bad.sum()),
                    )
                )
                if not keep_nonfinite:
                    tile_out = np.where(bad, 0.0, tile_out).astype(np.float32)
            (dy, sy), (dx, sx) = rows[i], cols[j]
            # Rows above this tile row's top are final once the tile row begins.
            band.advance(dy.start)
            part = tile_out[:, sy, sx]
            if not (ones_y[i] and ones_x[j]):
                part = part * (wy[i][sy][:, None] * wx[j][sx][None, :])
            band.add(dy, dx, part)
        if on_batch is not None:
            on_batch(len(members))
    assert band is not None
    band.advance(out_h)
    return TiledResult(full, nonfinite)


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

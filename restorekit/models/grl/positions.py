"""Relative-position tables, indices and shift masks of GRL's attention, computed compactly in-graph.

The official code (ofsoundof/GRL-Image-Restoration, ``models/common/ops.py``) precomputes, per input
size, a relative-position index of ``N1 x N2`` int64 entries and an additive shift mask of
``windows x N1 x N2`` floats for every attention type. Traced to ONNX these become constants: 268 MB
of the 291 MB GRL-T graph at 128x128. Here the same quantities come from a few small tensors:

* the coordinate **table** (log-spaced relative coordinates, ``(2h'-1) x (2w'-1) x 2``) and the
  **index** are built from short ``arange`` vectors by broadcasting;
* a shift **mask** is never a constant: each token's region label is a row label times a column
  label, so "labels differ" factors into a row test and a column test
  (:class:`SeparableMask`), each ``windows x n_rows x n_rows`` booleans. The graph expands them
  to the additive ``windows x N1 x N2`` mask once per forward pass, shared by all blocks.

Two integer zeros keep these small computations from being folded into large constants at the
wrong moment (onnxsim constant-folds everything whose inputs are constants):

* **Position tables and indices** start from :class:`LoadTimeZero`. Traced, it is taken from the
  batch size, so onnxsim leaves the handful of ops that compute the index instead of an
  ``N1 x N2`` constant; after simplification the export replaces it by a constant zero
  (``restorekit.export.simplify.fold_load_time_zeros``). From there the whole relative-position
  bias (coordinate table -> ``CPB_MLP`` -> ``16 * sigmoid`` -> index lookup) depends on
  initializers only: ONNX Runtime folds it when the session is created and TensorRT when the
  engine is built, so no Gather and no MLP run per forward pass, while the file stays compact.
  (Taken from the batch size at run time instead, the lookup was 37% of GRL-T's ONNX Runtime time.)
* **Shift masks** start from :func:`shape_anchor`, also taken from the batch size but left in the
  graph: a mask grows with the tile (``windows x N1 x N2``), so it is built once per forward pass
  and shared by all blocks instead of being held as a constant.

In eager PyTorch both are the Python int 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

# The official table is scaled to [-8, 8] and log-compressed with log2(8) (Swin V2 style).
_TABLE_SPAN = 8
_LOG2_SPAN = math.log2(8)


class LoadTimeZero(nn.Module):
    """An integer zero taken from the batch size, which the export turns into a constant.

    ``batch // (batch + 2)`` is 0 for any batch; traced, it depends on the symbolic batch
    dimension, so graph simplifiers keep what is built from it as computation. (``batch - batch``
    would not do: ONNX shape inference propagates it to a known 0 and onnxsim folds the indices.
    It differs from :func:`shape_anchor`'s expression because the tracer merges identical
    expressions, and the masks' zero must stay a run-time one.) Its nodes carry this module's scope
    (``load_time_zero``), by which ``restorekit.export.simplify.fold_load_time_zeros`` finds it
    after simplification and substitutes a constant zero: what depends on it then depends on
    initializers only, and runtimes fold it once at load (module docstring).
    """

    def forward(self, batch: int | torch.Tensor) -> int | torch.Tensor:
        return batch // (batch + 2)


def shape_anchor(batch: int | torch.Tensor) -> int | torch.Tensor:
    """An integer zero that depends on the runtime batch size (``b // (b + 1)`` is 0 for b >= 0).

    Under tracing ``batch`` is a traced size, so everything built from the anchor stays a small
    computation in the graph instead of being folded into a large constant.
    """
    return batch // (batch + 1)


def _arange(start: int, end: int, anchor: int | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(start, end, dtype=dtype) + anchor


def _log_spaced(coords: torch.Tensor, positive_extent: int) -> torch.Tensor:
    # Same element-wise operations, in the same order, as the official table construction, so the
    # values are bit-identical: divide by the extent, scale to [-8, 8], sign * log2(|t| + 1) / 3.
    # |t| is written sign(t) * t (exact: a product with -1, 0 or 1): OpenVINO (2026.4) drops an
    # Abs whose input was cast from an integer, as these coordinates are (they start from an
    # integer zero), which made log2 of negative numbers and an all-NaN GRL output there
    # (tests/models/test_grl_graph.py has the few-node reproducer).
    t = coords / positive_extent
    t = t * _TABLE_SPAN
    sign = torch.sign(t)
    return sign * torch.log2(sign * t + 1.0) / _LOG2_SPAN


def coords_table(
    window: Sequence[int], down_factor: int, anchor: int | torch.Tensor
) -> torch.Tensor:
    """Log-spaced relative coordinates between a window and its (down-sampled) anchor window.

    Equals the official ``get_relative_coords_table_all(window, [0, 0], down_factor)`` without its
    leading unit dimension: shape ``(wh + ah - 1, ww + aw - 1, 2)`` with ``a = w // down_factor``.
    """
    axes, lengths = [], []
    for w in window:
        a = w // down_factor
        positive = w - 1 - (w - a) // 2
        negative = -(a - 1) - (w - a) // 2
        axes.append(_log_spaced(_arange(negative, positive + 1, anchor, torch.float32), positive))
        lengths.append(positive - negative + 1)
    (rows, cols), (nr, nc) = axes, lengths
    return torch.stack([rows[:, None].expand(nr, nc), cols[None, :].expand(nr, nc)], dim=-1)


def position_index(
    window: Sequence[int], down_factor: int, window_to_anchor: bool, anchor: int | torch.Tensor
) -> torch.Tensor:
    """Index of every (query, key) pair into the flattened coordinate table (int32).

    Equals the official ``get_relative_position_index_simple(window, down_factor,
    window_to_anchor)``: window tokens at (r, c), anchor tokens at (r', c') both counted from 0,
    index = (r - r' + ah - 1) * (ww + aw - 1) + (c - c' + aw - 1) for window -> anchor, and the
    mirrored form for anchor -> window. Shape ``(N1, N2)`` (queries x keys).
    """
    wh, ww = window
    ah, aw = wh // down_factor, ww // down_factor
    row_len = aw + ww - 1
    if window_to_anchor:
        (qh, qw), (kh, kw), (off_h, off_w) = (wh, ww), (ah, aw), (ah - 1, aw - 1)
    else:
        (qh, qw), (kh, kw), (off_h, off_w) = (ah, aw), (wh, ww), (wh - 1, ww - 1)
    qr = _arange(0, qh, anchor, torch.int32)
    qc = _arange(0, qw, anchor, torch.int32)
    kr = _arange(0, kh, anchor, torch.int32)
    kc = _arange(0, kw, anchor, torch.int32)
    dr = qr[:, None, None, None] - kr[None, None, :, None] + off_h
    dc = qc[None, :, None, None] - kc[None, None, None, :] + off_w
    return (dr * row_len + dc).reshape(qh * qw, kh * kw)


def region_labels(length: int, window: int, shift: int) -> list[int]:
    """Label of each position of a cyclically shifted axis: 0, 1 or 2 (official ``_fill_window``).

    The official code assigns labels over the slices ``[0:-window]``, ``[-window:-shift]`` and
    ``[-shift:]`` in that order; Python slice semantics (including ``-0 == 0``) are kept.
    """
    labels = [0] * length
    for label, part in (
        (0, slice(0, -window)),
        (1, slice(-window, -shift)),
        (2, slice(-shift, None)),
    ):
        for i in range(length)[part]:
            labels[i] = label
    return labels


def _windowed_equal(labels_q: list[int], q: int, labels_k: list[int], k: int) -> torch.Tensor:
    lq = torch.tensor(labels_q, dtype=torch.int8).reshape(-1, q)
    lk = torch.tensor(labels_k, dtype=torch.int8).reshape(-1, k)
    return lq[:, :, None] == lk[:, None, :]


@dataclass(frozen=True)
class SeparableMask:
    """The official additive shift mask in factored form.

    The official mask is ``-100`` where the query's and key's region labels differ. A label is
    ``3 * row_label + column_label``, so the mask is ``-100`` unless both the row labels and the
    column labels agree. ``rows[i, a, b]`` says whether query row ``a`` and key row ``b`` of the
    ``i``-th window row share a label; ``cols`` likewise for columns.

    Attributes:
        rows: bool ``(window rows, query rows per window, key rows per window)``.
        cols: bool ``(window columns, query columns per window, key columns per window)``.
    """

    rows: torch.Tensor
    cols: torch.Tensor

    def additive(self, anchor: int | torch.Tensor) -> torch.Tensor:
        """The official mask ``(windows, 1, N1, N2)``: 0 where labels agree, ``-100`` elsewhere.

        Built in the graph from the two small factors (``anchor`` keeps simplifiers from folding
        it into a ``windows x N1 x N2`` constant), once per forward pass, and then shared by every
        block of that attention type: each block adds it with a plain broadcast. Applying the
        factors per block instead (two ``where`` over an 8-d broadcast of the logits) was 18% of
        the demo GRL's ONNX Runtime time (``benchmarks/ort_profile.py``).
        """
        nwr, qr, kr = (int(n) for n in self.rows.shape)
        nwc, qc, kc = (int(n) for n in self.cols.shape)
        # {0, -100} per factor; the mask is 0 only where both are 0. Their sum is 0, -100 or
        # -200, and max(sum, -100) is exactly the official mask. The anchored zero enters first,
        # so the graph stores only the boolean factors. In ONNX Runtime this Add (which has a fast
        # broadcast) and a Max were the fastest of the exact forms tried, ahead of a Min of the two
        # factors and a Where over their boolean AND (benchmarks/README.md, ort_profile.py).
        zero = torch.zeros((), dtype=torch.float32) + anchor
        rows = torch.where(self.rows, zero, zero - 100.0).reshape(nwr, 1, qr, 1, kr, 1)
        cols = torch.where(self.cols, zero, zero - 100.0).reshape(1, nwc, 1, qc, 1, kc)
        both = (rows + cols).reshape(nwr * nwc, 1, qr * qc, kr * kc)
        return torch.clamp_min(both, -100.0)


def shift_mask(
    size: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    down_factor: int = 1,
    window_to_anchor: bool | None = None,
) -> SeparableMask:
    """Shift mask of window attention (``window_to_anchor=None``, official ``calculate_mask``) or
    of anchored stripe attention (official ``calculate_mask_all``).

    Args:
        size: padded feature size (H, W).
        window: window or stripe size (h, w).
        shift: cyclic shift (h, w).
        down_factor: anchor down-sampling factor (stripe attention).
        window_to_anchor: ``True`` for queries in the window and keys in the anchor window,
            ``False`` for the reverse, ``None`` for plain window attention.
    """
    factors = []
    for length, w, s in zip(size, window, shift, strict=True):
        win = region_labels(length, w, s)
        if window_to_anchor is None:
            factors.append(_windowed_equal(win, w, win, w))
            continue
        d = down_factor
        anc = region_labels(length // d, w // d, s // d)
        if window_to_anchor:
            factors.append(_windowed_equal(win, w, anc, w // d))
        else:
            factors.append(_windowed_equal(anc, w // d, win, w))
    return SeparableMask(*factors)

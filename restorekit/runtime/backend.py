"""The one interface every inference backend implements (after Polygraphy's runners).

A backend is opened and closed as a context manager: sessions, engines and device memory are
created on ``__enter__`` and released on ``__exit__``, never at import or construction, so building
a backend object is cheap and cannot fail for lack of a GPU. :meth:`Backend.infer` validates the
batch against what the session or engine declares, then calls the implementation; the tiler only
ever talks to this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from restorekit.errors import InputError, RestoreKitError


@dataclass(frozen=True)
class IOSpec:
    """One input or output tensor as the session/engine declares it.

    ``shape`` holds ``None`` for dynamic dimensions; ``min_shape``/``max_shape`` are the bounds of
    dynamic dimensions where known (a TensorRT optimisation profile), else equal to ``shape`` with
    ``None`` kept.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    min_shape: tuple[int | None, ...] | None = None
    max_shape: tuple[int | None, ...] | None = None

    @property
    def static_batch(self) -> int | None:
        """The batch size when it is fixed, else ``None``."""
        return self.shape[0] if self.shape else None

    def accepts(self, shape: tuple[int, ...]) -> str | None:
        """``None`` if a tensor of ``shape`` fits this spec, else the reason it does not."""
        if len(shape) != len(self.shape):
            return f"expected {len(self.shape)} dimensions, got shape {shape}"
        lo = self.min_shape or (None,) * len(shape)
        hi = self.max_shape or (None,) * len(shape)
        for i, (got, want, a, b) in enumerate(zip(shape, self.shape, lo, hi, strict=True)):
            if want is not None and got != want:
                return (
                    f"dimension {i} is {got}, the model expects {want} (shape {_fmt(self.shape)})"
                )
            if a is not None and got < a or b is not None and got > b:
                return f"dimension {i} is {got}, outside the model's range {a}..{b}"
        return None


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class BackendStateError(RestoreKitError):
    """A backend was used outside its ``with`` block."""


class Backend(abc.ABC):
    """An inference session over one artifact with a single image input and a single output."""

    name: str = "backend"

    def __init__(self) -> None:
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Backend:
        self._activate()
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        self._deactivate()

    @property
    def is_open(self) -> bool:
        return self._open

    # -- what the tiler needs --------------------------------------------------------------------
    # Subclasses set ``_in`` and ``_out`` when they open (or at construction when they know them).
    _in: IOSpec | None = None
    _out: IOSpec | None = None

    @property
    def input_spec(self) -> IOSpec:
        """The image input (N, C, H, W). Valid once the backend is open.

        Raises:
            BackendStateError: the backend is not open.
        """
        if self._in is None:
            raise self._not_open()
        return self._in

    @property
    def output_spec(self) -> IOSpec:
        """The restored output (N, C, H*s, W*s). Valid once the backend is open.

        Raises:
            BackendStateError: the backend is not open.
        """
        if self._out is None:
            raise self._not_open()
        return self._out

    def _not_open(self) -> BackendStateError:
        return BackendStateError(
            f"the {self.name} backend is not open: use it inside `with backend:` (sessions, "
            "engines and GPU memory exist only there)"
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (N, C, H, W) and return the output batch as float32.

        Raises:
            BackendStateError: the backend is not open (use it in a ``with`` block).
            InputError: the batch's shape or dtype does not fit the session or engine.
        """
        out = self._infer(self._validate(batch))
        return out.astype(np.float32, copy=False)

    def infer_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of ``batches`` in order, each float32.

        Backends that can overlap work (TensorRT: copying and computing one batch while the host
        prepares the next) pull the next batch before returning the current output, so the
        caller must not reuse a batch array after handing it over.

        Raises:
            BackendStateError: the backend is not open.
            InputError: a batch does not fit the session or engine.
        """
        for out in self._infer_many(self._validate(b) for b in batches):
            yield out.astype(np.float32, copy=False)

    def _validate(self, batch: np.ndarray) -> np.ndarray:
        if not self._open:
            raise self._not_open()
        spec = self.input_spec
        if not isinstance(batch, np.ndarray):
            raise InputError(f"expected a numpy array batch, got {type(batch).__name__}")
        if batch.dtype != spec.dtype:
            raise InputError(
                f"input '{spec.name}' expects {spec.dtype}, got {batch.dtype}; "
                "convert the batch before calling infer"
            )
        reason = spec.accepts(batch.shape)
        if reason is not None:
            raise InputError(f"input '{spec.name}': {reason}")
        return np.ascontiguousarray(batch)

    # -- implementation --------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None:
        """Create the session/engine and allocate memory."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release everything ``_activate`` created."""

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a validated, contiguous batch."""

    def _infer_many(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Run validated batches in order; the default runs them one by one."""
        for batch in batches:
            yield self._infer(batch)

"""INT8 as a Q/DQ graph: calibrate on real tiles, then quantize as the chosen layout says.

One driver for both INT8 layouts (``restorekit.calibration.layouts``): scales come from
calibration on real tiles (entropy, min-max or percentile), done by ONNX Runtime's static
quantizer; min-max ranges are measured inside the graph first (``_write_min_max``). The layout
decides which nodes compute in INT8, the quantizer options, and the graph edits after. Nodes
named in ``exclude`` stay out of INT8 (the sensitivity search uses this).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from restorekit.calibration.entropy_search import faster_entropy_search
from restorekit.calibration.feeds import CalibrationSet
from restorekit.calibration.layouts import layout_named
from restorekit.calibration.ranges import tensor_min_max
from restorekit.errors import RestoreKitError, require
from restorekit.manifest import INPUT_NAME

METHODS = ("entropy", "minmax", "percentile")
PERCENTILE = 99.99


@dataclass(frozen=True)
class QdqResult:
    model: onnx.ModelProto
    quantized_nodes: tuple[str, ...]  # nodes computing in INT8
    excluded: tuple[str, ...]  # quantizable nodes kept in floating point
    activation_amax: dict[str, float]  # tensor -> amax (scale * 127), for the calibration cache


def quantizable_nodes(
    model: onnx.ModelProto, layout: str = "tensorrt", exclude: Sequence[str] = ()
) -> list[str]:
    """Names of the nodes ``layout`` computes in INT8 when the nodes in ``exclude`` stay float.

    Raises:
        RestoreKitError: unknown layout.
    """
    return layout_named(layout).integer_nodes(model, exclude)


def default_method(layout: str) -> str:
    """The calibration method a layout uses when none is named (entropy for TensorRT, min-max
    for the CPU layout, whose uint8 skip paths lose more to entropy's clipping).

    Raises:
        RestoreKitError: unknown layout.
    """
    return layout_named(layout).default_method


def qdq_from_model(
    model: onnx.ModelProto,
    calibration: CalibrationSet,
    method: str | None = None,
    exclude: Sequence[str] = (),
    layout: str = "tensorrt",
    ranges_file: Path | None = None,
) -> QdqResult:
    """Calibrate ``model`` (FP32, nodes named) on ``calibration`` and return its Q/DQ form.

    ``layout``: ``tensorrt`` (what ``--int8`` writes) or ``ort-cpu`` (see
    ``restorekit.calibration.layouts``). ``method``: ``None`` takes the layout's default.
    ``ranges_file``: where ONNX Runtime keeps the calibrated ranges (ONNX Runtime >= 1.24); a
    second call with the same file skips calibration, e.g. to quantize again with ``exclude``.

    Raises:
        RestoreKitError: unknown method or layout.
    """
    chosen = layout_named(layout)
    method = method or chosen.default_method
    if method not in METHODS:
        raise RestoreKitError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")
    q = require("onnxruntime.quantization", "calibration", "INT8 calibration")
    methods = {
        "entropy": q.CalibrationMethod.Entropy,
        "minmax": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
    }

    class Reader(q.CalibrationDataReader):
        """Calibration tiles, handed out one range at a time (see ``CalibStridedMinMax``)."""

        def __init__(self) -> None:
            self._tiles = list(calibration.batches(1))
            self._pending = iter(self._tiles)

        def __len__(self) -> int:
            return len(self._tiles)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._pending = iter(self._tiles[start_index:end_index])

        def get_next(self):
            batch = next(self._pending, None)
            return None if batch is None else {INPUT_NAME: batch}

    targets = chosen.integer_nodes(model, ())
    integer = chosen.integer_nodes(model, exclude)
    settings = chosen.quantizer_settings(model, integer)
    with tempfile.TemporaryDirectory(prefix="restorekit-qdq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        cache = {}
        own_min_max = method == "minmax"  # see _write_min_max
        if (ranges_file or own_min_max) and "calibration_cache_path" in _parameters(
            q.quantize_static
        ):
            ranges_file = ranges_file or Path(tmp) / "ranges.json"
            if own_min_max and not ranges_file.exists():
                _write_min_max(ranges_file, model, calibration)
            cache["calibration_cache_path"] = str(ranges_file)
        activation = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}[settings.activation]
        with _quiet(), faster_entropy_search(), _calibrating_only(settings.calibrated):
            q.quantize_static(
                str(src),
                str(dst),
                Reader(),
                quant_format=q.QuantFormat.QDQ,
                activation_type=activation,
                weight_type=q.QuantType.QInt8,
                per_channel=True,
                reduce_range=settings.reduce_range,
                op_types_to_quantize=list(settings.op_types),
                nodes_to_quantize=settings.nodes_to_quantize,
                nodes_to_exclude=settings.nodes_to_exclude,
                calibrate_method=methods[method],
                extra_options={
                    "WeightSymmetric": True,
                    "CalibPercentile": PERCENTILE,
                    # Despite its name, this makes every method collect one tile at a time and
                    # merge it into its statistics; otherwise ONNX Runtime holds the activations
                    # of every calibration tile at once (hundreds of GB for MPRNet-deblur).
                    "CalibStridedMinMax": 1,
                    **settings.extra_options,
                },
                **cache,
            )
        result = onnx.load(str(dst))
    amax = chosen.finish(result)
    return QdqResult(
        model=result,
        quantized_nodes=tuple(integer),
        excluded=tuple(n for n in targets if n in set(exclude)),
        activation_amax=amax,
    )


def _write_min_max(path: Path, model: onnx.ModelProto, calibration: CalibrationSet) -> None:
    """Min-max ranges of every float tensor, measured inside the graph, in ONNX Runtime's cache.

    ONNX Runtime's own min-max calibrator appends its reductions after the whole graph and so
    holds every activation of a tile at once: more than 24 GB for MPRNet-deblur at 256x256 in the
    CPU layout, which calibrates every tensor. Ours cost the memory of a forward pass.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        save_tensors_data,
    )

    ranges = tensor_min_max(model, calibration.batches(1))
    data = {name: (np.float32(lo), np.float32(hi)) for name, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


@contextlib.contextmanager
def _calibrating_only(tensors: frozenset[str] | None):
    """Within the block, ONNX Runtime's calibrators measure only ``tensors`` (all: ``None``).

    Its calibrator picks the inputs and outputs of every operator it may quantize; a layout that
    reads fewer names them (``QuantizerSettings.calibrated``). The ranges of the tensors kept are
    the same, and so is the quantized graph (tested).
    """
    from onnxruntime.quantization.calibrate import CalibraterBase

    select = getattr(CalibraterBase, "select_tensors_to_calibrate", None)
    if tensors is None or select is None:
        yield
        return

    def selected(self, model):
        found, value_infos = select(self, model)
        return {t for t in found if t in tensors}, value_infos

    CalibraterBase.select_tensors_to_calibrate = selected
    try:
        yield
    finally:
        CalibraterBase.select_tensors_to_calibrate = select


def _parameters(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


@contextlib.contextmanager
def _quiet():
    """Silence ONNX Runtime's quantizer, which prints progress and a pre-processing hint that
    does not apply (our graphs are already simplified): the export shows its own stages."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)

"""Artifact file names: they carry model, precision and tile shape (and for engines the TensorRT
version and GPU compute capability), so caches and copies never mix up incompatible files."""

from __future__ import annotations


def tile_label(tile: tuple[int, int] | None) -> str:
    """``(256, 320)`` -> ``"256x320"``; ``None`` (dynamic height/width) -> ``"dynamic"``."""
    return "dynamic" if tile is None else f"{tile[0]}x{tile[1]}"


def precision_label(precision: str, layout: str = "") -> str:
    """The precision as file names carry it: ``int8cpu`` for the ONNX Runtime CPU INT8 layout."""
    return "int8cpu" if precision == "int8" and layout == "ort-cpu" else precision


def artifact_stem(model: str, precision: str, tile: tuple[int, int] | None) -> str:
    """``mprnet.deblur``, ``fp16``, ``(256, 256)`` -> ``mprnet.deblur.fp16.256x256``."""
    return f"{model}.{precision}.{tile_label(tile)}"


def onnx_name(model: str, precision: str, tile: tuple[int, int] | None) -> str:
    return artifact_stem(model, precision, tile) + ".onnx"


def report_name(model: str, precision: str, tile: tuple[int, int] | None) -> str:
    return artifact_stem(model, precision, tile) + ".report.json"


def engine_name(
    model: str, precision: str, tile: tuple[int, int] | None, trt_version: str, compute: str
) -> str:
    """``...fp16.256x256.trt10.3.0.sm87.engine``; ``compute`` is ``"8.7"``."""
    sm = "sm" + compute.replace(".", "")
    return f"{artifact_stem(model, precision, tile)}.trt{trt_version}.{sm}.engine"

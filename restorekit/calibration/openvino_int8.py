"""OpenVINO's own INT8 for an FP32 artifact: NNCF post-training quantization, made once, kept beside.

The same calibration tiles as restorekit's Q/DQ INT8 (:func:`feeds_from_images`: the runtime's own
tile plan on real photos), the same gate (PSNR against FP32, 35 dB by default), and when the first
pass misses it, a search that keeps the most sensitive layers in float: NNCF's accuracy-aware
quantization ranks the quantized layers by how much each costs our metric (PSNR of the output
against ONNX Runtime's FP32 output) and returns them to float until the gate holds, at most
``max_fraction`` of them, like the Q/DQ search. Nothing is written unless the gate holds.

Weights are quantized to 7 bits (NNCF's overflow fix on every layer): on x86 CPUs without VNNI the
u8 x s8 kernels sum pairs of products in 16 bits, which full-range 8-bit weights saturate (a
two-node reproducer: tests/runtime/test_openvino_int8_saturation.py). A model made on a VNNI CPU
may be copied to one without, so every model uses 7-bit weights, as the ``ort-cpu`` Q/DQ layout
does.

The reference is ONNX Runtime's FP32 output (PyTorch is not needed, so this runs where the
artifact is deployed); the FP32 ONNX was itself verified against PyTorch at export.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.calibration.feeds import feeds_from_images
from restorekit.data import sample_paths
from restorekit.errors import ManifestError, VerificationError, require
from restorekit.files import file_sha256, write_text_atomic
from restorekit.manifest import read_manifest
from restorekit.metrics import rounded_db
from restorekit.runtime.admission import GATES, compare, tiles_for_pixels
from restorekit.runtime.openvino_backend import ov_int8_path

# The gate is judged on tiles drawn a seed apart from the calibration draw, at least EVAL_TILES
# and enough to hold EVAL_PIXELS: four 32x32 tiles of the demo NLRN once passed the gate at 36.9 dB
# while 8 tiles of the same photos scored 32 dB and 64 tiles 29 dB, and restored noisy photos lost
# 1.9 dB.
EVAL_TILES = 4
EVAL_PIXELS = 4 * 256 * 256
EVAL_MAX_TILES = 96  # the search scores every candidate on them: small tiles cost per call


def evaluation_tile_count(tile: tuple[int, int] | None) -> int:
    """Tiles the gate is judged on for this tile size (see ``EVAL_PIXELS``)."""
    return min(EVAL_MAX_TILES, tiles_for_pixels(tile or (256, 256), EVAL_PIXELS, EVAL_TILES))


@dataclass(frozen=True)
class OvInt8Result:
    """The written model (``.xml`` with its ``.bin``) and its record (``<xml>.json``)."""

    path: Path
    record: dict[str, Any]


def record_path(xml: Path) -> Path:
    """``x.ov-int8.xml`` -> ``x.ov-int8.xml.json``."""
    return xml.with_name(xml.name + ".json")


def read_ov_int8_record(xml: Path) -> dict[str, Any] | None:
    """The record of an OpenVINO INT8 model, or ``None`` if it has none (or an unreadable one)."""
    try:
        return json.loads(record_path(xml).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ov_int8_from_onnx(
    artifact: str | Path,
    calib: str | Path | Sequence[Path] | None = None,
    count: int = 32,
    min_psnr: float | None = None,
    max_fraction: float = 0.25,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> OvInt8Result:
    """Quantize an FP32 ONNX artifact with NNCF and save it beside as ``<stem>.ov-int8.xml``.

    Args:
        artifact: the FP32 ``.onnx`` with its manifest.
        calib: calibration photos (folder or files); default: the shipped sample photos.
        count: calibration tiles.
        min_psnr: PSNR gate against FP32 (dB); default: the INT8 gate (35 dB).
        max_fraction: largest fraction of quantized layers the search may return to float.
        seed: seed of the tile draws.
        threads: OpenVINO threads for the evaluations.
        progress: called with a line per step.

    Raises:
        ManifestError: not an FP32 ONNX artifact.
        InputError: no usable calibration images.
        VerificationError: the INT8 model misses the gate even after the search (nothing
            is written).
        MissingDependencyError: OpenVINO or NNCF is missing.
    """
    say = progress or (lambda _line: None)
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if manifest.precision.precision != "fp32":
        raise ManifestError(
            f"{artifact.name} is {manifest.precision.precision}; OpenVINO's INT8 is made from "
            "the FP32 ONNX (restore-export writes it beside every FP16/INT8 graph)"
        )
    ov = require("openvino", "openvino", "OpenVINO INT8")
    nncf = require("nncf", "openvino", "OpenVINO INT8 (NNCF post-training quantization)")
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    gate = GATES["int8"].min_psnr if min_psnr is None else min_psnr
    started = time.perf_counter()
    calibration = feeds_from_images(calib or sample_paths(), manifest, count, seed)
    evaluation = feeds_from_images(sample_paths(), manifest,
                                   evaluation_tile_count(manifest.tile), seed + 1).tiles  # fmt: skip
    reference = _ort_outputs(artifact, evaluation)
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads

    def psnr_of(compiled: Any) -> float:
        request = compiled.create_infer_request()
        outs = []
        for tile in evaluation:
            request.infer({0: tile[None]})
            outs.append(request.get_output_tensor(0).data[0].copy())
        figures = compare(np.stack(outs), reference, manifest.output.value_range)
        # NaN/Inf fail the gate outright; NNCF compares plain numbers.
        return -1.0 if figures.nonfinite else min(float(figures.psnr), 200.0)

    def compiled(model: Any, what: str) -> Any:
        try:
            return core.compile_model(model, "CPU", config)
        except RuntimeError as exc:  # OpenVINO raises its own errors as RuntimeError
            raise _cannot_compile(manifest.model, what, artifact.name, exc) from exc

    fp32 = core.read_model(str(artifact))
    fp32_score = psnr_of(compiled(fp32, "the FP32 graph"))
    if fp32_score < 100.0:
        # Quantizing cannot repair a graph OpenVINO already computes wrongly in FP32.
        raise VerificationError(
            f"{manifest.model}: OpenVINO's FP32 output of {artifact.name} already differs from "
            "ONNX Runtime's (NaN/Inf or beyond float rounding), so no OpenVINO INT8 is made; "
            "use --backend ort"
        )
    dataset = nncf.Dataset(list(calibration.batches(1)))
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    say(f"calibrating with NNCF ({calibration.count} tiles, 7-bit weights)")
    quantized = nncf.quantize(
        fp32, dataset, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=calibration.count,
        advanced_parameters=advanced,
    )  # fmt: skip
    got = psnr_of(compiled(quantized, "NNCF's INT8 model"))
    layers = _weighted_layers(fp32)
    first_quantized = _quantized_layers(quantized)
    search: dict[str, Any] = {"first_pass_psnr": rounded_db(got), "layers": len(layers),
                              "first_pass_quantized_layers": first_quantized}  # fmt: skip
    # At most this many weighted layers may return to float (as for restorekit's own INT8).
    limit = max(1, int(len(layers) * max_fraction))
    say(f"INT8 {got:.2f} dB against FP32 (gate {gate:g} dB)")
    if got < gate:
        say(f"searching: up to {limit} of {len(layers)} layers may return to float")
        # Metric: PSNR against ONNX Runtime FP32; NNCF measures the drop from OpenVINO's FP32
        # score (float rounding: 120-200 dB, not a constant), so the gate is that score less
        # the allowed drop. (Taking 200 dB for it let a 28.7 dB model through the search
        # untouched: NLRN's OpenVINO FP32 scores 148.7 dB, a drop of 120 looked allowed.)
        try:
            quantized = nncf.quantize_with_accuracy_control(
                fp32, dataset, nncf.Dataset([0]),
                lambda model, _data: psnr_of(model),
                max_drop=fp32_score - gate, drop_type=nncf.DropType.ABSOLUTE,
                preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=calibration.count,
                advanced_quantization_parameters=advanced,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=limit),
            )  # fmt: skip
        except RuntimeError as exc:  # NNCF compiles its candidates itself
            if OPENVINO_ERROR not in str(exc):
                raise
            raise _cannot_compile(manifest.model, "a model of NNCF's search", artifact.name,
                                  exc) from exc  # fmt: skip
        got = psnr_of(compiled(quantized, "NNCF's INT8 model"))
        search["searched"] = True
        search["limit"] = limit
    search["quantized_layers"] = _quantized_layers(quantized)
    returned = first_quantized - search["quantized_layers"]
    if returned > limit:
        # NNCF bounds its search by iterations, each returning a group of operations to float;
        # the bound that matters is on the layers.
        raise VerificationError(
            f"{manifest.model}: OpenVINO INT8 meets {gate:g} dB against FP32 only with {returned} "
            f"of its {len(layers)} weighted layers returned to float (at most "
            f"{max_fraction:.0%} may be); so little of it would run in INT8 that nothing was written. "
            "Use --precision fp32 or bf16, or the ONNX Runtime INT8 CPU layout (restore-export "
            "--int8 --int8-layout ort-cpu)"
        )
    if got < gate:
        raise VerificationError(
            f"{manifest.model}: OpenVINO INT8 reaches {got:.2f} dB against FP32 (gate {gate:g} "
            f"dB) even with the search ({search}); nothing was written. Use --precision fp32, "
            "try more typical calibration photos (--calib DIR), or the ONNX Runtime INT8 CPU "
            "layout (restore-export --int8 --int8-layout ort-cpu)"
        )
    versions = {"openvino": ov.__version__.split("-")[0], "nncf": nncf.__version__}
    record = {
        "source": artifact.name,
        "source_sha256": file_sha256(artifact),
        "model": manifest.model,
        "method": "nncf post-training quantization (performance preset, 7-bit weights)",
        "calibration": {"fingerprint": calibration.fingerprint, "count": calibration.count,
                        "source": calibration.source, "skipped": list(calibration.skipped)},
        "gate": {"min_psnr": gate, "reference": "onnxruntime fp32", "tiles": len(evaluation)},
        "psnr": rounded_db(got),
        "search": search,
        "versions": versions,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    xml = ov_int8_path(artifact)
    _save_atomic(ov, quantized, xml)
    write_text_atomic(record_path(xml), json.dumps(record, indent=2) + "\n")
    say(f"wrote {xml.name} ({rounded_db(got)} dB against FP32)")
    return OvInt8Result(xml, record)


def _ort_outputs(artifact: Path, tiles: np.ndarray) -> np.ndarray:
    from restorekit.runtime.ort_backend import OrtOptions, ort_session

    session = ort_session(artifact, OrtOptions(quiet=True))
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: t[None]})[0] for t in tiles])


def _weighted_layers(model: Any) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul",
                                      "ConvolutionBackpropData")]  # fmt: skip


def _quantized_layers(model: Any) -> int:
    """Weighted layers that read a FakeQuantize (NNCF's quantized activations)."""
    count = 0
    for op in model.get_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul",
                                  "ConvolutionBackpropData"):  # fmt: skip
            sources = (op.input_value(i).get_node() for i in range(op.get_input_size()))
            count += any(src.get_type_name() == "FakeQuantize" for src in sources)
    return count


def _save_atomic(ov: Any, model: Any, xml: Path) -> None:
    """Save ``.xml`` + ``.bin`` to a temporary folder beside them, then rename: ``.bin`` first,
    so an ``.xml`` under the final name always has its weights."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{xml.stem}.", dir=xml.parent) as tmp:
        tmp_xml = Path(tmp) / xml.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        os.replace(tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp_xml, xml)


# How OpenVINO's C++ errors begin once Python sees them ("Exception from src/inference/...").
OPENVINO_ERROR = "Exception from src/"


def _cannot_compile(model: str, what: str, source: str, exc: Exception) -> VerificationError:
    """The refusal when OpenVINO's CPU plugin cannot compile a model made from ``source``.

    OpenVINO's message starts with lines naming its own source files; the first other line is
    the one that says what failed (e.g. which graph transformation threw, on which node).
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    fallback = lines[0] if lines else type(exc).__name__
    reason = next((ln for ln in lines if not ln.startswith("Exception from")), fallback)
    reason = reason if len(reason) <= 300 else reason[:297] + "..."
    return VerificationError(
        f"{model}: OpenVINO cannot compile {what} of {source} ({reason}); no OpenVINO INT8 was "
        "written. Use --precision fp32 (or bf16 where the CPU has it), or the ONNX Runtime INT8 "
        "CPU layout (restore-export --int8 --int8-layout ort-cpu)"
    )

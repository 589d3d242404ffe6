"""``restore-export``'s library function: build -> trace -> simplify -> check -> verify -> write.

Each stage is reported through ``on_stage`` (the CLI turns it into a progress bar). Nothing is
written under the final name unless verification passes; the JSON report is written either way, so
a failed check leaves its figures on disk.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from restorekit import __version__
from restorekit.data import sample_paths
from restorekit.errors import ExportError, VerificationError
from restorekit.export.simplify import check_graph, op_counts, simplify_graph
from restorekit.export.targets import targets_for
from restorekit.export.trace import onnx_from_model
from restorekit.export.verify import OrtSession, VerificationReport, verify_onnx_against_torch
from restorekit.files import file_sha256, write_bytes_atomic, write_text_atomic
from restorekit.manifest import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    BatchRange,
    Manifest,
    PrecisionPlan,
    TensorSpec,
    write_manifest,
)
from restorekit.models.build import BuiltModel, model_from_name
from restorekit.models.registry import ModelRef, resolve
from restorekit.naming import onnx_name, report_name

STAGES = ("build", "trace", "simplify", "check", "verify", "write")


@dataclass(frozen=True)
class ExportOptions:
    """What to export. ``None`` fields take the model's defaults.

    Attributes:
        model: registry name (``mprnet.deblur``) or a resolved :class:`ModelRef`.
        weights: checkpoint file; ``None`` means seeded random weights (said plainly everywhere).
        tile: (height, width) the graph is traced at; default: the variant's tile.
        batch: largest batch the artifact is meant for (the engine profile's max).
        output_dir: folder for the ONNX, its manifest and the report.
        opset: ONNX opset (>= 17: LayerNormalization is native there).
        simplify: run onnxsim.
        dynamic: symbolic height/width; allowed only where a second shape verifies too.
        images: real images for verification; default: the shipped sample photos.
        seed: seed of random weights.
        build_overrides: constructor arguments replacing the variant's (tiny test configs).
    """

    model: str | ModelRef
    weights: Path | None = None
    tile: tuple[int, int] | None = None
    batch: int = 1
    output_dir: Path = Path(".")
    opset: int = 17
    simplify: bool = True
    dynamic: bool = False
    images: tuple[Path, ...] | None = None
    seed: int = 0
    build_overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    manifest: Manifest
    report: VerificationReport
    report_path: Path
    nodes_before: int
    nodes_after: int
    built: BuiltModel


def second_shape(tile: tuple[int, int], multiple_of: int) -> tuple[int, int]:
    """Another valid shape, different in both sides, for the shape-generality check."""
    m = max(multiple_of, 8)
    return tile[0] + 2 * m, tile[1] + m


def export_model(
    options: ExportOptions, on_stage: Callable[[str], None] | None = None
) -> ExportResult:
    """Export one model to a verified FP32 ONNX with its manifest and report.

    Raises:
        UnknownModelError, TileSizeError, WeightsError: bad user input.
        ExportError: tracing or the graph check failed, or ``dynamic`` is not possible.
        VerificationError: ONNX Runtime disagrees with PyTorch beyond float rounding (the report
            with the figures is written beside where the ONNX would have been).
    """
    stage = on_stage or (lambda _name: None)
    ref = resolve(options.model) if isinstance(options.model, str) else options.model
    spec, variant = ref.spec, ref.variant
    tile = tuple(options.tile or variant.default_tile)
    spec.size_rule.check_tile(tile, ref.name)
    if options.batch < 1:
        raise ExportError(f"--batch must be at least 1 (got {options.batch})")
    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old; use 17 or newer")
    if options.dynamic and not spec.size_rule.shape_general:
        raise ExportError(
            f"{ref.name} cannot be exported with dynamic height/width: its graph is only valid at "
            f"the traced shape (per-shape constants). Export one static tile per shape instead "
            f"(drop --dynamic; e.g. --tile {tile[0]}x{tile[1]})."
        )
    images = tuple(options.images) if options.images else tuple(sample_paths()[:4])
    targets = targets_for(spec.name)

    stage("build")
    built = model_from_name(ref, options.weights, options.seed, options.build_overrides)

    stage("trace")
    traced = onnx_from_model(
        built.module, tile, variant.in_channels, spec.output_index, options.opset, options.dynamic
    )

    stage("simplify")
    notes: list[str] = []
    candidate = traced
    nodes_before = nodes_after = len(traced.graph.node)
    if options.simplify:
        simp = simplify_graph(traced)
        nodes_after = simp.nodes_after
        if simp.simplified:
            candidate = simp.model
        else:
            notes.append(f"simplification skipped: {simp.error}")
            warnings.warn(
                f"onnxsim could not simplify the graph ({simp.error}); keeping it as traced",
                stacklevel=2,
            )

    stage("check")
    check_graph(candidate)

    stage("verify")
    shapes = [tile] + ([second_shape(tile, spec.size_rule.multiple_of)] if options.dynamic else [])
    name = onnx_name(ref.name, "fp32", None if options.dynamic else tile)
    report = verify_onnx_against_torch(
        OrtSession(candidate.SerializeToString()), built, images, shapes,
        targets.fp32_max_abs, name,
    )  # fmt: skip
    if not report.passed and candidate is not traced:
        # Only if simplification broke the numbers do we fall back to the traced graph.
        fallback = verify_onnx_against_torch(
            OrtSession(traced.SerializeToString()), built, images, shapes,
            targets.fp32_max_abs, name,
        )  # fmt: skip
        if fallback.passed:
            warnings.warn(
                "the simplified graph failed verification; keeping the unsimplified one",
                stacklevel=2,
            )
            fallback.notes.append("simplified graph failed verification; unsimplified graph kept")
            candidate, report, nodes_after = traced, fallback, nodes_before
    report.notes.extend(notes)
    if built.random:
        report.notes.append(f"weights: {built.weights} - not a trained model")

    out_dir = Path(options.output_dir)
    report_path = out_dir / report_name(ref.name, "fp32", None if options.dynamic else tile)
    report_doc = {
        "model": ref.name,
        "weights": built.weights,
        "nodes": {"traced": nodes_before, "final": nodes_after},
        "op_counts": op_counts(candidate),
        "fp32": report.to_dict(),
    }
    write_text_atomic(report_path, json.dumps(report_doc, indent=2) + "\n")
    if not report.passed:
        w = report.worst
        if options.dynamic and any(
            c.shape != tile and c.figures.max_abs > targets.fp32_max_abs for c in report.comparisons
        ):
            raise VerificationError(
                f"{ref.name}: a graph traced at {tile[0]}x{tile[1]} gives wrong results at "
                f"{shapes[1][0]}x{shapes[1][1]} (max abs {w.max_abs:.3g}): its graph depends on "
                "the traced shape, so dynamic height/width is refused. Export a static tile "
                f"(drop --dynamic). Figures: {report_path}"
            )
        raise VerificationError(
            f"{ref.name}: ONNX Runtime output differs from PyTorch beyond float rounding "
            f"(max abs {w.max_abs:.3g} > {targets.fp32_max_abs:g}, NaN/Inf {w.nonfinite}). "
            f"Nothing was written except the figures: {report_path}\n{report.table()}"
        )

    stage("write")
    w = report.worst
    manifest = Manifest(
        model=ref.name,
        task=variant.task,
        input=TensorSpec(INPUT_NAME, variant.in_channels, color_order=variant.color_order,
                         value_range=variant.value_range),
        output=TensorSpec(OUTPUT_NAME, variant.out_channels, color_order=variant.color_order,
                          value_range=variant.value_range),
        scale=variant.scale,
        multiple_of=spec.size_rule.multiple_of,
        tile=None if options.dynamic else tile,
        batch=BatchRange(1, options.batch, options.batch),
        overlap=ref.overlap,
        blend=spec.blend,
        precision=PrecisionPlan("fp32"),
        opset=options.opset,
        weights=built.weights,
        max_tile_area=spec.size_rule.max_tile_area,
        build_overrides=dict(built.overrides),
        verification={"reference": "pytorch fp32", "max_abs": w.max_abs, "psnr": w.to_dict()["psnr"],
                      "ssim": w.ssim, "nonfinite": w.nonfinite, "images": len(images)},
        restorekit_version=__version__,
    )  # fmt: skip
    onnx_path = out_dir / name
    write_onnx_with_manifest(candidate, onnx_path, manifest)
    manifest = manifest.replace(onnx_sha256=file_sha256(onnx_path))
    write_manifest(onnx_path, manifest)
    return ExportResult(onnx_path, manifest, report, report_path, nodes_before, nodes_after, built)


def write_onnx_with_manifest(model: onnx.ModelProto, path: Path, manifest: Manifest) -> None:
    """Embed ``manifest`` (without its hash) in ``metadata_props`` and write ``path`` atomically."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = manifest.replace(onnx_sha256="").to_json()
    model.producer_name = "restorekit"
    model.producer_version = __version__
    write_bytes_atomic(path, model.SerializeToString())


def export_summary(result: ExportResult) -> Sequence[str]:
    """Lines the CLI prints after a successful export."""
    m = result.manifest
    size_mb = result.onnx_path.stat().st_size / 1e6
    lines = [
        result.report.table(),
        f"nodes: {result.nodes_before} traced -> {result.nodes_after} after simplification",
        f"wrote {result.onnx_path} ({size_mb:.1f} MB), manifest {result.onnx_path.name}.json, "
        f"report {result.report_path.name}",
    ]
    if result.built.random:
        lines.append(
            f"NOTE: {m.model} was exported with RANDOM weights ({m.weights}); pass --weights PATH "
            "with the official checkpoint for a useful model."
        )
    return lines

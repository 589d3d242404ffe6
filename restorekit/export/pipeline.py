"""``restore-export``'s library function: build -> trace -> simplify -> check -> verify -> write,
then, for ``--fp16`` / ``--int8``, calibrate -> lower precision -> verify -> write.

Each stage is reported through ``on_stage`` (the CLI turns it into a progress bar). Nothing is
written under an artifact's final name unless its verification passes; the JSON report is written
either way, so a failed check leaves its figures on disk. A reduced-precision graph that misses its
PSNR target stops the command with the figures: there is no silent fall-back to FP32.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from restorekit import __version__
from restorekit.data import sample_paths
from restorekit.errors import ExportError, VerificationError
from restorekit.export.compare import OrtSession, SessionPool
from restorekit.export.cpu_speed import CpuSpeed, cpu_speed
from restorekit.export.openvino_check import openvino_row
from restorekit.export.simplify import (
    check_graph,
    compact_graph,
    op_counts,
    scalar_prelu_as_leaky_relu,
    simplify_graph,
)
from restorekit.export.stage_times import StageTimer
from restorekit.export.targets import targets_for
from restorekit.export.trace import TRACE_BATCH, onnx_and_outputs, onnx_from_model
from restorekit.export.verify import (
    Criterion,
    ReferenceSet,
    VerificationReport,
    model_inputs,
    reference_set,
    torch_outputs,
    verify_graph,
)
from restorekit.files import file_sha256, write_bytes_atomic, write_text_atomic
from restorekit.manifest import (
    INPUT_NAME,
    INT8_LAYOUTS,
    METADATA_KEY,
    OUTPUT_NAME,
    BatchRange,
    Manifest,
    PrecisionPlan,
    TensorSpec,
    write_manifest,
)
from restorekit.models.build import BuiltModel, model_from_name
from restorekit.models.registry import resolve
from restorekit.models.spec import ModelRef
from restorekit.naming import artifact_stem, onnx_name, precision_label, report_name
from restorekit.tensorrt.onnx_rules import RuleViolation, check_graph_for_tensorrt

PRECISIONS = ("fp32", "fp16", "int8")
FP32_STAGES = ("build", "trace", "simplify", "check", "verify", "write")
LOWER_STAGES = ("calibrate", "lower", "verify lowered", "write lowered")


def stages_for(precision: str) -> tuple[str, ...]:
    """The stage names ``export_model`` reports, in order, for a precision."""
    return FP32_STAGES + (LOWER_STAGES if precision != "fp32" else ())


@dataclass(frozen=True)
class ExportOptions:
    """What to export. ``None`` fields take the model's defaults.

    Attributes:
        model: registry name (``mprnet.deblur``) or a resolved :class:`ModelRef`.
        weights: checkpoint file; ``None`` means the variant's bundled weights if it ships some,
            else seeded random weights (said plainly everywhere).
        tile: (height, width) the graph is traced at; default: the variant's tile.
        batch: largest batch the artifact is meant for (the engine profile's max).
        output_dir: folder for the ONNX files, their manifests and reports.
        opset: ONNX opset (>= 17: LayerNormalization is native there).
        simplify: run onnxsim.
        dynamic: symbolic height/width; allowed only where a second shape verifies too.
        images: real images for verification; default: the shipped sample photos.
        seed: seed of random weights.
        build_overrides: constructor arguments replacing the variant's (tiny test configs).
        precision: ``fp32``, ``fp16`` or ``int8`` (the FP32 graph is always written too).
        calib: folder of calibration photos; default: the shipped sample photos.
        calib_method: ``entropy``, ``minmax`` or ``percentile`` (INT8); default: the layout's
            (entropy for ``tensorrt``, min-max for ``ort-cpu``).
        calib_count: number of calibration tiles.
        min_psnr: PSNR target against PyTorch FP32; default: the per-model table.
        int8_max_excluded: largest fraction of layers the INT8 search may keep in float.
        tensorrt_version: the TensorRT the graphs are for: its rules are checked on every graph
            written for TensorRT, and it heads the INT8 calibration cache.
        int8_layout: ``tensorrt`` (default; engines) or ``ort-cpu`` (ONNX Runtime on a CPU runs
            it in integer; no engine, no calibration cache).
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
    precision: str = "fp32"
    calib: Path | None = None
    calib_method: str | None = None
    calib_count: int = 32
    min_psnr: float | None = None
    int8_max_excluded: float = 0.25
    tensorrt_version: str = "10.3.0"
    int8_layout: str = "tensorrt"


@dataclass(frozen=True)
class Artifact:
    """One written ONNX with its manifest, verification and TensorRT rule check (``None``: not a
    graph for TensorRT, the INT8 CPU layout)."""

    onnx_path: Path
    manifest: Manifest
    report: VerificationReport
    nodes: int
    tensorrt_rules: tuple[RuleViolation, ...] | None = None


@dataclass(frozen=True)
class ExportResult:
    """The FP32 artifact, and the reduced-precision one when asked for (then ``onnx_path``)."""

    fp32: Artifact
    lowered: Artifact | None
    report_path: Path
    nodes_before: int
    built: BuiltModel
    notes: tuple[str, ...] = ()
    cpu_speed: CpuSpeed | None = None  # INT8 CPU layout: both graphs timed on this CPU
    tensorrt_version: str = "10.3.0"  # whose published parser rules the graphs were checked by
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # wall time per stage

    @property
    def main(self) -> Artifact:
        return self.lowered or self.fp32

    @property
    def onnx_path(self) -> Path:
        return self.main.onnx_path

    @property
    def manifest(self) -> Manifest:
        return self.main.manifest

    @property
    def report(self) -> VerificationReport:
        return self.main.report

    @property
    def nodes_after(self) -> int:
        return self.fp32.nodes


def second_shape(tile: tuple[int, int], multiple_of: int) -> tuple[int, int]:
    """Another valid shape, different in both sides, for the shape-generality check."""
    m = max(multiple_of, 8)
    return tile[0] + 2 * m, tile[1] + m


def _check_options(options: ExportOptions, ref: ModelRef, tile: tuple[int, int]) -> None:
    ref.size_rule.check_tile(tile, ref.name)
    if options.batch < 1:
        raise ExportError(f"--batch must be at least 1 (got {options.batch})")
    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old; use 17 or newer")
    if options.precision not in PRECISIONS:
        raise ExportError(f"unknown precision {options.precision!r}; use one of {PRECISIONS}")
    if options.int8_layout not in INT8_LAYOUTS:
        raise ExportError(f"unknown INT8 layout {options.int8_layout!r}; use one of {INT8_LAYOUTS}")
    if options.int8_layout != "tensorrt" and options.precision != "int8":
        raise ExportError("--int8-layout applies to --int8 exports only; add --int8")
    if options.precision != "fp32" and options.dynamic:
        raise ExportError(
            "--fp16/--int8 graphs are calibrated and verified at one tile shape; drop --dynamic"
        )
    if options.dynamic and not ref.size_rule.shape_general:
        raise ExportError(
            f"{ref.name} cannot be exported with dynamic height/width: its graph is only valid at "
            f"the traced shape (per-shape constants). Export one static tile per shape instead "
            f"(drop --dynamic; e.g. --tile {tile[0]}x{tile[1]})."
        )


def export_model(
    options: ExportOptions, on_stage: Callable[[str], None] | None = None
) -> ExportResult:
    """Export one model to a verified FP32 ONNX (and FP16/INT8 if asked) with manifests, reports.

    Raises:
        UnknownModelError, TileSizeError, WeightsError, InputError: bad user input.
        ExportError: tracing or the graph check failed, or the options conflict.
        VerificationError: an artifact misses its accuracy target (the report with the figures is
            written beside where the ONNX would have been).
    """
    stage = StageTimer(stages_for(options.precision), on_stage)
    ref = resolve(options.model) if isinstance(options.model, str) else options.model
    variant = ref.variant
    tile = tuple(options.tile or variant.default_tile)
    _check_options(options, ref, tile)
    images = tuple(options.images) if options.images else tuple(sample_paths()[:4])
    targets = targets_for(ref.spec.name)
    out_dir = Path(options.output_dir)
    static_tile = None if options.dynamic else tile

    stage("build")
    built = model_from_name(ref, options.weights, options.seed, options.build_overrides)

    stage("trace")
    # With two or more verification photos the trace runs on them: its forward pass is PyTorch's
    # reference for the tile (bit for bit), so verification runs no forward pass of its own there.
    # A model whose forward read the photos' values into Python is traced again on random input,
    # so that the check against the photos can see a branch the graph froze.
    names, photos = model_inputs(built, images, tile)
    traced, expected = None, None
    if len(photos) >= TRACE_BATCH:
        traced, expected = onnx_and_outputs(
            built.module, photos, ref.spec.output_index, options.opset, options.dynamic
        )
    if expected is None:
        traced = onnx_from_model(
            built.module,
            tile,
            variant.in_channels,
            ref.spec.output_index,
            options.opset,
            options.dynamic,
        )

    stage("simplify")
    notes: list[str] = []
    candidate = traced
    if options.simplify:
        simp = simplify_graph(traced)
        if simp.simplified:
            candidate = simp.model
            scalar_prelu_as_leaky_relu(candidate)
        else:
            notes.append(f"simplification skipped: {simp.error}")
            warnings.warn(f"onnxsim could not simplify the graph ({simp.error})", stacklevel=2)

    compact_graph(candidate)

    stage("check")
    check_graph(candidate)

    stage("verify")
    shapes = [tile] + ([second_shape(tile, ref.size_rule.multiple_of)] if options.dynamic else [])
    if expected is None:  # traced on random input: PyTorch's pass on the photos is its own
        expected = torch_outputs(built, photos)
    refs = [ReferenceSet(tuple(names), photos, expected)]
    refs += [reference_set(built, images, s) for s in shapes[1:]]
    criterion = Criterion(max_abs=targets.fp32_max_abs)
    name = onnx_name(ref.name, "fp32", static_tile)
    vr = variant.value_range
    report = verify_graph(OrtSession(candidate.SerializeToString()), refs, vr, criterion, name)
    if not report.passed and candidate is not traced:
        # Only if simplification broke the numbers do we fall back to the traced graph.
        fallback = verify_graph(OrtSession(traced.SerializeToString()), refs, vr, criterion, name)
        if fallback.passed:
            warnings.warn(
                "the simplified graph failed verification; keeping the traced one", stacklevel=2
            )
            notes.append("simplified graph failed verification; unsimplified graph kept")
            candidate, report = traced, fallback
    report.notes.extend(notes)
    if built.random:
        report.notes.append(f"weights: {built.weights} - not a trained model")

    label = precision_label(options.precision, options.int8_layout)
    report_path = out_dir / report_name(ref.name, label, static_tile)
    doc: dict[str, Any] = {
        "model": ref.name,
        "weights": built.weights,
        "nodes": {"traced": len(traced.graph.node), "final": len(candidate.graph.node)},
        "op_counts": op_counts(candidate),
        "fp32": report.to_dict(),
    }
    fp32_rules = tensorrt_rules(candidate, options.tensorrt_version, "")
    doc["fp32"]["tensorrt_rules"] = _rules_record(fp32_rules, options.tensorrt_version)
    stage("fp32: OpenVINO row")  # a sub-step of verify, timed apart (it is not ONNX Runtime's)
    doc["fp32"]["openvino"] = openvino_row(candidate, refs, vr, criterion, name)  # None: not here
    doc["stage_seconds"] = stage.seconds()
    _write_report(report_path, doc)
    if not report.passed:
        _raise_fp32_failure(
            ref, report, tile, shapes, targets.fp32_max_abs, options.dynamic, report_path
        )

    stage("write")
    base = _base_manifest(ref, built, options, static_tile, report)
    fp32 = _write_artifact(candidate, out_dir / name, base, report, fp32_rules)

    lowered, speed = None, None
    if options.precision != "fp32":
        lowered, speed = _export_lowered(
            options, ref, built, candidate, fp32, refs[0], doc, report_path, stage
        )
        doc["stage_seconds"] = stage.seconds()  # now with the lowered graph's write
        _write_report(report_path, doc)
    return ExportResult(
        fp32, lowered, report_path, len(traced.graph.node), built, tuple(notes), speed,
        options.tensorrt_version, stage.seconds(),
    )  # fmt: skip


def _export_lowered(
    options: ExportOptions,
    ref: ModelRef,
    built: BuiltModel,
    fp32_model: onnx.ModelProto,
    fp32: Artifact,
    refs: ReferenceSet,
    doc: dict[str, Any],
    report_path: Path,
    stage: StageTimer,
) -> tuple[Artifact, CpuSpeed | None]:
    """The verified FP16/INT8 artifact; for the INT8 CPU layout also its speed against FP32."""
    # Imported here: calibration pulls in ONNX Runtime's quantization tools, unused for FP32.
    from restorekit.calibration.cache import write_cache
    from restorekit.calibration.feeds import feeds_from_images
    from restorekit.export.lower_precision import fp16_from_fp32, int8_from_fp32

    precision = options.precision
    targets = targets_for(ref.spec.name)
    min_psnr = options.min_psnr if options.min_psnr is not None else (
        targets.fp16_min_psnr if precision == "fp16" else targets.int8_min_psnr
    )  # fmt: skip
    vr = ref.variant.value_range
    say = lambda msg: stage(f"{precision}: {msg}")  # noqa: E731

    stage("calibrate")
    calibration = feeds_from_images(
        options.calib or sample_paths(), fp32.manifest, options.calib_count, options.seed
    )
    stage("lower")
    # The candidates scored while lowering keep their sessions and outputs here: the chosen one is
    # then verified without loading it again or repeating the runs its score already made.
    sessions = SessionPool()
    if precision == "fp16":
        lowered = fp16_from_fp32(fp32_model, calibration, refs, vr, min_psnr, say, sessions)
    else:
        lowered = int8_from_fp32(fp32_model, calibration, refs, vr, min_psnr, options.calib_method,
                             options.int8_max_excluded, options.tensorrt_version, say,
                             options.int8_layout, sessions)  # fmt: skip
    check_graph(lowered.model)

    stage("verify lowered")
    tile = fp32.manifest.tile
    name = onnx_name(ref.name, precision_label(precision, lowered.plan.layout), tile)
    report = verify_graph(sessions.session(lowered.model), [refs], vr,
                          Criterion(min_psnr=min_psnr), name)  # fmt: skip
    report.notes.extend(lowered.notes)
    if built.random:
        report.notes.append(f"weights: {built.weights} - not a trained model")
    doc[precision] = {
        **report.to_dict(),
        "kept_in_higher_precision": dict(lowered.plan.reasons),
        "calibration": {"source": calibration.source, "images": calibration.images,
                        "tiles": calibration.count, "fingerprint": calibration.fingerprint},
        **lowered.details,
    }  # fmt: skip
    rules = tensorrt_rules(lowered.model, options.tensorrt_version, lowered.plan.layout)
    doc[precision]["tensorrt_rules"] = _rules_record(rules, options.tensorrt_version)
    speed = None
    if report.passed and lowered.plan.layout == "ort-cpu":
        say("timing FP32 and INT8 on this CPU")
        speed = cpu_speed(fp32_model.SerializeToString(), lowered.model.SerializeToString(),
                          refs.inputs[:1])  # fmt: skip
        doc[precision]["cpu_speed"] = speed.to_dict()
    doc["stage_seconds"] = stage.seconds()
    _write_report(report_path, doc)
    if not report.passed:
        w = report.worst
        cpu_layout_hint = (
            " The CPU layout quantizes every operator with an integer kernel, and its search cannot "
            "always win the accuracy back; the TensorRT layout (plain --int8) quantizes only "
            "convolutions and matrix products."
            if lowered.plan.layout == "ort-cpu"
            else ""
        )
        raise VerificationError(
            f"{ref.name} {precision.upper()}: PSNR {w.psnr:.2f} dB against PyTorch FP32 "
            f"(target {min_psnr:g} dB), NaN/Inf {w.nonfinite}. Nothing was written except the "
            f"figures ({report_path}); the FP32 graph is fine: {fp32.onnx_path.name}. "
            f"Try more or more typical calibration images (--calib DIR), another --calib-method, "
            f"or state a lower target with --min-psnr if it is acceptable.{cpu_layout_hint}"
            f"\n{report.table()}"
        )

    stage("write lowered")
    manifest = fp32.manifest.replace(
        precision=lowered.plan, calibration=lowered.calibration, onnx_sha256="",
        verification=_verification_record(report),
    )  # fmt: skip
    artifact = _write_artifact(lowered.model, report_path.parent / name, manifest, report, rules)
    if lowered.cache is not None:
        write_cache(report_path.parent / f"{artifact_stem(ref.name, precision, tile)}.calib.cache",
                    lowered.cache)  # fmt: skip
    return artifact, speed


def _raise_fp32_failure(ref, report, tile, shapes, limit, dynamic, report_path) -> None:
    w = report.worst
    if dynamic and any(c.shape != tile and c.figures.max_abs > limit for c in report.comparisons):
        raise VerificationError(
            f"{ref.name}: a graph traced at {tile[0]}x{tile[1]} gives wrong results at "
            f"{shapes[1][0]}x{shapes[1][1]} (max abs {w.max_abs:.3g}): its graph depends on "
            "the traced shape, so dynamic height/width is refused. Export a static tile "
            f"(drop --dynamic). Figures: {report_path}"
        )
    raise VerificationError(
        f"{ref.name}: ONNX Runtime output differs from PyTorch beyond float rounding "
        f"(max abs {w.max_abs:.3g} > {limit:g}, NaN/Inf {w.nonfinite}). "
        f"Nothing was written except the figures: {report_path}\n{report.table()}"
    )


def _verification_record(report: VerificationReport) -> dict[str, Any]:
    w = report.worst
    return {"reference": report.reference, "criterion": report.criterion, **w.to_dict(),
            "images": len({n for c in report.comparisons for n in c.images})}  # fmt: skip


def _base_manifest(
    ref: ModelRef,
    built: BuiltModel,
    options: ExportOptions,
    tile: tuple[int, int] | None,
    report: VerificationReport,
) -> Manifest:
    variant, spec = ref.variant, ref.spec
    return Manifest(
        model=ref.name,
        task=variant.task,
        input=TensorSpec(INPUT_NAME, variant.in_channels, color_order=variant.color_order,
                         value_range=variant.value_range),
        output=TensorSpec(OUTPUT_NAME, variant.out_channels, color_order=variant.color_order,
                          value_range=variant.value_range),
        scale=variant.scale,
        multiple_of=ref.size_rule.multiple_of,
        tile=tile,
        batch=BatchRange(1, options.batch, options.batch),
        overlap=ref.overlap,
        blend=spec.blend,
        precision=PrecisionPlan("fp32"),
        opset=options.opset,
        weights=built.weights,
        max_tile_area=ref.size_rule.max_tile_area,
        build_overrides=dict(built.overrides),
        verification=_verification_record(report),
        restorekit_version=__version__,
    )  # fmt: skip


def _write_artifact(
    model: onnx.ModelProto,
    path: Path,
    manifest: Manifest,
    report: VerificationReport,
    rules: tuple[RuleViolation, ...] | None,
) -> Artifact:
    write_onnx_with_manifest(model, path, manifest)
    manifest = manifest.replace(onnx_sha256=file_sha256(path))
    write_manifest(path, manifest)
    return Artifact(path, manifest, report, len(model.graph.node), rules)


def tensorrt_rules(
    model: onnx.ModelProto, tensorrt_version: str, int8_layout: str
) -> tuple[RuleViolation, ...] | None:
    """What ONNX-TensorRT's published rules say of a graph written for TensorRT (``None`` for the
    INT8 CPU layout, which is not)."""
    if int8_layout == "ort-cpu":
        return None
    return tuple(check_graph_for_tensorrt(model, tensorrt_version))


def _rules_record(
    rules: tuple[RuleViolation, ...] | None, tensorrt_version: str
) -> dict[str, Any] | None:
    if rules is None:
        return None
    return {"tensorrt": tensorrt_version, "violations": [str(v) for v in rules]}


def _write_report(path: Path, doc: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def write_onnx_with_manifest(model: onnx.ModelProto, path: Path, manifest: Manifest) -> None:
    """Embed ``manifest`` (without its hash) in ``metadata_props`` and write ``path`` atomically."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = manifest.replace(onnx_sha256="").to_json()
    model.producer_name = "restorekit"
    model.producer_version = __version__
    write_bytes_atomic(path, model.SerializeToString())

"""Accuracy check of an ONNX graph: ONNX Runtime against PyTorch on real images.

The targets and what the report records: docs/precision.md.

Real photos (the shipped samples, or the user's) are centre-cropped or reflect-padded to the tile
shape and fed in the model's pixel convention. The graph runs at batch 1 on each image and at a
batch of all images; PyTorch runs once on the batch (at the export's tile, that pass is the
trace's own: ``trace.onnx_and_outputs``). Each comparison reports max abs error, PSNR,
SSIM (outputs normalised to [0, 1]) and the count of NaN/Inf values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from restorekit.export.compare import OrtSession, compare_batches, worst_of
from restorekit.export.trace import ResultOnly
from restorekit.manifest import INPUT_NAME, TensorSpec
from restorekit.metrics import Agreement
from restorekit.models.build import BuiltModel
from restorekit.runtime.imageio import read_image
from restorekit.runtime.pixels import to_model_input


def fit_to_tile(chw: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Centre-crop a (C, H, W) array to ``tile``, reflect-padding any side that is too small."""
    th, tw = tile
    _, h, w = chw.shape
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    out = chw[:, top : top + th, left : left + tw]
    ph, pw = th - out.shape[1], tw - out.shape[2]
    if ph or pw:
        mode = "reflect" if ph < out.shape[1] and pw < out.shape[2] else "symmetric"
        out = np.pad(out, ((0, 0), (0, ph), (0, pw)), mode=mode)
        while out.shape[1] < th or out.shape[2] < tw:  # tiny images: repeat until large enough
            out = np.pad(
                out,
                ((0, 0), (0, max(0, th - out.shape[1])), (0, max(0, tw - out.shape[2]))),
                mode="symmetric",
            )
        out = out[:, :th, :tw]
    return np.ascontiguousarray(out, dtype=np.float32)


def image_batch(
    paths: Sequence[Path], spec: TensorSpec, tile: tuple[int, int]
) -> tuple[list[str], np.ndarray]:
    """Names and an (N, C, H, W) float32 batch of real images in the model's input convention."""
    arrays = [fit_to_tile(to_model_input(read_image(p), spec), tile) for p in paths]
    return [Path(p).stem for p in paths], np.stack(arrays)


def torch_outputs(built: BuiltModel, batch: np.ndarray) -> np.ndarray:
    """The PyTorch model's restored images for ``batch`` (float32, one forward pass)."""
    wrapper = ResultOnly(built.module, built.ref.spec.output_index).eval()
    with torch.inference_mode():
        return wrapper(torch.from_numpy(batch)).float().numpy()


@dataclass(frozen=True)
class Comparison:
    """One comparison: which images, at which batch size and shape, and the figures."""

    images: tuple[str, ...]
    batch: int
    shape: tuple[int, int]
    figures: Agreement

    def to_dict(self) -> dict:
        return {
            "images": list(self.images),
            "batch": self.batch,
            "shape": list(self.shape),
            **self.figures.to_dict(),
        }


@dataclass
class VerificationReport:
    """All comparisons of one artifact against its reference, and the verdict."""

    artifact: str
    reference: str  # e.g. "pytorch fp32"
    criterion: str  # e.g. "max_abs <= 0.0001"
    comparisons: list[Comparison] = field(default_factory=list)
    passed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def worst(self) -> Agreement:
        return worst_of([c.figures for c in self.comparisons])

    def to_dict(self) -> dict:
        return {
            "artifact": self.artifact,
            "reference": self.reference,
            "criterion": self.criterion,
            "passed": self.passed,
            "worst": self.worst.to_dict() if self.comparisons else None,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": self.notes,
        }

    def table(self) -> str:
        """A short terminal table: one row per comparison, then the verdict."""
        rows = [
            f"{'images':<28} {'batch':>5} {'shape':>9} {'max abs':>10} {'PSNR dB':>8} {'SSIM':>7} {'NaN/Inf':>7}"
        ]
        for c in self.comparisons:
            f = c.figures
            names = ",".join(c.images)
            names = names if len(names) <= 28 else names[:25] + "..."
            p = "inf" if math.isinf(f.psnr) else f"{f.psnr:.2f}"
            rows.append(
                f"{names:<28} {c.batch:>5} {c.shape[0]:>4}x{c.shape[1]:<4} {f.max_abs:>10.2e} {p:>8} {f.ssim:>7.5f} {f.nonfinite:>7}"
            )
        verdict = "PASS" if self.passed else "FAIL"
        rows.append(f"{verdict}: {self.artifact} vs {self.reference} ({self.criterion})")
        return "\n".join(rows)


@dataclass(frozen=True)
class ReferenceSet:
    """Real images at one shape, in the model's convention, and PyTorch's outputs for them."""

    names: tuple[str, ...]
    inputs: np.ndarray
    expected: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.inputs.shape[2]), int(self.inputs.shape[3])


def reference_set(
    built: BuiltModel, image_paths: Sequence[Path], shape: tuple[int, int]
) -> ReferenceSet:
    """Fit ``image_paths`` to ``shape`` and run the PyTorch model on them once."""
    names, batch = model_inputs(built, image_paths, shape)
    return ReferenceSet(tuple(names), batch, torch_outputs(built, batch))


def model_inputs(
    built: BuiltModel, image_paths: Sequence[Path], shape: tuple[int, int]
) -> tuple[list[str], np.ndarray]:
    """Names and the (N, C, H, W) batch of ``image_paths`` fitted to ``shape`` in the model's
    input convention."""
    variant = built.ref.variant
    spec = TensorSpec(INPUT_NAME, variant.in_channels, color_order=variant.color_order,
                      value_range=variant.value_range)  # fmt: skip
    return image_batch(image_paths, spec, shape)


@dataclass(frozen=True)
class Criterion:
    """Pass/fail rule: FP32 is judged by max abs error, reduced precision by PSNR."""

    max_abs: float | None = None
    min_psnr: float | None = None

    def describe(self) -> str:
        if self.max_abs is not None:
            return f"max abs <= {self.max_abs:g}, no NaN/Inf"
        return f"PSNR >= {self.min_psnr:g} dB, no NaN/Inf"

    def passes(self, worst: Agreement) -> bool:
        if worst.nonfinite:
            return False
        if self.max_abs is not None and worst.max_abs > self.max_abs:
            return False
        return self.min_psnr is None or worst.psnr >= self.min_psnr


def verify_graph(
    session: OrtSession,
    references: Sequence[ReferenceSet],
    value_range: float,
    criterion: Criterion,
    artifact: str,
) -> VerificationReport:
    """Run ``session`` on each reference set (batch 1 per image, then all images as one batch)."""
    report = VerificationReport(
        artifact=artifact, reference="pytorch fp32", criterion=criterion.describe()
    )
    for refs in references:
        for i, name in enumerate(refs.names):
            got = session.run(refs.inputs[i : i + 1])
            (fig,) = compare_batches(got, refs.expected[i : i + 1], [name], value_range)
            report.comparisons.append(Comparison((name,), 1, refs.shape, fig))
        if len(refs.names) > 1:
            got = session.run(refs.inputs)
            figs = compare_batches(got, refs.expected, refs.names, value_range)
            report.comparisons.append(
                Comparison(refs.names, len(refs.names), refs.shape, worst_of(figs))
            )
    report.passed = criterion.passes(report.worst)
    return report

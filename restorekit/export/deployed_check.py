"""``restore-check``'s library function: does the deployed artifact, run the way ``restore-run``
runs it (tiled, any backend), reproduce the PyTorch model run on the whole image?

For each real image the PyTorch model (rebuilt exactly as exported: registry name, configuration
overrides and weights or random seed from the manifest) restores the whole image in one pass; the
runtime restores it tile by tile. Both outputs are compared in the model's output units scaled to
[0, 1] and clamped there, over the whole image and over a band of pixels around the tile seams,
where tiling errors would show. This module needs PyTorch; the runtime it drives does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.data import sample_paths
from restorekit.errors import InputError, WeightsError
from restorekit.manifest import Manifest
from restorekit.metrics import Agreement, agreement, max_abs, nonfinite, psnr, ssim
from restorekit.runtime.artifact import backend_from_artifact
from restorekit.runtime.imageio import read_image
from restorekit.runtime.ort_backend import OrtOptions
from restorekit.runtime.pixels import to_model_input
from restorekit.runtime.restore import Restorer, TileOptions
from restorekit.runtime.tiling import TilePlan, round_up, seam_mask, seam_positions

SSIM_STRIP = 8  # half-width of the strips SSIM is computed on around seams (window is 11 wide)


@dataclass(frozen=True)
class DeployedCheckOptions:
    """What to check. ``None`` fields take the artifact's manifest or the defaults.

    Attributes:
        artifact: ``.onnx`` or ``.engine`` with its manifest.
        images: real images; default: the shipped sample photos.
        weights: the checkpoint the artifact was exported from (required unless its manifest
            says the weights were random, in which case the recorded seed rebuilds them).
        backend: ``ort``, ``trt`` or ``openvino`` (default: by suffix).
        ort: ONNX Runtime provider/session options.
        precision: OpenVINO's ``fp32``, ``bf16`` or ``int8`` (default: the artifact's own).
        tiles: tile/overlap/batch overrides, as for ``restore-run``.
        seam_band: pixels on each side of a seam counted as "near the seam".
    """

    artifact: Path
    images: tuple[Path, ...] | None = None
    weights: Path | None = None
    backend: str | None = None
    ort: OrtOptions = field(default_factory=OrtOptions)
    tiles: TileOptions = field(default_factory=TileOptions)
    seam_band: int = 4
    precision: str | None = None


@dataclass(frozen=True)
class ImageCheck:
    """Figures for one image: whole output and the seam band (``None`` when one tile covers it)."""

    name: str
    shape: tuple[int, int]
    tiles: int
    whole: Agreement
    seams: Agreement | None
    seam_pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.name,
            "shape": list(self.shape),
            "tiles": self.tiles,
            "whole": self.whole.to_dict(),
            "seams": self.seams.to_dict() if self.seams else None,
            "seam_pixels": self.seam_pixels,
        }


@dataclass(frozen=True)
class DeployedCheckReport:
    """Every image's figures and what was compared."""

    artifact: str
    model: str
    backend: str
    weights: str
    tile: tuple[int, int]
    overlap: int
    seam_band: int
    images: tuple[ImageCheck, ...]

    def worst(self, part: str = "whole") -> Agreement | None:
        """The worst figures over all images (max error, min PSNR/SSIM, total NaN/Inf)."""
        rows = [getattr(c, part) for c in self.images if getattr(c, part) is not None]
        if not rows:
            return None
        return Agreement(
            max_abs=max(r.max_abs for r in rows),
            psnr=min(r.psnr for r in rows),
            ssim=min(r.ssim for r in rows),
            nonfinite=sum(r.nonfinite for r in rows),
        )

    def to_dict(self) -> dict[str, Any]:
        worst, seams = self.worst("whole"), self.worst("seams")
        return {
            "artifact": self.artifact,
            "model": self.model,
            "backend": self.backend,
            "weights": self.weights,
            "reference": "pytorch fp32, whole image, untiled",
            "tile": list(self.tile),
            "overlap": self.overlap,
            "seam_band": self.seam_band,
            "worst": {
                "whole": worst.to_dict() if worst else None,
                "seams": seams.to_dict() if seams else None,
            },
            "images": [c.to_dict() for c in self.images],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        head = (
            f"{'image':<14} {'part':<6} {'max abs':>10} {'PSNR dB':>8} {'SSIM':>8} {'NaN/Inf':>8}"
        )
        lines = [head, "-" * len(head)]
        for c in self.images:
            for part, fig in (("whole", c.whole), ("seams", c.seams)):
                if fig is None:
                    lines.append(f"{c.name[:14]:<14} {part:<6} {'(one tile: no seams)':>37}")
                    continue
                p = "inf" if math.isinf(fig.psnr) else f"{fig.psnr:.2f}"
                lines.append(
                    f"{c.name[:14]:<14} {part:<6} {fig.max_abs:>10.3g} {p:>8} "
                    f"{fig.ssim:>8.5f} {fig.nonfinite:>8d}"
                )
        return "\n".join(lines)


def reference_model(manifest: Manifest, weights: Path | None):
    """Rebuild the PyTorch model an artifact was exported from: with ``weights``, or the weights
    shipped in the package that its manifest names, or the random seed it records.

    Raises:
        WeightsError: the artifact came from a checkpoint and none (or another one) was given.
    """
    from restorekit.models.build import model_from_name, seed_from_record
    from restorekit.models.registry import resolve

    seed = seed_from_record(manifest.weights)
    recorded_file, _, recorded = manifest.weights.partition(" sha256:")
    bundled = resolve(manifest.model).variant.bundled_weights
    shipped = bundled is not None and recorded_file == bundled and not manifest.build_overrides
    if weights is None and seed is None and not shipped:
        raise WeightsError(
            f"the artifact was exported from {manifest.weights}; pass the same file with "
            "--weights PATH so the PyTorch reference has the same weights"
        )
    built = model_from_name(manifest.model, weights, seed or 0, manifest.build_overrides)
    given = built.weights.partition(" sha256:")[2]
    if recorded and given != recorded:
        source = weights or f"the {bundled} shipped with this restorekit"
        raise WeightsError(
            f"{source} (sha256 {given[:12]}…) is not the checkpoint the artifact was exported "
            f"from ({manifest.weights}); pass that file with --weights"
        )
    return built


def _torch_whole(built, manifest: Manifest, image: np.ndarray) -> np.ndarray:
    """The PyTorch output for the whole image (C, H*s, W*s), padded to ``multiple_of`` first."""
    import torch

    from restorekit.export.verify import torch_outputs

    chw = to_model_input(image, manifest.input)
    h, w = chw.shape[1:]
    m = manifest.multiple_of
    ph, pw = round_up(h, m) - h, round_up(w, m) - w
    if ph or pw:
        chw = np.pad(chw, ((0, 0), (0, ph), (0, pw)), mode="reflect")
    with torch.inference_mode():
        out = torch_outputs(built, np.ascontiguousarray(chw[None]))[0]
    s = manifest.scale
    return out[:, : h * s, : w * s]


def compare_outputs(
    got: np.ndarray, want: np.ndarray, plan: TilePlan, band: int, value_range: float
) -> tuple[Agreement, Agreement | None, int]:
    """Whole-image and seam-band figures of two (C, H, W) outputs in model units.

    Both are scaled to [0, 1] and clamped there, as ``restore-run`` writes them. The seam band's
    max abs, PSNR and NaN/Inf count use exactly the pixels within ``band`` of a seam; its SSIM is
    the mean SSIM of strips of ``2 * SSIM_STRIP`` pixels centred on each seam (SSIM needs a
    neighbourhood wider than the band).
    """
    a = np.clip(got / value_range, 0.0, 1.0)
    b = np.clip(want / value_range, 0.0, 1.0)
    bad = ~np.isfinite(got)
    a = np.where(bad, got, a)  # keep NaN/Inf visible to the counts
    whole = agreement(a, b, 1.0, channel_axis=0)
    rows, cols = seam_positions(plan)
    if not rows and not cols:
        return whole, None, 0
    mask = seam_mask(plan, band)
    sa, sb = a[:, mask], b[:, mask]
    clean = np.nan_to_num(sa, nan=0.0, posinf=1.0, neginf=0.0)
    strips = []
    h, w = mask.shape
    for r in rows:
        lo, hi = max(r - SSIM_STRIP, 0), min(r + SSIM_STRIP, h)
        strips.append((a[:, lo:hi, :], b[:, lo:hi, :]))
    for c in cols:
        lo, hi = max(c - SSIM_STRIP, 0), min(c + SSIM_STRIP, w)
        strips.append((a[:, :, lo:hi], b[:, :, lo:hi]))
    ssims = [
        ssim(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), y, 1.0, channel_axis=0)
        for x, y in strips
    ]
    seams = Agreement(
        max_abs=max_abs(sa, sb),
        psnr=psnr(clean, sb, 1.0),
        ssim=float(np.mean(ssims)),
        nonfinite=nonfinite(sa),
    )
    return whole, seams, int(mask.sum())


def check_deployed(
    options: DeployedCheckOptions, on_image: Callable[[str], None] | None = None
) -> DeployedCheckReport:
    """Run the artifact tiled and the PyTorch model whole on real images, and compare.

    Raises:
        InputError: an image cannot be read, or no images.
        ManifestError: the artifact or its manifest is unusable.
        WeightsError: the reference weights are missing or differ from the exported ones.
    """
    paths: Sequence[Path] = options.images or tuple(sample_paths())
    if not paths:
        raise InputError("no images to check")
    openvino = None
    if options.backend == "openvino":
        from restorekit.runtime.openvino_backend import OpenVinoOptions

        # Not admitted against ONNX Runtime first: this check's own figures against PyTorch
        # are what the user asked for, whatever they are.
        openvino = OpenVinoOptions(options.precision, options.ort.threads, verify=False)
    backend, manifest = backend_from_artifact(
        options.artifact, options.backend, options.ort, batch=options.tiles.batch,
        openvino_options=openvino,
    )  # fmt: skip
    built = reference_model(manifest, options.weights)
    checks = []
    with backend:
        restorer = Restorer(backend, manifest, options.tiles)
        plan = None
        for path in paths:
            image = read_image(path)
            if image.ndim == 2 and manifest.input.channels == 3:
                image = np.repeat(image[:, :, None], 3, axis=2)
            plan = restorer.plan(image.shape[:2])
            # NaN/Inf stay in the output here (restore-run zeroes and reports them) so they count.
            got = restorer.infer_image(image, keep_nonfinite=True).output
            want = _torch_whole(built, manifest, image)
            whole, seams, count = compare_outputs(
                got, want, plan, options.seam_band, manifest.output.value_range
            )
            checks.append(
                ImageCheck(Path(path).name, tuple(image.shape[:2]), plan.count, whole, seams, count)
            )
            if on_image is not None:
                on_image(Path(path).name)
    assert plan is not None
    return DeployedCheckReport(
        artifact=str(options.artifact),
        model=manifest.model,
        backend=backend.name,
        weights=built.weights,
        tile=plan.tile,
        overlap=plan.y.overlap,
        seam_band=options.seam_band,
        images=tuple(checks),
    )

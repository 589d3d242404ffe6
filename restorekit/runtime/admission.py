"""A CPU backend is admitted for an artifact only after it reproduces ONNX Runtime's FP32 output.

At run time there is no PyTorch, so the reference is the artifact's FP32 ONNX on ONNX Runtime (the
reference backend, itself verified against PyTorch at export). The candidate and the reference
restore the same real tiles (the sample photos shipped with restorekit, cut by the runtime's own
tile plan), and the candidate must meet its precision's gate: FP32 to float rounding, BF16 and
INT8 by PSNR against FP32. The verdict, passed or refused with its figures, is remembered beside
the artifact (``<artifact>.cpu.json``) keyed by this CPU, the library versions and the artifact's
sha256: a changed artifact, CPU or library is checked again, so a refusal lifts by itself once
a graph verifies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restorekit import __version__
from restorekit.data import sample_paths
from restorekit.errors import ManifestError, RestoreKitError
from restorekit.files import file_sha256, write_text_atomic
from restorekit.manifest import Manifest
from restorekit.metrics import Agreement, agreement, rounded_db
from restorekit.naming import onnx_name
from restorekit.runtime.backend import Backend
from restorekit.runtime.cpu_features import cpu_features
from restorekit.runtime.imageio import read_image
from restorekit.runtime.restore import input_batches, plan_for
from restorekit.runtime.tiling import round_up

RECORD_SUFFIX = ".cpu.json"
ADMISSION_IMAGES = 2  # real photos: enough to catch NaN, saturation, wrong math
# Pixels judged, at least one tile per photo: with 32x32 tiles (NLRN, PANet) one tile a photo is
# too little to judge by (an INT8 model scored 37 dB on four such tiles, 32 dB on 8, 29 dB on 64).
ADMISSION_PIXELS = 2 * 256 * 256


@dataclass(frozen=True)
class Gate:
    """Pass rule against the FP32 ONNX on ONNX Runtime (outputs scaled to [0, 1])."""

    max_abs: float | None = None
    min_psnr: float | None = None

    def passes(self, figures: Agreement) -> bool:
        if figures.nonfinite:
            return False
        if self.max_abs is not None and figures.max_abs > self.max_abs:
            return False
        return self.min_psnr is None or figures.psnr >= self.min_psnr

    def describe(self) -> str:
        if self.max_abs is not None:
            return f"max abs <= {self.max_abs:g}"
        return f"PSNR >= {self.min_psnr:g} dB"


# The export's default targets (restorekit/export/targets.py, which the runtime does not import;
# a test checks they agree): FP32 to float rounding, BF16 as FP16, INT8 at 35 dB.
GATES = {"fp32": Gate(max_abs=1e-4), "bf16": Gate(min_psnr=45.0), "int8": Gate(min_psnr=35.0)}


class NotAdmittedError(RestoreKitError):
    """A backend's output for this artifact does not match ONNX Runtime FP32; it is refused."""


def record_path(artifact: str | Path) -> Path:
    """``x.onnx`` -> ``x.onnx.cpu.json``: admissions and timings of CPU backends for ``x``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + RECORD_SUFFIX)


def record_key(artifact: Path) -> dict[str, Any]:
    """What the remembered verdicts and timings hold for: CPU, libraries, artifact bytes."""
    import importlib

    versions = {}
    for package in ("onnxruntime", "openvino"):
        try:  # the module's own version: distributions differ (onnxruntime-gpu, -openvino...)
            versions[package] = str(importlib.import_module(package).__version__)
        except Exception:  # not installed, or broken: either way no verdict of it holds
            versions[package] = None
    cpu = cpu_features()
    return {"cpu": cpu.model, "cpu_key": cpu.key(), "flags": list(cpu.flags),
            "versions": versions, "restorekit": __version__,
            "artifact_sha256": file_sha256(artifact)}  # fmt: skip


def load_record(artifact: Path) -> dict[str, Any]:
    """The record beside ``artifact`` if it holds for this CPU, these libraries and these bytes;
    else a fresh one (a stale record is dropped, never trusted)."""
    key = record_key(artifact)
    path = record_path(artifact)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        # An INT8 model made beside the artifact changes the candidates: its bytes key too.
        if data.get("key") == key:
            return data
    return {"key": key, "admitted": {}, "timings": {}}


def save_record(artifact: Path, record: dict[str, Any]) -> None:
    """Write the record atomically (two processes may race; the last complete one wins)."""
    write_text_atomic(record_path(artifact), json.dumps(record, indent=2, sort_keys=True) + "\n")


def tiles_for_pixels(tile: tuple[int, int], pixels: int, minimum: int = 1) -> int:
    """How many ``tile``-sized tiles hold ``pixels`` pixels (at least ``minimum``)."""
    return max(minimum, -(-pixels // (tile[0] * tile[1])))


def admission_tiles(
    manifest: Manifest, count: int = ADMISSION_IMAGES, pixels: int = ADMISSION_PIXELS
) -> np.ndarray:
    """(N, C, H, W) model-input tiles of real photos, cut as the runtime cuts them: from each of
    the first ``count`` sample photos its first tiles in the runtime's order, as many as hold its
    share of ``pixels`` (at least one; a dynamic graph: 64x64 tiles)."""
    m = round_up(64, manifest.multiple_of)
    tile = tuple(manifest.tile) if manifest.tile is not None else (m, m)
    per_photo = tiles_for_pixels(tile, pixels // count)
    tiles = []
    for path in sample_paths()[:count]:
        image = read_image(path)
        if image.ndim == 2 and manifest.input.channels == 3:
            image = np.repeat(image[:, :, None], 3, axis=2)
        plan = plan_for(manifest, image.shape[:2], tile)
        taken = 0
        for batch in input_batches(image, manifest, plan):
            for t in batch.array[: per_photo - taken]:
                tiles.append(t.copy())  # the batch buffer is reused for the next batch
                taken += 1
            if taken >= per_photo:
                break
    return np.stack(tiles).astype(np.float32)


def outputs_of(backend: Backend, tiles: np.ndarray) -> np.ndarray:
    """An open backend's outputs for ``tiles``, one tile per call (repeated to a static batch)."""
    batch = backend.input_spec.static_batch or 1
    outs = []
    for tile in tiles:
        x = np.repeat(tile[None], batch, axis=0).astype(backend.input_spec.dtype)
        outs.append(backend.infer(x)[0])
    return np.stack(outs)


def fp32_reference(artifact: Path, manifest: Manifest) -> Path:
    """The FP32 ONNX whose ONNX Runtime output is the reference: the artifact itself, or the FP32
    graph restore-export wrote beside a reduced-precision one.

    Raises:
        ManifestError: an INT8/FP16 artifact without its FP32 ONNX beside it.
    """
    if manifest.precision.precision == "fp32":
        return artifact
    beside = artifact.with_name(onnx_name(manifest.model, "fp32", manifest.tile))
    if not beside.is_file():
        raise ManifestError(
            f"{artifact.name} is checked against its FP32 ONNX before a CPU backend other than "
            f"ONNX Runtime runs it; {beside.name} is not beside it: copy it there"
        )
    return beside


def reference_outputs(artifact: Path, manifest: Manifest, tiles: np.ndarray) -> np.ndarray:
    """ONNX Runtime's outputs of the FP32 ONNX of ``artifact`` for ``tiles``."""
    from restorekit.runtime.ort_backend import OrtBackend, OrtOptions

    with OrtBackend(fp32_reference(artifact, manifest), OrtOptions(quiet=True)) as ort:
        return outputs_of(ort, tiles)


def compare(got: np.ndarray, want: np.ndarray, value_range: float) -> Agreement:
    """Figures of (N, C, H, W) outputs against the reference, both scaled to [0, 1]."""
    scale = np.float32(1.0 / value_range)
    return agreement(got * scale, want * scale, data_range=1.0, channel_axis=1)


def admit(artifact: Path, manifest: Manifest, backend: Backend, precision: str) -> dict[str, Any]:
    """Admit an open ``backend`` for ``artifact`` in ``precision``, or refuse it with the figures.

    A verdict remembered for this CPU, these libraries and these artifact bytes is reused.

    Returns:
        The verdict (figures, gate, passed).

    Raises:
        NotAdmittedError: the backend's output misses the gate (NaN/Inf, or too far from FP32).
        ManifestError: the FP32 reference ONNX is missing.
    """
    artifact = Path(artifact)
    record = load_record(artifact)
    what = f"{backend.name.split()[0]}/{precision}"
    verdict = record["admitted"].get(what)
    if verdict is None:
        tiles = admission_tiles(manifest)
        want = reference_outputs(artifact, manifest, tiles)
        got = outputs_of(backend, tiles)
        figures = compare(got, want, manifest.output.value_range)
        gate = GATES[precision]
        verdict = {"passed": gate.passes(figures), "gate": gate.describe(),
                   "max_abs": float(figures.max_abs), "psnr": rounded_db(figures.psnr),
                   "nonfinite": int(figures.nonfinite), "tiles": int(len(tiles)),
                   "reference": "onnxruntime fp32"}  # fmt: skip
        record["admitted"][what] = verdict
        save_record(artifact, record)
    if not verdict["passed"]:
        raise NotAdmittedError(refusal(artifact, manifest, what, verdict))
    return verdict


def refusal(artifact: Path, manifest: Manifest, what: str, verdict: dict[str, Any]) -> str:
    """The message of a refused backend: figures, the known reason where there is one, and what
    to run instead."""
    error = "" if verdict["nonfinite"] else f"max abs {verdict['max_abs']:.3g}, "
    figures = (f"{error}PSNR {verdict['psnr']} dB, NaN/Inf {verdict['nonfinite']} (gate: "
               f"{verdict['gate']}, no NaN/Inf)")  # fmt: skip
    known = ""
    if manifest.arch.startswith("grl") and verdict["nonfinite"]:
        known = (
            " This is the known OpenVINO NaN on GRL graphs exported before the fix: OpenVINO "
            "2026.4 computes Abs of a value cast from integers as the identity, and those graphs "
            "take log2(|t| + 1) of negative relative coordinates (docs/runtime.md, 'OpenVINO and "
            "GRL'). Re-export the model with this restorekit; the new graph is checked again and "
            "admitted when it verifies."
        )
    return (
        f"{what} is refused for {artifact.name}: on real tiles its output differs from ONNX "
        f"Runtime FP32: {figures}.{known} Use --backend ort (or --backend auto, which only picks "
        f"admitted backends). The verdict is kept in {record_path(artifact).name}."
    )

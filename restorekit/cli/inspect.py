"""``restore-inspect FILE``: an artifact's manifest, inputs/outputs and node counts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorekit.cli.entry import run
from restorekit.errors import InputError
from restorekit.files import file_sha256
from restorekit.manifest import read_manifest


def describe(path: Path) -> list[str]:
    """Human-readable lines about an ``.onnx`` or ``.engine`` artifact.

    Raises:
        InputError: the file does not exist.
        ManifestError: it has no readable manifest.
    """
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    m = read_manifest(path)
    tile = "dynamic" if m.tile is None else f"{m.tile[0]}x{m.tile[1]}"
    lines = [
        f"{path.name}  ({path.stat().st_size / 1e6:.1f} MB)",
        f"model      {m.model}  -  {m.task}",
        f"weights    {m.weights}",
        f"precision  {m.precision.precision}"
        + (f" (kept fp32: {len(m.precision.kept_fp32)} nodes)" if m.precision.kept_fp32 else ""),
        f"tile       {tile}, multiple of {m.multiple_of}, overlap {m.overlap}, blend {m.blend}",
        f"batch      min {m.batch.min} / opt {m.batch.opt} / max {m.batch.max}",
        f"input      {m.input.name} {m.input.layout} {m.input.dtype} {m.input.channels}ch "
        f"{m.input.color_order} 0..{m.input.value_range:g}",
        f"output     {m.output.name} x{m.scale} {m.output.channels}ch 0..{m.output.value_range:g}",
    ]
    if m.calibration:
        c = m.calibration
        lines.append(f"calibration {c.method}, {c.count} tiles, set {c.fingerprint[:16]}")
    if m.engine:
        e = m.engine
        lines.append(
            f"engine     TensorRT {e.tensorrt_version}, {e.gpu_name} (sm {e.compute_capability})"
        )
    if m.verification:
        v = m.verification
        psnr = v.get("psnr")
        psnr = f"{psnr:.2f} dB" if isinstance(psnr, float) else psnr
        lines.append(f"verified   vs {v.get('reference')}: max abs {v.get('max_abs'):.2e}, "
                     f"PSNR {psnr}, SSIM {v.get('ssim'):.5f}, NaN/Inf {v.get('nonfinite')}")  # fmt: skip
    if m.onnx_sha256 and path.suffix == ".onnx":
        ok = file_sha256(path) == m.onnx_sha256
        lines.append(
            f"sha256     {m.onnx_sha256[:16]}... {'matches' if ok else 'DOES NOT MATCH the file'}"
        )
    if path.suffix == ".onnx":
        lines.extend(_onnx_lines(path))
    return lines


def _onnx_lines(path: Path) -> list[str]:
    try:
        import onnx
    except ImportError:
        return ["(install onnx to list the graph's nodes)"]
    from restorekit.export.simplify import op_counts

    model = onnx.load(str(path), load_external_data=False)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    lines = [f"opset      {opsets}"]
    for kind, values in (("graph in", model.graph.input), ("graph out", model.graph.output)):
        for v in values:
            dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            lines.append(f"{kind:<10} {v.name} [{', '.join(dims)}] {dtype}")
    counts = op_counts(model)
    lines.append(
        f"nodes      {sum(counts.values())}: " + ", ".join(f"{k} {n}" for k, n in counts.items())
    )
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restore-inspect", description=__doc__)
    p.add_argument("artifact", type=Path, help="an .onnx or .engine file made by restorekit")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv, lambda args: print("\n".join(describe(args.artifact))))


if __name__ == "__main__":
    sys.exit(main())

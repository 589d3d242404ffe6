"""PyTorch eager vs ONNX Runtime FP32 / FP16 / INT8 on this CPU, at each model's default tile.

For each model: export (FP32, FP16, INT8 through ``export_model``, calibrated on the shipped
photos), then time PyTorch eager and each graph at batch 1 on a real tile — medians of ``--runs``
runs, all in one process, so ratios compare like with like on a shared, noisy machine — and report
PSNR against the FP32 output beside each. INT8 is timed in two layouts: TensorRT's (Q/DQ on the
inputs of Conv/MatMul only, what ``--int8`` writes) and ONNX Runtime's CPU layout (``int8cpu``:
uint8 activations, every operator with an integer kernel quantized, so the graph runs integer from
one convolution to the next; what ``--int8 --int8-layout ort-cpu`` writes, search included).

Demo variants (bundled weights) also get the *task* figure: mean PSNR against the clean photo of
the five held-out sample photos with sigma-25 noise (centre ``--crop``), restored by each graph,
and its loss against the FP32 graph. They are calibrated on what they will be fed: the noisy
training photos (``restorekit.models.demo.write_noisy_photos``), never the held-out ones.

    python benchmarks/precision.py                       # every registry default model
    python benchmarks/precision.py --models mprnet nlrn --runs 5 --threads 2
    python benchmarks/precision.py --models grl-t.dn_c3s25 --precisions fp16 --from-dir out/
    python benchmarks/precision.py --models panet.dn_s30 nlrn.dn_s25 --precisions int8cpu

Where OpenVINO is installed, the same table gets OpenVINO's rows on the FP32 ONNX (``--openvino``,
on by default there): FP32, BF16 (where the CPU has AMX or AVX512-BF16) and its own INT8 (NNCF,
calibrated on the same photos as the Q/DQ graphs, same 35 dB gate and search), each with the task
figure for demo variants. A demo variant whose weights are not bundled (the wide MPRNet) takes
them from ``--weights NAME=FILE`` (``tools/train_demo.py`` writes them):

    python benchmarks/precision.py --models mprnet mprnet.demo_wide_dn_s25 \
        --weights mprnet.demo_wide_dn_s25=.train/weights/mprnet.demo_wide_dn_s25.safetensors

Freed memory is kept in the process (``keep_freed_memory``) so that PyTorch eager is timed at its
best steady state; ``--malloc-default`` shows what a default process sees.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import torch
from timing import keep_freed_memory, median_seconds

from restorekit.data import sample_paths
from restorekit.errors import RestoreKitError, VerificationError
from restorekit.export import ExportOptions, export_model
from restorekit.export.compare import OrtSession
from restorekit.export.trace import ResultOnly
from restorekit.export.verify import image_batch
from restorekit.manifest import read_manifest
from restorekit.metrics import psnr
from restorekit.models.build import model_from_name
from restorekit.models.demo import heldout_rows, write_noisy_photos
from restorekit.models.registry import resolve

# File label -> export options (``int8cpu``: ``--int8 --int8-layout ort-cpu``).
PRECISIONS = {
    "fp16": {"precision": "fp16"},
    "int8": {"precision": "int8"},
    "int8cpu": {"precision": "int8", "int8_layout": "ort-cpu"},
}


LABELS = {
    "fp32": "onnx fp32",
    "fp16": "onnx fp16",
    "int8": "onnx int8 (TensorRT layout)",
    "int8cpu": "onnx int8 (ORT CPU layout)",
}
OV_LABELS = {"fp32": "openvino fp32", "bf16": "openvino bf16", "int8": "openvino int8 (NNCF)"}


def task_psnr(built, run: Callable[[np.ndarray], np.ndarray], crop: int) -> float:
    """Mean restored PSNR (dB, vs clean) of the held-out noisy photos, restored by ``run``."""
    rows = heldout_rows(built, crop=crop, forward=run)
    return sum(r.restored_psnr for r in rows) / len(rows)


def openvino_paths(
    fp32: Path, calib: Path | None, calib_count: int, threads: int, stack: ExitStack
) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, str]]:
    """OpenVINO on the FP32 ONNX: FP32, BF16 where the CPU has it, NNCF INT8 (made here with the
    export's gate and search); runners by label, and why a path has none."""
    from restorekit.calibration.openvino_int8 import ov_int8_from_onnx
    from restorekit.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions

    manifest = read_manifest(fp32)
    runners, refused = {}, {}
    try:
        ov_int8_from_onnx(fp32, calib=calib, count=calib_count, threads=threads)
    except RestoreKitError as exc:  # the gate missed: nothing written, said in the table
        refused["int8"] = str(exc).splitlines()[0][:160]
    for precision in ("fp32", "bf16", "int8"):
        if precision in refused:
            continue
        options = OpenVinoOptions(precision=precision, threads=threads, verify=False)
        try:  # our own figures against FP32 follow; admission would only repeat them
            backend = stack.enter_context(OpenVinoBackend(fp32, manifest, options))
        except RestoreKitError as exc:  # e.g. no bf16 on this CPU
            refused[precision] = str(exc).splitlines()[0][:160]
            continue
        runners[precision] = partial(_one_at_a_time, backend.infer)
    return runners, refused


def _one_at_a_time(infer: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """The tiler's batches through a backend compiled at the manifest's batch size (1)."""
    return np.concatenate([infer(tile[None]) for tile in batch])


def exported(
    name: str,
    precisions: list[str],
    calib: Path | None,
    calib_count: int,
    from_dir: Path | None,
    out: Path,
    weights: Path | None = None,
) -> tuple[dict[str, Path], dict[str, str]]:
    """ONNX paths per precision (``fp32`` always), exported now or found in ``from_dir``; and why
    each precision that restore-export refused (its accuracy target missed) has no graph."""
    if from_dir is None:
        common = dict(model=name, output_dir=out, calib=calib, calib_count=calib_count,
                      weights=weights)  # fmt: skip
        paths, refused = {}, {}
        for p in precisions:
            try:
                result = export_model(ExportOptions(**common, **PRECISIONS[p]))
            except VerificationError as exc:  # what a user gets: nothing written, the figures said
                refused[p] = str(exc).split(". ")[0]
                continue
            paths.setdefault("fp32", result.fp32.onnx_path)  # each export writes FP32 first
            paths[p] = result.onnx_path
        if "fp32" not in paths:  # FP32 only, or every lower precision refused
            paths["fp32"] = export_model(ExportOptions(**common)).onnx_path
        return {"fp32": paths.pop("fp32")} | paths, refused
    full = resolve(name).name
    found = {p: sorted(from_dir.glob(f"{full}.{p}.*.onnx")) for p in ["fp32", *precisions]}
    missing = [p for p, hits in found.items() if not hits]
    if missing:
        raise FileNotFoundError(f"no {full}.{{{','.join(missing)}}}.*.onnx in {from_dir}")
    return {p: hits[0] for p, hits in found.items()}, {}


def bench_model(
    name: str,
    precisions: list[str],
    from_dir: Path | None,
    runs: int,
    threads: int,
    calib_count: int,
    calib: Path | None,
    crop: int,
    out: Path,
    weights: Path | None = None,
    openvino: bool = False,
) -> list[str]:
    torch.set_num_threads(threads)
    ref = resolve(name)
    # Trained for the demo task: bundled, or a demo variant's weights given by file.
    demo = bool(ref.variant.bundled_weights) or (weights is not None and ".demo_" in ref.name)
    if calib is None and demo:
        calib = out / f"calib_{ref.variant.in_channels}ch"
        write_noisy_photos(calib, ref.variant.in_channels)
    paths, refused = exported(name, precisions, calib, calib_count, from_dir, out, weights)
    m = read_manifest(paths["fp32"])
    _, tiles = image_batch(sample_paths()[-1:], m.input, m.tile)  # rocket: not in verification
    x = tiles[:1]
    seed = re.fullmatch(r"random \(seed (\d+)\)", m.weights)  # what the export used
    bundled = ref.variant.bundled_weights
    weights = None if seed or bundled else (weights or m.weights)
    built = model_from_name(name, weights=weights, seed=int(seed.group(1)) if seed else 0)
    wrapper = ResultOnly(built.module, ref.spec.output_index).eval()
    with torch.inference_mode():
        t_torch = median_seconds(lambda: wrapper(torch.from_numpy(x)), runs)

    stack = ExitStack()
    runners: dict[str, Callable[[np.ndarray], np.ndarray] | Exception] = {}
    for p, path in paths.items():
        try:
            runners[LABELS[p]] = OrtSession(str(path), threads=threads).run
        except Exception as exc:  # one path failing should not hide the others
            runners[LABELS[p]] = exc
    if openvino:
        ov_runners, ov_refused = openvino_paths(paths["fp32"], calib, calib_count, threads, stack)
        runners |= {OV_LABELS[p]: run for p, run in ov_runners.items()}
        refused |= {OV_LABELS[p]: why for p, why in ov_refused.items()}
    ref_out = None
    rows = [f"{name} ({m.model}, tile {m.tile[0]}x{m.tile[1]}, weights: {m.weights[:40]}, "
            f"calibration: {calib or 'samples'})",
            f"  {'path':<30} {'median s':>9} {'x torch':>8} {'x fp32':>7} {'PSNR vs fp32':>13}"
            + (f" {'task dB':>8} {'loss dB':>8}" if demo else ""),
            f"  {'pytorch eager fp32':<30} {t_torch:>9.3f} {1.0:>8.2f} {'':>7} {'':>13}"]  # fmt: skip
    t_fp32 = task_fp32 = None
    with stack:
        for label, run in runners.items():
            try:
                if isinstance(run, Exception):
                    raise run
                out_arr = run(x)
            except Exception as exc:  # one path failing should not hide the others
                rows.append(f"  {label:<30} failed: {str(exc).splitlines()[0][:120]}")
                continue
            t = median_seconds(lambda r=run: r(x), runs)
            if ref_out is None:
                ref_out, t_fp32 = out_arr, t
            quality = psnr(out_arr / m.output.value_range, ref_out / m.output.value_range)
            q = "ref" if label == "onnx fp32" else f"{quality:.2f} dB"
            row = f"  {label:<30} {t:>9.3f} {t / t_torch:>8.2f} {t / t_fp32:>7.2f} {q:>13}"
            if demo:
                task = task_psnr(built, run, crop)
                task_fp32 = task if task_fp32 is None else task_fp32
                row += f" {task:>8.2f} {task_fp32 - task:>8.3f}"
            rows.append(row)
    rows += [f"  {LABELS.get(p, p):<30} not written: {why}" for p, why in refused.items()]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mprnet", "nlrn", "panet", "grl"])
    p.add_argument("--precisions", nargs="*", choices=list(PRECISIONS), default=list(PRECISIONS),
                   help="besides FP32 (none: FP32 only)")  # fmt: skip
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib-count", type=int, default=16)
    p.add_argument("--calib", type=Path, help="calibration photos (default: see above)")
    p.add_argument("--crop", type=int, default=256, help="centre crop of the held-out photos")
    p.add_argument("--from-dir", type=Path,
                   help="time graphs restore-export already wrote there instead of exporting")  # fmt: skip
    p.add_argument("--weights", nargs="*", default=[], metavar="NAME=FILE",
                   help="weights of a model given by registry name (default: bundled or random)")
    p.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=None,
                   help="OpenVINO rows (default: where OpenVINO and NNCF are installed)")
    p.add_argument("--malloc-default", action="store_true",
                   help="leave glibc's malloc as it is (PyTorch then pays page faults per run)")  # fmt: skip
    args = p.parse_args()
    weights = dict(w.split("=", 1) for w in args.weights)
    weights = {resolve(k).name: Path(v) for k, v in weights.items()}
    openvino = args.openvino
    if openvino is None:
        openvino = all(importlib.util.find_spec(m) for m in ("openvino", "nncf"))
    kept = False if args.malloc_default else keep_freed_memory()
    print(
        f"numpy {np.__version__}, torch {torch.__version__}, threads {args.threads}, "
        f"median of {args.runs} runs after one warm-up, freed memory "
        + ("kept (glibc mallopt)" if kept else "returned to the system (malloc default)")
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                rows = bench_model(name, args.precisions, args.from_dir, args.runs, args.threads,
                                   args.calib_count, args.calib, args.crop, Path(tmp),
                                   weights.get(resolve(name).name), openvino)  # fmt: skip
            except Exception as exc:  # one model failing should not hide the others
                rows = [f"{name}: failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"]
            print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()

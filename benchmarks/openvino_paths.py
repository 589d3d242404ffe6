"""The fastest correct CPU path, per model: ONNX Runtime FP32 against OpenVINO FP32, BF16 and every
INT8 path (ONNX Runtime on the ``ort-cpu`` Q/DQ graph, OpenVINO on the same graph, OpenVINO on the
TensorRT-layout Q/DQ graph, OpenVINO's own NNCF INT8), one process, this CPU, a fixed thread count.

For each model (the demo models with their shipped weights, and full-size MPRNet-deblur and GRL-T
with seeded random weights), at batch 1 on one tile:

- median latency of each path, timed in turns (``alternating_medians``: each path gets the same
  share of a shared machine's load), and the ratio to ONNX Runtime FP32;
- PSNR of each path's output against ONNX Runtime FP32 on real photo tiles (the shipped samples,
  cut by the runtime's tile plan), and NaN/Inf; a path that gives NaN or misses its gate (FP32:
  float rounding, BF16 45 dB, INT8 35 dB) is marked, never counted as the fastest correct one;
- the physical bound: GFLOP/s achieved (the graph's Conv/ConvTranspose/MatMul/Gemm FLOPs, 2 per
  multiply-add, counted from the ONNX with shapes inferred at batch 1, divided by the latency)
  against this CPU's FP32 FMA peak: derived as cores x FMA units x FP32 lanes x 2 x GHz (the
  flags and clock from /proc/cpuinfo; 2 FMA units per core for AMD Zen 2-4 and Intel since
  Haswell; AMD before Zen 5 executes AVX-512 on 256-bit units, so 8 FP32 lanes there), and
  measured with one large MatMul in ONNX Runtime and OpenVINO.

BF16 runs only where the CPU has AMX-BF16 or AVX512-BF16 (else the row says "not available on this
CPU", with the flags found). INT8 models are made once in ``--work`` (calibration: ``--calib-count``
shipped-photo tiles, min-max for the Q/DQ graphs, no sensitivity search, so the PSNR shown is the
plain calibration's; NNCF with its gate and search). A second run with the same ``--work`` only
times, so the slow preparation can run while the machine is busy and the timing run alone:

    python benchmarks/openvino_paths.py --work /tmp/ovbench                      # prepare (and time)
    pkill -STOP -f train_demo.py; trap 'pkill -CONT -f train_demo.py' EXIT
    python benchmarks/openvino_paths.py --work /tmp/ovbench                      # time only
    python benchmarks/openvino_paths.py --models mprnet.demo_dn_s25 --tile 128   # one model
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx
from timing import keep_freed_memory  # noqa: F401 - same sys.path set-up as the other scripts

from restorekit.calibration.feeds import feeds_from_images
from restorekit.data import sample_paths
from restorekit.errors import RestoreKitError
from restorekit.export.cpu_speed import alternating_medians
from restorekit.manifest import read_manifest
from restorekit.metrics import psnr
from restorekit.naming import onnx_name
from restorekit.onnx_graph import name_nodes
from restorekit.runtime.cpu_features import cpu_features
from restorekit.runtime.ort_backend import OrtOptions, ort_session

# (registry name, tile) of the demo models at their default tiles and the full-size ones.
DEFAULT_MODELS = (
    ("mprnet.demo_dn_s25", 256),
    ("nlrn.demo_dn_s25", 32),
    ("panet.demo_dn_s25", 32),
    ("grl-t.demo_dn_s25", 256),
    ("mprnet.deblur", 128),
    ("grl-t.dn_c3s25", 128),
)
FMA_UNITS = 2  # per core: AMD Zen 2/3/4, Intel Haswell and later
GATES = {"fp32": None, "bf16": 45.0, "int8": 35.0}


@dataclass
class Candidate:
    """One way to run a model: a name, a callable on a batch, its precision."""

    name: str
    run: object
    precision: str
    note: str = ""


def conv_matmul_flops(path: Path) -> float:
    """FLOPs (2 per multiply-add) of the graph's convolutions and matrix products at batch 1.

    Shapes come from OpenVINO's reading of the ONNX with the input fixed to batch 1: ONNX shape
    inference leaves NLRN's and GRL's reshaped tensors symbolic, OpenVINO's is complete.
    """
    import openvino as ov

    model = ov.Core().read_model(str(path))
    shape = list(model.inputs[0].get_partial_shape())
    model.reshape({0: ov.PartialShape([1, *shape[1:]])})
    total = 0.0
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"):
            continue
        out = list(op.get_output_shape(0))
        a, w = list(op.get_input_shape(0)), list(op.get_input_shape(1))
        if kind == "Convolution":  # w: (Cout, Cin, kh, kw)
            total += 2.0 * math.prod(out) * math.prod(w[1:])
        elif kind == "GroupConvolution":  # w: (G, Cout/G, Cin/G, kh, kw)
            total += 2.0 * math.prod(out) * math.prod(w[2:])
        elif kind == "ConvolutionBackpropData":  # w: (Cin, Cout, kh, kw): each input meets all
            total += 2.0 * math.prod(a) * math.prod(w[1:])
        else:  # MatMul: the contracted length is the first input's last (or transposed) dim
            k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
            total += 2.0 * math.prod(out) * k
    return total


def _cpuinfo_field(name: str) -> str:
    """The first value of ``name`` in /proc/cpuinfo ('' when absent)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":")[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def fp32_lanes(flags: tuple[str, ...], vendor: str, family: int) -> int:
    """FP32 lanes one FMA unit completes per cycle: the vector width the core executes, which is
    not always the widest instruction set it decodes. AMD before Zen 5 (family 0x1A) runs AVX-512
    as two 256-bit halves on 256-bit units (Zen 4), so it counts as AVX2 there."""
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 0x1A):
        return 16
    return 8 if "avx2" in flags else 4


def derived_peak() -> tuple[float, str]:
    """FP32 FMA peak from the flags and clock in /proc/cpuinfo, with how it was derived."""
    cpu = cpu_features()
    family = _cpuinfo_field("cpu family")
    lanes = fp32_lanes(cpu.flags, _cpuinfo_field("vendor_id"), int(family) if family else 0)
    mhz = float(_cpuinfo_field("cpu MHz") or 0.0)
    peak = cpu.cores * FMA_UNITS * lanes * 2 * mhz / 1e3
    how = (f"{cpu.cores} cores x {FMA_UNITS} FMA units x {lanes} FP32 lanes x 2 FLOP x "
           f"{mhz / 1e3:.3f} GHz (/proc/cpuinfo 'cpu MHz'"
           f"{'; AVX-512 on 256-bit units' if lanes == 8 and 'avx512f' in cpu.flags else ''})")  # fmt: skip
    return peak, how


def measured_matmul(threads: int, n: int = 2048) -> dict[str, float]:
    """GFLOP/s of one n x n x n float32 MatMul in ONNX Runtime and OpenVINO (median of 5)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = rng.standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    a = rng.standard_normal((n, n), dtype=np.float32)
    ort = ort_session(model.SerializeToString(), OrtOptions(threads=threads, quiet=True))
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads,
                                   "INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
    request = compiled.create_infer_request()
    ort_s, ov_s = alternating_medians(
        [lambda: ort.run(None, {"a": a}), lambda: request.infer({0: a})], 5
    )
    flops = 2.0 * n**3
    return {"onnxruntime": flops / ort_s / 1e9, "openvino": flops / ov_s / 1e9}


def prepare(
    name: str, tile: int, work: Path, calib_count: int, make: bool = True
) -> dict[str, Path | str]:
    """The FP32 ONNX (exported once), its Q/DQ graphs and NNCF INT8 model (made once); with
    ``make`` False only what is already in ``work`` (missing graphs are noted, not made)."""
    folder = work / name
    fp32 = folder / onnx_name(name, "fp32", (tile, tile))
    if not make:
        from restorekit.runtime.openvino_backend import ov_int8_path

        made: dict[str, Path | str] = {"fp32": fp32}
        for layout in ("ort-cpu", "tensorrt"):
            path = folder / f"{fp32.stem}.qdq-{layout}.onnx"
            made[f"qdq-{layout}"] = path if path.is_file() else "not made in time for this run"
        failed = folder / "nncf.failed.txt"
        nncf = ov_int8_path(fp32)
        made["nncf"] = (nncf if nncf.is_file() else failed.read_text().strip()
                        if failed.is_file() else "not made in time for this run")  # fmt: skip
        return made
    if not fp32.is_file():
        from restorekit.export.pipeline import ExportOptions, export_model

        print(f"[{name}] exporting FP32 at {tile}x{tile}", file=sys.stderr, flush=True)
        export_model(ExportOptions(model=name, tile=(tile, tile), output_dir=folder))
    made: dict[str, Path | str] = {"fp32": fp32}
    manifest = read_manifest(fp32)
    calibration = None
    for layout in ("ort-cpu", "tensorrt"):
        path = folder / f"{fp32.stem}.qdq-{layout}.onnx"
        if not path.is_file():
            from restorekit.calibration.qdq import qdq_from_model

            print(f"[{name}] Q/DQ {layout} (min-max, {calib_count} tiles)", file=sys.stderr,
                  flush=True)  # fmt: skip
            calibration = calibration or feeds_from_images(sample_paths(), manifest, calib_count)
            model = onnx.load(str(fp32))
            del model.metadata_props[:]
            name_nodes(model)
            result = qdq_from_model(model, calibration, "minmax", layout=layout)
            onnx.save(result.model, str(path))
        made[f"qdq-{layout}"] = path
    from restorekit.runtime.openvino_backend import ov_int8_path

    failed = folder / "nncf.failed.txt"
    if ov_int8_path(fp32).is_file():
        made["nncf"] = ov_int8_path(fp32)
    elif failed.is_file():
        made["nncf"] = failed.read_text().strip()
    else:
        from restorekit.calibration.openvino_int8 import ov_int8_from_onnx

        print(f"[{name}] NNCF INT8 ({calib_count} tiles)", file=sys.stderr, flush=True)
        try:
            made["nncf"] = ov_int8_from_onnx(fp32, count=calib_count, threads=2).path
        except RestoreKitError as exc:
            failed.write_text(str(exc).split("\n")[0] + "\n")
            made["nncf"] = failed.read_text().strip()
    return made


def measure(name: str, tile: int, made: dict, threads: int, runs: int, peak: float) -> dict:
    """Every path of one model timed in turns, scored against ONNX Runtime FP32."""
    import openvino as ov

    from restorekit.runtime.openvino_backend import bf16_refusal

    manifest = read_manifest(made["fp32"])
    vr = manifest.output.value_range
    tiles = feeds_from_images(sample_paths(), manifest, 4, seed=1).tiles
    core = ov.Core()

    def ort_path(path: Path):
        session = ort_session(path, OrtOptions(threads=threads, quiet=True))
        return lambda x: session.run(None, {"input": x})[0]

    def ov_path(path: Path | onnx.ModelProto, hint: str):
        compiled = core.compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY"})  # fmt: skip
        request = compiled.create_infer_request()

        def run(x):
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        return run

    paths: list[Candidate] = []
    skipped = {}

    def add(label: str, open_path, precision: str) -> None:
        """One path (``open_path()`` compiles it), or a skipped row saying why OpenVINO could
        not compile it."""
        try:
            run = open_path()
        except RuntimeError as exc:  # OpenVINO's compile errors are untyped
            lines = [line for line in str(exc).splitlines() if line.strip()]
            skipped[label] = f"OpenVINO cannot compile it: {lines[-1] if lines else exc}"
            return
        paths.append(Candidate(label, run, precision))

    fp32 = made["fp32"]
    add("ONNX Runtime FP32", partial(ort_path, fp32), "fp32")
    add("OpenVINO FP32", partial(ov_path, fp32, "f32"), "fp32")
    refusal = bf16_refusal(cpu_features(), list(core.get_property("CPU",
                                                                  "OPTIMIZATION_CAPABILITIES")))  # fmt: skip
    if refusal is None:
        add("OpenVINO BF16", partial(ov_path, fp32, "bf16"), "bf16")
    else:
        skipped["OpenVINO BF16"] = f"not available on this CPU ({cpu_features().describe()})"
        # The evidence for refusing: with the hint, OpenVINO here computes FP32 at FP32's speed.
        add("OpenVINO, bf16 hint (ignored: FP32)", partial(ov_path, fp32, "bf16"), "fp32")
    qdq = [("ONNX Runtime INT8 (ort-cpu Q/DQ)", "qdq-ort-cpu", ort_path),
           ("OpenVINO INT8 (ort-cpu Q/DQ, 7-bit w)", "qdq-ort-cpu", partial(ov_path, hint="f32")),
           ("OpenVINO INT8 (TensorRT Q/DQ, 8-bit w)", "qdq-tensorrt", partial(ov_path, hint="f32"))]  # fmt: skip
    for label, key, opener in qdq:
        if not isinstance(made[key], Path):
            skipped[label] = made[key]
        else:
            add(label, partial(opener, made[key]), "int8")
    if isinstance(made["nncf"], Path):
        add("OpenVINO INT8 (NNCF)", partial(ov_path, made["nncf"], "f32"), "int8")
    else:
        skipped["OpenVINO INT8 (NNCF)"] = made["nncf"]
    reference = np.concatenate([paths[0].run(t[None]) for t in tiles])
    scores = {}
    for p in paths:
        got = np.concatenate([p.run(t[None]) for t in tiles])
        bad = int((~np.isfinite(got)).sum())
        clean = np.nan_to_num(got / vr, nan=0.0, posinf=1.0, neginf=0.0)
        scores[p.name] = (psnr(clean, reference / vr, 1.0), bad)
    x = tiles[:1]
    seconds = alternating_medians([lambda p=p: p.run(x) for p in paths], runs)
    flops = conv_matmul_flops(made["fp32"])
    rows = []
    for p, s in zip(paths, seconds, strict=True):
        db, bad = scores[p.name]
        gate = GATES[p.precision]
        correct = bad == 0 and (db > 100 if gate is None else db >= gate)
        rows.append({"path": p.name, "ms": s * 1e3, "ratio": s / seconds[0], "psnr": db,
                     "nonfinite": bad, "correct": correct, "gflops": flops / s / 1e9,
                     "peak_pct": 100 * flops / s / 1e9 / peak})  # fmt: skip
    return {"model": name, "tile": tile, "gflop": flops / 1e9, "rows": rows, "skipped": skipped}


def table(result: dict) -> list[str]:
    lines = [f"**{result['model']}**, {result['tile']}x{result['tile']}, "
             f"{result['gflop']:.2f} GFLOP (Conv/MatMul) per tile", "",
             "| path | ms | × ORT FP32 | PSNR vs FP32 dB | NaN/Inf | correct | GFLOP/s | % FP32 peak |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        db = "inf" if math.isinf(r["psnr"]) else f"{r['psnr']:.1f}"
        lines.append(f"| {r['path']} | {r['ms']:.1f} | {r['ratio']:.2f} | {db} | {r['nonfinite']} "
                     f"| {'yes' if r['correct'] else 'NO'} | {r['gflops']:.1f} | "
                     f"{r['peak_pct']:.0f} |")  # fmt: skip
    for path, why in result["skipped"].items():
        lines.append(f"| {path} | – | – | – | – | – | – | – |")
        lines.append(f"|  ↳ {why[:160]} | | | | | | | |")
    correct = [r for r in result["rows"] if r["correct"]]
    if correct:
        best = min(correct, key=lambda r: r["ms"])
        lines += ["", f"fastest correct: {best['path']}, {best['ratio']:.2f}× ORT FP32"]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", help="registry names (default: demo + full models)")
    p.add_argument("--tile", type=int, help="tile side for every model given (default: per model)")
    p.add_argument("--work", type=Path, default=Path("/tmp/restorekit-openvino-bench"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--calib-count", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--prepared-only", action="store_true",
                   help="make nothing: time what is already in --work (the run with the machine "
                   "otherwise quiet)")  # fmt: skip
    args = p.parse_args(argv)
    tiles = dict(DEFAULT_MODELS)
    models = [(m, args.tile or tiles.get(m, 256)) for m in (args.models or tiles)]
    peak, how = derived_peak()
    measured = measured_matmul(args.threads)
    cpu = cpu_features()
    import onnxruntime
    import openvino

    print(f"CPU: {cpu.describe()}, {args.threads} threads; ONNX Runtime "
          f"{onnxruntime.__version__}, OpenVINO {openvino.__version__.split('-')[0]}")  # fmt: skip
    amx = "AMX present" if "amx_bf16" in cpu.flags else "no AMX on this CPU: no AMX peak"
    print(f"FP32 FMA peak: {peak:.1f} GFLOP/s derived ({how}); a 2048^3 MatMul reaches "
          f"{measured['onnxruntime']:.1f} (ONNX Runtime) and {measured['openvino']:.1f} "
          f"(OpenVINO) GFLOP/s; {amx}")  # fmt: skip
    results = []
    for name, tile in models:
        started = time.perf_counter()
        fp32 = args.work / name / onnx_name(name, "fp32", (tile, tile))
        if args.prepared_only and not fp32.is_file():
            print(f"\n{name} {tile}x{tile}: not exported in {args.work}, skipped", flush=True)
            continue
        made = prepare(name, tile, args.work, args.calib_count, make=not args.prepared_only)
        result = measure(name, tile, made, args.threads, args.runs, peak)
        result["seconds"] = time.perf_counter() - started
        results.append(result)
        print("\n" + "\n".join(table(result)), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"peak_derived": peak, "peak_how": how,
                                         "matmul_measured": measured, "results": results},
                                        indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

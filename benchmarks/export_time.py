"""Wall and CPU time of ``restore-export``, stage by stage, before and after a change.

Each export runs in a fresh child process (``--child``), so memory and caches of one run never
help another. The child drives ``export_model`` exactly as ``restore-export`` does and records
every stage event the pipeline reports (``on_stage``): the top-level stages and the sub-steps of
the FP16 plan and the INT8 search (``fp16: trying Softmax in FP16``). The time between two
events is charged to the first. CPU time is the process's user + system time (ONNX Runtime's and
PyTorch's threads included); on a shared machine it varies less than wall time, so both are shown,
with the load average at the start and end of each run.

"Before" is another checkout run the same way in a subprocess (``--baseline-src DIR``, e.g. a
``git worktree`` of an older commit; the child imports restorekit from there) or the JSON of an
earlier run (``--baseline-json``). "After" is this checkout.

    python benchmarks/export_time.py --baseline-src /work/base --json export_time.json

Default exports: ``grl-t.dn_c3s25 --fp16 --calib-count 8`` and ``mprnet.deblur --int8`` (random
weights, as ``restore-export`` uses without ``--weights``). ``--export "ARGS"`` (repeatable) takes
any ``restore-export`` arguments instead. ``--profile DIR`` also writes a cProfile of each child.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_EXPORTS = ("grl-t.dn_c3s25 --fp16 --calib-count 8", "mprnet.deblur --int8")
TOP_STAGES = ("build", "trace", "simplify", "check", "verify", "write", "calibrate", "lower",
              "verify lowered", "write lowered")  # fmt: skip

# Sub-step labels (after "fp16: " / "int8: ") grouped into one row each, by their first words.
SUB_STEPS = (
    ("measuring activation ranges", "ranges"),
    ("trying", "release trials"),
    ("calibrating", "calibration"),
    ("scoring", "scoring the calibrated graph"),
    ("measuring per-layer sensitivity", "layer sensitivity"),
    ("excluding", "exclusion trials"),
    ("timing", "CPU speed"),
    ("OpenVINO", "OpenVINO row"),
)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(args: list[str], output_dir: Path) -> dict:
    """Export once in this process with ``restore-export`` ``args``; the stage events and totals."""
    from restorekit.cli.export import build_parser
    from restorekit.export.pipeline import ExportOptions, export_model

    a = build_parser().parse_args(args)
    options = ExportOptions(
        model=a.model, weights=a.weights, tile=a.tile, batch=a.batch, output_dir=output_dir,
        opset=a.opset, simplify=not a.no_simplify, dynamic=a.dynamic,
        images=tuple(a.images) if a.images else None, seed=a.seed,
        precision="fp16" if a.fp16 else "int8" if a.int8 else "fp32", calib=a.calib,
        calib_count=a.calib_count, calib_method=a.calib_method, min_psnr=a.min_psnr,
        int8_layout=a.int8_layout,
    )  # fmt: skip
    events: list[tuple[str, float, float]] = []
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()

    def on_stage(name: str) -> None:
        events.append((name, time.perf_counter() - start_wall, _cpu_seconds() - start_cpu))
        print(f"[{events[-1][1]:8.1f} s] {name}", file=sys.stderr, flush=True)

    load_start = os.getloadavg()
    result = export_model(options, on_stage)
    events.append(("end", time.perf_counter() - start_wall, _cpu_seconds() - start_cpu))
    report = json.loads(Path(result.report_path).read_text())
    return {
        "export": args,
        "events": events,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worst": {k: report[k].get("worst") for k in ("fp32", "fp16", "int8") if k in report},
    }


def stage_rows(events: list[list]) -> dict[str, tuple[float, float]]:
    """(wall, cpu) seconds per row: top-level stages, sub-steps as ``stage: group``, ``total``."""
    rows: dict[str, list[float]] = {}
    top = None
    for (name, wall, cpu), (_, next_wall, next_cpu) in zip(events, events[1:], strict=False):
        if name in TOP_STAGES:
            top, row = name, name
        else:
            label = name.split(": ", 1)[-1]
            group = next((g for prefix, g in SUB_STEPS if label.startswith(prefix)), label)
            row = f"{top}: {group}"
        acc = rows.setdefault(row, [0.0, 0.0])
        acc[0] += next_wall - wall
        acc[1] += next_cpu - cpu
    rows["total"] = [events[-1][1], events[-1][2]]
    return {k: (v[0], v[1]) for k, v in rows.items()}


def _child_command(src: Path, args: str, out: Path, json_path: Path, profile: Path | None):
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [
        str(Path(__file__).resolve()),
        "--child",
        args,
        "-o",
        str(out),
        "--json",
        str(json_path),
    ]
    env = dict(os.environ, PYTHONPATH=str(src))
    return cmd, env


def run_side(src: Path, exports: list[str], work: Path, tag: str, profile: Path | None) -> dict:
    """Every export, each in a child process importing restorekit from ``src``."""
    runs = {}
    git = ["git", "-C", str(src)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "restorekit"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    commit += " + uncommitted changes" if dirty else ""
    for k, args in enumerate(exports):
        out = work / f"{tag}{k}"
        json_path = work / f"{tag}{k}.json"
        prof = profile / f"{tag}{k}.prof" if profile else None
        cmd, env = _child_command(src, args, out, json_path, prof)
        print(f"== {tag}: restore-export {args} (restorekit from {src})", file=sys.stderr)
        subprocess.run(cmd, env=env, check=True)
        runs[args] = json.loads(json_path.read_text())
    return {"src": str(src), "commit": commit, "runs": runs}


def table(before: dict | None, after: dict) -> str:
    """A markdown table per export: wall and CPU seconds per stage, before and after."""
    lines = []
    for args, run in after["runs"].items():
        b = (before or {}).get("runs", {}).get(args)
        rb = stage_rows(b["events"]) if b else {}
        ra = stage_rows(run["events"])
        names = list(dict.fromkeys([*rb, *ra]))
        names.remove("total")
        lines += [f"`restore-export {args}`", ""]
        lines.append("| stage | before wall s | after wall s | before CPU s | after CPU s |")
        lines.append("|---|---|---|---|---|")
        for name in [*names, "total"]:
            bw, bc = rb.get(name, (None, None))
            aw, ac = ra.get(name, (None, None))
            bold = "**" if name == "total" else ""
            lines.append(f"| {bold}{name}{bold} | {_s(bw)} | {_s(aw)} | {_s(bc)} | {_s(ac)} |")
        load = lambda r: f"{r['loadavg_start'][0]:.1f} -> {r['loadavg_end'][0]:.1f}"  # noqa: E731
        lines.append("")
        lines.append(
            (f"before: {before['commit']}, load {load(b)}, peak RSS {b['peak_rss_mb']:.0f} MB; " if b else "")
            + f"after: {after['commit']}, load {load(run)}, peak RSS {run['peak_rss_mb']:.0f} MB"
        )  # fmt: skip
        for side, r in (("before", b), ("after", run)):
            if r:
                figures = ", ".join(f"{k} PSNR {w['psnr']:.2f} dB max abs {w['max_abs']:.2e}"
                                    for k, w in r["worst"].items() if w)  # fmt: skip
                lines.append(f"{side}: {figures}")
        lines.append("")
    return "\n".join(lines)


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}" if seconds < 60 else f"{seconds:.0f} ({seconds / 60:.1f} min)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", action="append", help="restore-export arguments (repeatable)")
    p.add_argument("--baseline-src", type=Path, help="checkout to run as 'before'")
    p.add_argument(
        "--baseline-json",
        type=Path,
        help="JSON of an earlier run (its 'before' if it ran only that, else 'after')",
    )
    p.add_argument("--baseline-only", action="store_true", help="run only --baseline-src")
    p.add_argument("--json", type=Path, help="write all figures here")
    p.add_argument("--profile", type=Path, help="folder for a cProfile of each child")
    p.add_argument("-o", "--work", type=Path, help="folder for the exported files (default: temp)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        with tempfile.TemporaryDirectory() as tmp:
            record = run_child(shlex.split(a.child), a.work or Path(tmp))
        a.json.write_text(json.dumps(record, indent=1))
        return
    exports = a.export or list(DEFAULT_EXPORTS)
    repo = Path(__file__).resolve().parent.parent
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="export-time-") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        before = None
        if a.baseline_json:
            earlier = json.loads(a.baseline_json.read_text())
            before = earlier["after"] or earlier["before"]
        elif a.baseline_src:
            before = run_side(a.baseline_src.resolve(), exports, work, "before", a.profile)
        after = None if a.baseline_only else run_side(repo, exports, work, "after", a.profile)
    if a.json:
        a.json.write_text(json.dumps({"before": before, "after": after}, indent=1))
    from restorekit.runtime.cpu_features import cpu_features

    print(f"Machine: {os.cpu_count()} cores, {cpu_features().describe()} (see the load averages)")
    print(table(None, before) if after is None else table(before, after))


if __name__ == "__main__":
    main()

"""restore-build as a user runs it: exit codes, one-line errors, the no-TensorRT message, a build
through a fake TensorRT; and what the CLI shows around a build (progress bars, the
restore-build command) for restore-build and restore-export --engine."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from restorekit.cli import build as build_cli
from restorekit.cli.build import (
    BuildProgress,
    build_parser,
    engine_or_command,
    options_from_args,
)
from restorekit.tensorrt import builder
from restorekit.tensorrt.plan import EngineBuildOptions, build_command
from tests.tensorrt.fake_trt import ORIN, make_fake_trt, make_manifest, write_onnx_artifact


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fake_tensorrt(monkeypatch):
    def install(**kwargs):
        trt = make_fake_trt(**kwargs)
        monkeypatch.setattr(builder, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(builder, "query_device", lambda index=0: ORIN)
        return trt

    return install


def test_without_tensorrt_exit_2_names_pip_extra_and_jetpack_even_without_torch(tmp_path):
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['tensorrt'] = None\n"
        "from restorekit.cli.build import main\n"
        f"sys.exit(main([{str(onnx)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: building a TensorRT engine needs the Python package 'tensorrt'")
    assert "pip install 'restorekit[tensorrt]'" in err and "python3-libnvinfer" in err
    assert "Traceback" not in err


def test_missing_onnx_exit_2(tmp_path, capsys):
    assert build_cli.main([str(tmp_path / "nope.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_build_through_fake_tensorrt(tmp_path, capsys, fake_tensorrt):
    trt = fake_tensorrt(version="10.3.0")
    onnx = write_onnx_artifact(tmp_path / "models", make_manifest(tile=(64, 96), batch=4))
    out = tmp_path / "engines"
    code = build_cli.main([str(onnx), "-o", str(out), "--batch", "2", "--workspace", "0.5",
                           "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    engine = out / "mprnet.deblur.fp16.64x96.trt10.3.0.sm87.engine"
    assert engine.is_file() and (out / (engine.name + ".json")).is_file()
    assert f"wrote {engine}" in printed and "strongly typed" in printed
    assert "TensorRT warned 1 time(s); first: fake warning" in printed
    set_shape = [args for name, args in trt.calls if name == "set_shape"]
    assert set_shape == [("input", (1, 3, 64, 96), (2, 3, 64, 96), (2, 3, 64, 96))]


def test_out_of_memory_build_exit_2_with_advice(tmp_path, capsys, fake_tensorrt):
    fake_tensorrt(
        version="10.3.0",
        build_errors=("Error Code 10: Internal Error (Could not find any implementation for node "
                      "/conv/Conv.)",),
    )  # fmt: skip
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    assert build_cli.main([str(onnx), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: building mprnet.deblur.fp16.64x96.trt10.3.0.sm87.engine ran out")
    assert "--workspace" in err and "shares system memory" in err


def test_shape_options_on_a_static_onnx_exit_2(tmp_path, capsys, fake_tensorrt):
    fake_tensorrt(version="10.3.0")
    onnx = write_onnx_artifact(tmp_path, make_manifest(tile=(64, 96)))
    assert build_cli.main([str(onnx), "--max-shape", "128"]) == 2
    assert "exported for 64x96 tiles only" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["x.onnx", "--workspace", "0"], ["x.onnx", "--batch", "0"],
                                  ["x.onnx", "--max-shape", "12x"]])  # fmt: skip
def test_bad_arguments_are_usage_errors(argv):
    with pytest.raises(SystemExit) as info:
        build_cli.build_parser().parse_args(argv)
    assert info.value.code == 2


def test_restore_export_engine_without_tensorrt_prints_the_build_command(
    tmp_path, capsys, monkeypatch
):
    # Only the CLI wiring is under test: the export itself is replaced by one that writes a
    # ready artifact (tests/cli/test_export_cli.py runs real exports).
    pytest.importorskip("torch")  # restore-export's pipeline module imports it
    import types

    from restorekit.cli import export as export_cli
    from restorekit.export import pipeline

    def fake_export(options, on_stage=None):
        onnx = write_onnx_artifact(tmp_path, make_manifest(tile=(256, 256), batch=options.batch))
        return types.SimpleNamespace(onnx_path=onnx)

    monkeypatch.setattr(pipeline, "export_model", fake_export)
    monkeypatch.setattr(export_cli, "export_summary", lambda result: ["exported"])
    monkeypatch.setattr(builder, "tensorrt_available", lambda: False)
    assert export_cli.main(["mprnet", "--batch", "2", "--engine", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "exported"
    assert out[-1].strip() == "restore-build mprnet.deblur.fp16.256x256.onnx"
    assert "TensorRT is not installed here" in out[1]


def test_build_shows_tensorrt_build_phases_as_progress_bars(tmp_path, capsys, fake_tensorrt):
    trt = fake_tensorrt(version="10.3.0")
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    assert build_cli.main([str(onnx)]) == 0
    # Progress came through trt.IProgressMonitor into tqdm, and the build was not cancelled.
    assert [args for name, args in trt.calls if name == "step_complete->"] == [(True,)] * 3
    assert "Building engine" in capsys.readouterr().err


def test_build_progress_tracks_nested_phases():
    out = io.StringIO()
    prog = BuildProgress(stream=out)
    prog.phase_start("Build", None, 2)
    prog.phase_start("Tactics", "Build", 3)
    assert [prog.step_complete("Tactics", s) for s in range(3)] == [True] * 3
    assert prog.bars["Tactics"].n == 3
    prog.phase_finish("Tactics")
    prog.cancelled = True
    assert prog.step_complete("Build", 0) is False  # asks TensorRT to stop
    prog.close()
    assert prog.bars == {} and "Tactics" in out.getvalue()
    assert BuildProgress(enabled=False).step_complete("x", 0) is True


# --- the command line for the target ------------------------------------------------------------


def test_build_command_round_trips_through_restore_build(tmp_path):
    options = EngineBuildOptions(
        output_dir=Path("out dir"), workspace_gib=1.5, batch=2, min_shape=(64, 64),
        opt_shape=(128, 128), max_shape=(256, 320), timing_cache=Path("t.cache"),
        hardware_compatible=True, version_compatible=True,
    )  # fmt: skip
    cmd = build_command("m.fp16.dynamic.onnx", options)
    assert cmd == (
        "restore-build m.fp16.dynamic.onnx -o 'out dir' --workspace 1.5 --batch 2 "
        "--min-shape 64x64 --opt-shape 128x128 --max-shape 256x320 --timing-cache t.cache "
        "--hardware-compatible --version-compatible"
    )
    argv = shlex.split(cmd)
    args = build_parser().parse_args(argv[1:])
    assert args.onnx == Path("m.fp16.dynamic.onnx") and options_from_args(args) == options
    assert build_command("a.onnx") == "restore-build a.onnx"


def test_without_tensorrt_export_prints_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setattr(builder, "tensorrt_available", lambda: False)
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    lines = engine_or_command(onnx, EngineBuildOptions(batch=4))
    assert lines[-1].strip() == f"restore-build {onnx.name} --batch 4"
    assert "not installed" in lines[0] and f"{onnx.name}.json" in lines[1]


def test_with_tensorrt_export_builds(tmp_path, monkeypatch):
    trt = make_fake_trt("10.3.0")
    monkeypatch.setattr(builder, "tensorrt_available", lambda: True)
    monkeypatch.setattr(builder, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(builder, "query_device", lambda index=0: ORIN)
    onnx = write_onnx_artifact(tmp_path, make_manifest())
    lines = engine_or_command(onnx, progress=False)
    assert any(line.startswith("wrote ") and ".trt10.3.0.sm87.engine" in line for line in lines)

"""restore-build as a user runs it: exit codes, one-line errors, the no-TensorRT message, a build
through a fake TensorRT."""

from __future__ import annotations

import subprocess
import sys

import pytest

from restorekit.cli import build as build_cli
from restorekit.device import DeviceFacts
from restorekit.export import engine_trt
from tests.export.fake_trt import make_fake_trt, make_manifest, write_onnx_artifact

ORIN = DeviceFacts("Orin", "8.7", 64 * 2**30, jetson=True)


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fake_tensorrt(monkeypatch):
    def install(**kwargs):
        trt = make_fake_trt(**kwargs)
        monkeypatch.setattr(engine_trt, "import_tensorrt", lambda: trt)
        monkeypatch.setattr("restorekit.device.query_device", lambda index=0: ORIN)
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
    import types

    from restorekit.cli import export as export_cli
    from restorekit.export import pipeline

    def fake_export(options, on_stage=None):
        onnx = write_onnx_artifact(tmp_path, make_manifest(tile=(256, 256), batch=options.batch))
        return types.SimpleNamespace(onnx_path=onnx)

    monkeypatch.setattr(pipeline, "export_model", fake_export)
    monkeypatch.setattr(pipeline, "export_summary", lambda result: ["exported"])
    monkeypatch.setattr(engine_trt, "tensorrt_available", lambda: False)
    assert export_cli.main(["mprnet", "--batch", "2", "--engine", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "exported"
    assert out[-1].strip() == "restore-build mprnet.deblur.fp16.256x256.onnx"
    assert "TensorRT is not installed here" in out[1]

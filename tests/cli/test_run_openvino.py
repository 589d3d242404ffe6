"""``restore-run --backend openvino|auto --precision``: the result equals plain restore-run's, and
user mistakes exit 2 with a message."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from restorekit.cli.run import main  # noqa: E402
from restorekit.runtime.cpu_features import cpu_features  # noqa: E402
from restorekit.runtime.imageio import read_image, write_image  # noqa: E402
from tests.runtime import tinynet  # noqa: E402


@pytest.fixture()
def photo(tmp_path):
    image = np.random.default_rng(5).integers(0, 256, size=(30, 41, 3), dtype=np.uint8)
    write_image(tmp_path / "in.png", image)
    return tmp_path / "in.png"


def _run(*args: str) -> int:
    return main([*map(str, args), "--quiet"])


def test_openvino_and_auto_write_what_plain_restore_run_writes(tmp_path, photo, capsys):
    path, _, _ = tinynet.export_net(tmp_path, batch=2, scale=2)
    assert _run(path, photo, "-o", tmp_path / "ort.png") == 0
    assert _run(path, photo, "-o", tmp_path / "ov.png", "--backend", "openvino") == 0
    assert main([str(path), str(photo), "-o", str(tmp_path / "auto.png"), "--backend", "auto"]) == 0
    err = capsys.readouterr().err
    assert "auto: " in err and "fastest admitted backend" in err
    plain = read_image(tmp_path / "ort.png").astype(int)
    for name in ("ov.png", "auto.png"):  # float rounding may move a pixel by one level
        assert np.abs(read_image(tmp_path / name).astype(int) - plain).max() <= 1


def test_precision_mistakes_exit_2_with_a_message(tmp_path, photo, capsys):
    path, _, _ = tinynet.export_net(tmp_path)
    assert _run(path, photo, "-o", tmp_path / "x.png", "--precision", "int8") == 2
    assert "OpenVINO backend" in capsys.readouterr().err
    if not cpu_features().bf16:
        code = _run(path, photo, "-o", tmp_path / "x.png", "--backend", "openvino",
                    "--precision", "bf16")  # fmt: skip
        assert code == 2
        assert "no amx_bf16/avx512_bf16" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not cpu_features().bf16, reason="needs AMX-BF16 or AVX512-BF16 (not here)")
def test_bf16_restores_a_photo_where_the_cpu_has_it(tmp_path, photo):
    """The issue's line: restore-run x.onnx photo.png --backend openvino --precision bf16."""
    path, _, _ = tinynet.export_net(tmp_path, batch=2, scale=2)
    assert _run(path, photo, "-o", tmp_path / "ort.png") == 0
    assert _run(path, photo, "-o", tmp_path / "bf16.png", "--backend", "openvino",
                "--precision", "bf16") == 0  # fmt: skip
    plain = read_image(tmp_path / "ort.png").astype(np.float64)
    got = read_image(tmp_path / "bf16.png").astype(np.float64)
    assert got.shape == plain.shape
    assert 10 * np.log10(255.0**2 / max(np.mean((got - plain) ** 2), 1e-12)) >= 45.0

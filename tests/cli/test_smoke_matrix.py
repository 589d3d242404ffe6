"""The commands a new user runs first, on every bare model name: ``restore-export MODEL`` with
defaults, ``--fp16`` and ``--int8``, then ``restore-run`` of the written graph on a noisy photo.

Small tiles and few calibration tiles keep it to minutes; everything else is the default path
(the bundled demo weights, the shipped calibration photos, the PSNR targets). The restored photo
is checked against the clean one: every graph of a trained denoiser must remove noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from restorekit.data import sample_paths
from restorekit.metrics import psnr
from restorekit.runtime.imageio import read_image, write_image
from restorekit.runtime.pixels import gray_from_rgb

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

# Small tiles for speed: each a valid tile of the model's demo variant.
TILES = {"mprnet": "64", "grl": "64", "panet": "32", "nlrn": "32"}
CHANNELS = {"mprnet": 3, "grl": 3, "panet": 3, "nlrn": 1}


def _noisy_photo(folder: Path, channels: int) -> tuple[Path, np.ndarray]:
    """A held-out sample photo crop with sigma-25 noise, written as an 8-bit PNG; and the clean
    crop as float in [0, 1]."""
    rgb = read_image(next(p for p in sample_paths() if p.stem == "chelsea"))[64:160, 64:160]
    clean = rgb.astype(np.float64) / 255.0
    if channels == 1:
        clean = gray_from_rgb(clean)
    noise = np.random.default_rng(11).normal(0.0, 25.0 / 255.0, clean.shape)
    noisy = np.round(np.clip(clean + noise, 0.0, 1.0) * 255.0).astype(np.uint8)
    path = folder / "noisy.png"
    write_image(path, noisy)
    return path, clean


@pytest.mark.parametrize("precision", ["", "--fp16", "--int8"], ids=["fp32", "fp16", "int8"])
@pytest.mark.parametrize("model", ["mprnet", "grl", "panet", "nlrn"])
def test_bare_name_exports_and_restores_a_photo(model, precision, tmp_path, capsys):
    from restorekit.cli import export as export_cli
    from restorekit.cli import run as run_cli

    argv = [model, "--tile", TILES[model], "-o", str(tmp_path / "out")]
    if precision:
        argv += [precision, "--calib-count", "4"]
    code = export_cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    written = sorted((tmp_path / "out").glob("*.onnx"))
    kind = {"": "fp32", "--fp16": "fp16", "--int8": "int8"}[precision]
    graph = next((p for p in written if f".{kind}." in p.name), None)
    assert graph is not None, [p.name for p in written]
    # Graphs written for TensorRT keep ONNX-TensorRT's published rules (INT8: no INT32 biases).
    rows = [line for line in out.splitlines() if line.startswith(graph.name)]
    assert rows and rows[0].split()[-1] == "ok", out

    noisy_path, clean = _noisy_photo(tmp_path, CHANNELS[model])
    restored_path = tmp_path / "restored.png"
    code = run_cli.main([str(graph), str(noisy_path), "-o", str(restored_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    restored = read_image(restored_path).astype(np.float64) / 255.0
    noisy = read_image(noisy_path).astype(np.float64) / 255.0
    before, after = psnr(noisy, clean), psnr(restored, clean)
    assert after > before + 3.0, f"{graph.name}: noisy {before:.2f} dB, restored {after:.2f} dB"

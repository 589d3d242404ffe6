"""``restore-check`` on the tiny MPRNet exported by the exporter: figures overall and near seams.

The reported figures are recomputed here independently: PyTorch on the whole image (built from
the registry with the manifest's seed), the runtime's tiled output, and metrics written out in
the test (max abs, PSNR) over the whole image and over a seam band built from the tile starts.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # exports the tiny MPRNet once (~20 s on two busy cores)

from restorekit.cli.check import main  # noqa: E402
from restorekit.export import ExportOptions, export_model  # noqa: E402
from restorekit.models import resolve  # noqa: E402
from restorekit.runtime.imageio import read_image, write_image  # noqa: E402

TINY = resolve("mprnet").spec.tiny


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("check")
    result = export_model(
        ExportOptions(model="mprnet.derain", tile=(32, 32), batch=2, output_dir=folder,
                      build_overrides=TINY, seed=11)
    )  # fmt: skip
    photo = read_image(_sample())
    write_image(folder / "crop40x56.png", photo[100:140, 60:116])
    write_image(folder / "crop32.png", photo[:32, :32])
    return result.onnx_path, folder


def _sample():
    from restorekit.data import sample_paths

    return sample_paths()[2]


def _pytorch_whole(image: np.ndarray) -> np.ndarray:
    import torch

    from restorekit.models.build import model_from_name

    model = model_from_name("mprnet.derain", seed=11, overrides=TINY).module
    x = torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1) / 255)[None]
    with torch.no_grad():
        return model(x)[0][0].numpy()


def test_check_reports_whole_and_seam_figures(exported, tmp_path, capsys):
    onnx_path, folder = exported
    report_path = tmp_path / "report.json"
    code = main([str(onnx_path), str(folder / "crop40x56.png"), "--json", str(report_path),
                 "--threads", "2", "--seam-band", "3"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "seams" in out.out and "whole" in out.out and "PSNR" in out.out
    report = json.loads(report_path.read_text())
    assert report["model"] == "mprnet.derain" and report["weights"] == "random (seed 11)"
    assert report["tile"] == [32, 32] and report["overlap"] == 16 and report["seam_band"] == 3
    (entry,) = report["images"]
    assert entry["tiles"] > 1 and entry["seams"] is not None

    # Independent recomputation of the reported figures.
    from restorekit.runtime.ort_backend import OrtBackend
    from restorekit.runtime.restore import Restorer

    image = read_image(folder / "crop40x56.png")
    want = np.clip(_pytorch_whole(image), 0, 1)
    with OrtBackend(onnx_path) as backend:
        restorer = Restorer(backend, report_manifest(onnx_path))
        got = np.clip(restorer.infer_image(image).output, 0, 1)
        plan = restorer.plan(image.shape[:2])
    err = np.abs(got.astype(np.float64) - want)
    assert entry["whole"]["max_abs"] == pytest.approx(err.max(), rel=1e-6, abs=1e-9)
    mse = float(np.mean(err**2))
    assert entry["whole"]["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    assert entry["whole"]["nonfinite"] == 0 and 0 < entry["whole"]["ssim"] <= 1

    # Seams: middles of the overlaps (tile starts every 16 px on the canvas, 8 px margin).
    band = np.zeros(image.shape[:2], dtype=bool)
    for axis, starts in ((0, plan.y.starts), (1, plan.x.starts)):
        for prev, nxt in zip(starts[:-1], starts[1:], strict=True):
            mid = (nxt + prev + 32) // 2 - 8
            if 0 <= mid < image.shape[axis]:
                sl = slice(max(mid - 3, 0), mid + 3)
                if axis == 0:
                    band[sl, :] = True
                else:
                    band[:, sl] = True
    assert entry["seam_pixels"] == int(band.sum())
    seam_err = err[:, band]
    assert entry["seams"]["max_abs"] == pytest.approx(seam_err.max(), rel=1e-6, abs=1e-9)
    seam_psnr = 10 * math.log10(1 / float(np.mean(seam_err**2)))
    assert entry["seams"]["psnr"] == pytest.approx(seam_psnr, rel=1e-6)


def report_manifest(onnx_path):
    from restorekit.manifest import read_manifest

    return read_manifest(onnx_path)


def test_single_tile_matches_pytorch_to_float_rounding(exported, tmp_path, capsys):
    onnx_path, folder = exported
    report_path = tmp_path / "one.json"
    code = main([str(onnx_path), str(folder / "crop32.png"), "--overlap", "0",
                 "--json", str(report_path)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (entry,) = json.loads(report_path.read_text())["images"]
    assert entry["tiles"] == 1 and entry["seams"] is None
    assert entry["whole"]["max_abs"] <= 1e-4, entry


def test_check_errors_are_one_line(exported, tmp_path, capsys):
    onnx_path, folder = exported
    code = main([str(tmp_path / "nope.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "artifact not found" in err and err.count("\n") == 1
    # an artifact exported from a checkpoint needs that checkpoint
    from restorekit.manifest import read_manifest, write_manifest

    fake = tmp_path / "copy.onnx"
    fake.write_bytes(onnx_path.read_bytes())
    m = read_manifest(onnx_path).replace(weights="model_deraining.pth sha256:abc")
    write_manifest(fake, m)
    code = main([str(fake), str(folder / "crop32.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--weights PATH" in err and err.count("\n") == 1


def test_demo_weights_artifact_checks_without_weights_flag(tmp_path, capsys):
    """An artifact exported with the weights shipped in the package is checked against the same
    shipped weights; a manifest naming another hash of that file is refused."""
    from restorekit.manifest import read_manifest, write_manifest

    result = export_model(ExportOptions(model="panet", output_dir=tmp_path))
    assert result.manifest.weights.startswith("panet.demo_dn_s25.safetensors sha256:")
    photo = tmp_path / "crop.png"  # one tile: PANet's attention spans the whole tile
    write_image(photo, read_image(_sample())[:32, :32])
    report_path = tmp_path / "demo.json"
    code = main([str(result.onnx_path), str(photo), "--overlap", "0", "--json", str(report_path)])
    assert code == 0, capsys.readouterr().err
    worst = json.loads(report_path.read_text())["worst"]["whole"]
    assert worst["max_abs"] <= 2e-4 and worst["nonfinite"] == 0, worst
    stale = tmp_path / "stale.onnx"
    stale.write_bytes(result.onnx_path.read_bytes())
    write_manifest(stale, read_manifest(result.onnx_path).replace(
        weights="panet.demo_dn_s25.safetensors sha256:0123"))  # fmt: skip
    code = main([str(stale), str(photo)])
    err = capsys.readouterr().err
    assert code == 2 and "is not the checkpoint" in err and err.count("\n") == 1

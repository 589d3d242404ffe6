"""``restore-run`` on an image, a folder with a corrupt file, a video file and a camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from restorekit.cli.run import main
from restorekit.runtime.imageio import read_image, write_image
from tests.runtime import tinynet


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path, net, manifest = tinynet.export_net(tmp_path_factory.mktemp("art"), batch=2, scale=2)
    return path, net


def _photo(seed: int, shape=(30, 41, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _expected(net, image: np.ndarray) -> np.ndarray:
    want = tinynet.untiled(net, image.transpose(2, 0, 1).astype(np.float32) / 255, 8)
    return np.clip(want.transpose(1, 2, 0), 0, 1) * 255


def test_single_image(artifact, tmp_path, capsys):
    path, net = artifact
    image = _photo(0)
    write_image(tmp_path / "in.png", image)
    code = main([str(path), str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = read_image(tmp_path / "out.png")
    assert result.shape == (60, 82, 3)
    assert np.abs(result.astype(float) - _expected(net, image)).max() <= 0.5 + 1e-3
    assert out.out.startswith("1 images, 0.00 MP") and "MP/s" in out.out


def test_rgba_photo_keeps_its_alpha_and_jpeg_output_says_it_cannot(artifact, tmp_path, capsys):
    path, net = artifact
    image = _photo(4)
    alpha = np.full(image.shape[:2], 128, np.uint8)
    write_image(tmp_path / "in.png", np.dstack([image, alpha]))
    code = main([str(path), str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = read_image(tmp_path / "out.png")
    assert result.shape == (60, 82, 4) and (result[:, :, 3] == 128).all()
    assert np.abs(result[:, :, :3].astype(float) - _expected(net, image)).max() <= 0.5 + 1e-3
    code = main([str(path), str(tmp_path / "in.png"), "-o", str(tmp_path / "out.jpg"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and read_image(tmp_path / "out.jpg").shape == (60, 82, 3)
    assert "warning:" in err and "alpha" in err and ".png" in err, err


def test_folder_with_corrupt_file_continues_and_reports(artifact, tmp_path, capsys):
    path, _ = artifact
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png", _photo(1))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_image(folder / "c.jpg", _photo(2, (17, 23, 3)))
    code = main([str(path), str(folder), "-o", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.jpg"]
    assert read_image(tmp_path / "out" / "c.jpg").shape == (34, 46, 3)
    assert "b.png" in out.err and "cannot decode" in out.err and "Traceback" not in out.err
    assert out.out.startswith("2 images") and "1 failed" in out.out


def test_glob_and_never_overwrite_input(artifact, tmp_path, capsys):
    path, _ = artifact
    write_image(tmp_path / "x1.png", _photo(3))
    write_image(tmp_path / "x2.png", _photo(4))
    before = (tmp_path / "x1.png").read_bytes()
    code = main([str(path), str(tmp_path / "x*.png"), "-o", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "x1.png").read_bytes() == before
    assert read_image(tmp_path / "x1_restored.png").shape == (60, 82, 3)
    assert (tmp_path / "x2_restored.png").is_file()


def test_video_file_keeps_fps_and_frames(artifact, tmp_path, capsys):
    path, net = artifact
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (40, 24))
    assert writer.isOpened()
    for k in range(5):
        writer.write(_photo(10 + k, (24, 40, 3)))
    writer.release()
    out_video = tmp_path / "restored.avi"
    code = main([str(path), str(video), "-o", str(out_video), "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "5 frames" in out.out
    cap = cv2.VideoCapture(str(out_video))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (48, 80, 3)
        count += 1
    cap.release()
    assert count == 5
    assert not list(tmp_path.glob(".*partial*"))  # the temporary file was renamed into place


@pytest.mark.parametrize(
    "camera, says",
    [
        ("camera:57", "cannot open "),
        # Without GStreamer in this OpenCV the message says so and how to get it; with it,
        # GStreamer's own complaint about the missing element.
        ("videotestsrc num-buffers=1 ! nosuchelement ! appsink", "GStreamer"),
    ],
)
def test_camera_that_cannot_open_is_a_clear_error(artifact, tmp_path, capsys, camera, says):
    path, _ = artifact
    code = main([str(path), camera, "-o", str(tmp_path / "cam.mp4"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_user_errors_are_one_line(artifact, tmp_path, capsys):
    path, _ = artifact
    write_image(tmp_path / "in.png", _photo(5))
    cases = [
        ([str(tmp_path / "missing.onnx"), str(tmp_path / "in.png")], "artifact not found"),
        ([str(path), str(tmp_path / "in.png"), "--tile", "64"], "32x48 tiles only"),
        ([str(path), str(tmp_path / "in.png"), "--batch", "3"], "--batch 2"),
        ([str(path), str(tmp_path / "nothing*.png")], "no inputs to restore"),
    ]
    for argv, message in cases:
        code = main([*argv, "-o", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_nonfinite_output_is_reported_not_written(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from restorekit.manifest import read_manifest, write_manifest

    # A "model" that is NaN wherever the input is below mid-grey: sqrt(x - 0.5).
    path, _, manifest = tinynet.export_net(tmp_path, batch=1, name="nan")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    graph = helper.make_graph(
        [helper.make_node("Sub", ["input", "half"], ["shifted"]),
         helper.make_node("Sqrt", ["shifted"], ["output"])],
        "sqrt_shift",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 48])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 32, 48])],
        [half],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    write_manifest(path, read_manifest(path))
    image = np.full((40, 120, 3), 255, np.uint8)
    image[:, 100:] = 0  # only the right edge is dark
    write_image(tmp_path / "in.png", image)
    code = main([str(path), str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert not (tmp_path / "out.png").exists()
    assert "output not written: NaN/Inf" in err and "tile at y=" in err
    # every reported tile reaches into the dark columns (x + 48 > 100), none is left of them
    xs = [int(part.split("x=")[1].split()[0].rstrip(",")) for part in err.split("tile at ")[1:]]
    assert xs and all(x + 48 > 100 for x in xs), err


def test_show_without_a_display_says_so_before_opening_the_source(artifact, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    path, _ = artifact
    # An endless live source: had it been opened, this call would not return.
    endless = "videotestsrc is-live=true ! video/x-raw,width=64,height=48 ! videoconvert ! appsink"
    code = main([str(path), endless, "--show", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "display" in err and err.count("\n") == 1, err


def test_nowhere_to_write_is_a_user_error(artifact, tmp_path, capsys):
    path, _ = artifact
    write_image(tmp_path / "in.png", _photo(6))
    assert main([str(path), str(tmp_path / "in.png"), "--quiet"]) == 2
    assert "nowhere to write" in capsys.readouterr().err

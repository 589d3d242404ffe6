"""``restore-run --cluster`` usage errors: each is one line with what to do, exit 2, and none of
them starts Ray (they are refused before, so these tests are fast)."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

from restorekit.cli.run import main as restore_run
from restorekit.runtime.imageio import write_image
from tests.runtime import tinynet


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    artifact, _, _ = tinynet.export_net(root)
    photos = root / "photos"
    photos.mkdir()
    write_image(photos / "a.png", np.zeros((20, 30, 3), np.uint8))
    return str(artifact), str(photos), str(root / "out")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def _error(capsys, argv) -> str:
    assert restore_run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_unreachable_address_says_how_to_start_a_head(job, capsys):
    pytest.importorskip(
        "ray.data", exc_type=ImportError
    )  # pyarrow: not under the OS numpy 1.x of .venv-gst
    art, photos, out = job
    port = _free_port()
    err = _error(capsys, [art, photos, "-o", out, "--cluster", f"127.0.0.1:{port}"])
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err
    assert "ray start --head --node-ip-address 127.0.0.1" in err
    err = _error(capsys, [art, photos, "-o", out, "--cluster", "no-port-here"])
    assert "cannot read the Ray address 'no-port-here'" in err


def test_cameras_streams_and_sinks_are_refused(job, capsys):
    art, photos, out = job
    err = _error(capsys, [art, photos, "camera:0", "-o", out, "--cluster"])
    assert "not cameras or streams (0)" in err
    err = _error(capsys, [art, photos, "rtsp://127.0.0.1:8554/x", "-o", out, "--cluster"])
    assert "rtsp://127.0.0.1:8554/x" in err
    err = _error(capsys, [art, photos, "-o", out, "--sink", "appsrc ! fakesink", "--cluster"])
    assert "--sink, --rtsp-serve, --show and --frames are for streams" in err


def test_option_mistakes(job, capsys):
    art, photos, out = job
    assert "apply to --cluster runs" in _error(capsys, [art, photos, "-o", out, "--workers", "2"])
    # argparse gives --cluster the next word: a file there is a misplaced flag, said so.
    err = _error(capsys, ["--cluster", art, photos, "-o", out])
    assert "put --cluster after the inputs" in err
    assert "give -o FOLDER" in _error(capsys, [art, photos, "--cluster"])
    err = _error(capsys, [art, photos, "-o", out, "--provider", "cuda", "--cluster"])
    assert "each worker chooses its backend" in err


def test_without_ray_the_message_names_the_cluster_extra(job):
    art, photos, out = job
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from restorekit.cli.run import main\n"
        f"sys.exit(main([{art!r}, {photos!r}, '-o', {out!r}, '--cluster']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'restorekit[cluster]'" in proc.stderr and "Traceback" not in proc.stderr

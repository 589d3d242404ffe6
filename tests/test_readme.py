"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up and run.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a 'Set up and run' bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_two_commands_install_and_test():
    install, test = _readme_commands()
    assert "pip install" in install and "restore-export" in install
    assert "pytest" in test


def test_ci_runs_the_readme_install_and_test_commands():
    install, test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    # CI runs the install part of the first command (not the export itself) and the test command.
    setup = install.split(" && restore-export")[0]
    assert setup in ci
    assert test in ci


def test_python_api_example_runs_as_written(tmp_path, monkeypatch):
    """The README's camera loop, with the two names this machine cannot have replaced: the camera
    (a video file here) and the artifact (a tiny model, for speed)."""
    import numpy as np

    from restorekit.runtime.opencv import cv2
    from tests.runtime import tinynet

    block = re.search(
        r"## Python API.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    )
    assert block, "README.md must have a 'Python API' python block"
    code = block.group(1)
    model, _, _ = tinynet.export_net(tmp_path, batch=1)
    clip = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (40, 30))
    for k in range(6):
        writer.write(np.full((30, 40, 3), 40 * k, np.uint8))
    writer.release()
    for written, here in (("cv2.VideoCapture(0)", f"cv2.VideoCapture({str(clip)!r})"),
                          ('"out/grl-t.demo_dn_s25.fp16.256x256.onnx"', repr(str(model)))):  # fmt: skip
        assert written in code, written
        code = code.replace(written, here)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    restored = cv2.VideoCapture(str(tmp_path / "restored.avi"))
    count = 0
    while restored.read()[0]:
        count += 1
    assert count == 6

"""runtime, calibration, the manifest and the registry import on a device without PyTorch."""

from __future__ import annotations

import subprocess
import sys

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True
    )


def test_blocking_really_blocks_torch():
    proc = _run_blocked("import torch")
    assert proc.returncode != 0 and "import of torch halted" in proc.stderr


def test_torch_free_modules_import_without_torch():
    modules = [
        "restorekit.runtime", "restorekit.runtime.pixels", "restorekit.runtime.imageio",
        "restorekit.calibration", "restorekit.manifest", "restorekit.models.registry",
        "restorekit.metrics", "restorekit.naming", "restorekit.data", "restorekit.cli.inspect",
    ]  # fmt: skip
    code = "\n".join(f"import {m}" for m in modules) + "\nprint('ok')"
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"

"""The export package resolves its public names lazily (its torch-free modules stay importable on a
device without PyTorch)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_export_package_names_still_resolve_lazily():
    pytest.importorskip("torch")  # the pipeline behind the names imports it
    code = (
        "import sys, restorekit.export as e\n"
        "assert 'restorekit.export.pipeline' not in sys.modules\n"
        "from restorekit.export import export_model, ExportOptions\n"
        "assert 'restorekit.export.pipeline' in sys.modules and callable(export_model)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

"""The runtime (and engine loading) import and run an ONNX on ONNX Runtime with torch blocked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.runtime import tinynet

ROOT = Path(__file__).resolve().parents[2]


def test_runtime_runs_onnx_with_torch_blocked(tmp_path):
    onnx_path, _, _ = tinynet.export_net(tmp_path, batch=2)
    image = tmp_path / "in.png"
    out = tmp_path / "out.png"
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np, cv2
        cv2.imwrite({str(image)!r}, np.random.default_rng(0).integers(0, 255, (40, 52, 3), np.uint8))
        import restorekit.runtime
        from restorekit.runtime import (artifact, backend, imageio, jobs, media, ort_backend,
            pixels, restore, tiling)
        from restorekit.tensorrt import buffers, compat, cuda_memory, runner
        from restorekit.cli import run
        code = run.main([{str(onnx_path)!r}, {str(image)!r}, "-o", {str(out)!r}, "--quiet"])
        assert code == 0, code
        bad = sorted(m for m, mod in sys.modules.items()
                     if mod is not None and (m == "torch" or m.startswith("torch.")))
        assert not bad, bad
        print("OK")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
    assert out.is_file()

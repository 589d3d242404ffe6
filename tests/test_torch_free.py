"""runtime, calibration, tensorrt, the manifest and the registry import on a device without PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"
ROOT = Path(__file__).resolve().parents[1]


def _package_modules(package: str) -> list[str]:
    """Every module of a package of restorekit, subpackages included."""
    folder = ROOT.joinpath(*package.split("."))
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# Every module of the packages a device runs: the runtime, calibration and the one TensorRT
# package (engines are built and run on devices without PyTorch).
DEVICE_MODULES = [
    m for p in ("restorekit.runtime", "restorekit.calibration", "restorekit.tensorrt")
    for m in _package_modules(p)
]  # fmt: skip


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True
    )


def test_blocking_really_blocks_torch():
    proc = _run_blocked("import torch")
    assert proc.returncode != 0 and "import of torch halted" in proc.stderr


def test_torch_free_modules_import_without_torch():
    modules = [
        "restorekit", *DEVICE_MODULES, "restorekit.manifest", "restorekit.models.registry",
        "restorekit.models.spec", "restorekit.metrics", "restorekit.naming", "restorekit.data",
        "restorekit.onnx_graph", "restorekit.files", "restorekit.export.compare",
        "restorekit.export.fp16_plan", "restorekit.export.fp16_graph", "restorekit.cli.inspect",
        "restorekit.cli.build", "restorekit.cli.run",
        # Serving and Triton repositories run on servers without PyTorch.
        *_package_modules("restorekit.triton"), "restorekit.cluster.payload",
        "restorekit.cluster.serve", "restorekit.cluster.client", "restorekit.cli.serve",
        "restorekit.cli.triton",
        # Batch jobs on Ray: the driver and every worker node run without PyTorch.
        "restorekit.cluster.batch", "restorekit.cluster.connect", "restorekit.cluster.ledger",
        "restorekit.cluster.placement", "restorekit.cli.run_cluster",
    ]  # fmt: skip
    code = "\n".join(f"import {m}" for m in modules) + "\nprint('ok')"
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_calibration_runs_without_torch(tmp_path):
    """INT8 calibration and FP16 planning run on a torch-free machine (a tiny conv graph)."""
    code = """
import numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
from restorekit.calibration.qdq import qdq_from_model
from restorekit.calibration.feeds import CalibrationSet
w = numpy_helper.from_array(np.random.default_rng(0).normal(0, .2, (3, 3, 3, 3)).astype('float32'), 'w')
node = helper.make_node('Conv', ['input', 'w'], ['output'], pads=[1, 1, 1, 1], name='conv')
graph = helper.make_graph([node], 'g', [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['n', 3, 16, 16])],
                          [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['n', 3, 16, 16])], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=9)
tiles = np.random.default_rng(1).random((4, 3, 16, 16), dtype=np.float32)
result = qdq_from_model(model, CalibrationSet(tiles, 'fp', 'test', 1), 'minmax')
print(sorted({n.op_type for n in result.model.graph.node}))
"""
    proc = _run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert "QuantizeLinear" in proc.stdout and "Conv" in proc.stdout


def test_every_device_module_is_in_the_torch_free_list():
    # The list is read from the folders, so a new module cannot be forgotten; this guards the
    # reading itself (a wrong path would silently check nothing).
    assert {"restorekit.runtime", "restorekit.runtime.session", "restorekit.runtime.tiling",
            "restorekit.calibration.qdq", "restorekit.calibration.layouts",
            "restorekit.calibration.layouts.ort_cpu", "restorekit.tensorrt",
            "restorekit.tensorrt.plan", "restorekit.tensorrt.builder", "restorekit.tensorrt.runner",
            "restorekit.tensorrt.compat", "restorekit.tensorrt.cuda_memory",
            "restorekit.tensorrt.device", "restorekit.tensorrt.versions"} <= set(DEVICE_MODULES)  # fmt: skip

"""Which distributions each install pulls in, per device, read from restorekit's installed
metadata with the same marker rules pip applies (``packaging``), without installing anything.

What must hold: a Jetson install (``restorekit[jetson]``, also with ``calibration``) pulls no pip
OpenCV (it would shadow JetPack's GStreamer-enabled one), no PyPI TensorRT (not the L4T build)
and no ``onnxruntime-gpu`` (no aarch64 wheels); no combination of extras installs both ONNX Runtime
distributions (they are one Python module).
"""

from __future__ import annotations

from importlib.metadata import requires

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("onnxruntime", "ort", "tensorrt", "jetson", "export", "calibration", "convert", "dev")
JETSON = {"platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux",
          "python_version": "3.10", "python_full_version": "3.10.12"}  # fmt: skip
DESKTOP = {"platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux",
           "python_version": "3.11", "python_full_version": "3.11.7"}  # fmt: skip


def resolve(extras: set[str], environment: dict[str, str]) -> set[str]:
    """Distribution names restorekit with ``extras`` requires in ``environment`` (its own extras
    expanded, as pip does), from the installed metadata."""
    lines = [Requirement(r) for r in requires("restorekit") or []]
    names: set[str] = set()
    pending, seen = set(extras) | {""}, set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for req in lines:
            env = {**environment, "extra": extra}
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if req.marker is None and extra:
                continue  # base requirements are counted once, with the empty extra
            if canonicalize_name(req.name) == "restorekit":
                pending |= set(req.extras) - seen
            else:
                names.add(canonicalize_name(req.name))
    return names


def test_metadata_is_installed_and_read():
    assert {"numpy", "tqdm", "packaging"} <= resolve(set(), DESKTOP)
    assert "torch" in resolve({"export"}, DESKTOP)  # the resolver really follows extras


@pytest.mark.parametrize("extras", [{"jetson"}, {"jetson", "calibration"}])
def test_jetson_install_leaves_jetpack_packages_alone(extras):
    names = resolve(extras, JETSON)
    assert "onnxruntime" in names
    forbidden = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "tensorrt",
                 "onnxruntime-gpu", "torch"}  # fmt: skip
    assert not names & forbidden, names & forbidden


def test_base_install_has_no_opencv_wheel():
    for env in (JETSON, DESKTOP):
        assert not any(n.startswith("opencv") for n in resolve(set(), env))


def test_desktop_runtime_gets_gpu_onnxruntime_and_opencv():
    names = resolve({"ort", "tensorrt"}, DESKTOP)
    assert {"onnxruntime-gpu", "opencv-python-headless", "tensorrt", "cuda-python"} <= names
    assert resolve({"ort"}, JETSON) >= {"onnxruntime", "opencv-python-headless"}


@pytest.mark.parametrize("environment", [JETSON, DESKTOP], ids=["aarch64", "x86_64"])
def test_no_combination_installs_both_onnxruntime_distributions(environment):
    everything = resolve(set(EXTRAS), environment)
    assert len(everything & {"onnxruntime", "onnxruntime-gpu"}) == 1, everything

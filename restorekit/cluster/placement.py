"""Which artifact a worker runs: a TensorRT engine that fits this node's GPU and TensorRT, else the
ONNX on ONNX Runtime (CUDA where there is a GPU and the CUDA provider, else CPU).

Every Ray worker (batch actors, serve replicas) calls :func:`choose_artifact` on its own node, so a
cluster mixing GPU types, TensorRT releases and CPU-only nodes runs each node on what fits it,
and says which it used. The engine check is the runtime's own
(:func:`restorekit.tensorrt.compat.check_engine_compat`); nothing here imports TensorRT or CUDA
until an engine is actually a candidate.

Torch-free.
"""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from restorekit.errors import InputError, ManifestError, RestoreKitError
from restorekit.manifest import read_manifest
from restorekit.runtime.artifact import default_backend
from restorekit.tensorrt.device import DeviceFacts
from restorekit.tensorrt.onnx_source import source_onnx, source_onnx_name


@dataclass(frozen=True)
class NodeFacts:
    """What a node offers an artifact: its GPU (``None``: none usable), its TensorRT release
    (``None``: not installed) and whether ONNX Runtime has the CUDA provider.

    Tests and callers that already know build one; :func:`node_facts` asks the node.
    """

    device: DeviceFacts | None = None
    tensorrt_version: str | None = None
    ort_cuda: bool = False
    host: str = ""


@dataclass(frozen=True)
class Choice:
    """The artifact a worker opens and how.

    Attributes:
        path: the artifact file.
        backend: ``trt`` (engine) or ``ort`` (ONNX Runtime).
        provider: ONNX Runtime provider (``cpu``/``cuda``); ``""`` for an engine.
        skipped: (artifact name, reason) for each candidate passed over, in order.
        host: the node's host name.
    """

    path: Path
    backend: str
    provider: str
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    host: str = ""

    def describe(self) -> str:
        """``"model.fp16.engine (TensorRT)"`` or ``"model.onnx (ONNX Runtime CPU; skipped ...)"``."""
        how = "TensorRT" if self.backend == "trt" else f"ONNX Runtime {self.provider.upper()}"
        text = f"{self.path.name} ({how}"
        if self.skipped:
            text += "; skipped " + "; ".join(f"{name}: {why}" for name, why in self.skipped)
        return text + ")"


def node_facts() -> NodeFacts:
    """Describe this node: its first CUDA GPU, its TensorRT and ONNX Runtime's providers.

    Never raises: a node without a GPU, TensorRT or CUDA binding is a CPU node.
    """
    trt_version = None
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import tensorrt

            trt_version = str(tensorrt.__version__)
        except Exception:  # a broken TensorRT install is a node without TensorRT
            trt_version = None
    ort_cuda = False
    try:
        import onnxruntime

        ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except Exception:  # no ONNX Runtime: the choice says so when an ONNX is the only option
        ort_cuda = False
    device = None
    if trt_version is not None or ort_cuda:
        from restorekit.tensorrt.device import query_device

        try:
            device = query_device()
        except RestoreKitError:
            device = None
    return NodeFacts(device, trt_version, ort_cuda and device is not None, platform.node())


def candidate_artifacts(artifact: str | Path) -> list[Path]:
    """The artifacts a cluster job may pick from, given the one the user named.

    An engine brings the ONNX it was built from (when that sits beside it), so a node that cannot
    run the engine still works; an ONNX brings the engines beside it that were built from it
    (their manifests name it), so GPU nodes use them. Engines come first.

    Raises:
        InputError: the artifact does not exist or is neither ``.onnx`` nor ``.engine``.
    """
    path = Path(artifact)
    if not path.is_file():
        raise InputError(f"artifact not found: {path}")
    kind = default_backend(path)
    if kind == "trt":
        onnx = source_onnx(path, read_manifest(path))
        return [path, onnx] if onnx.is_file() else [path]
    engines = []
    for engine in sorted(path.parent.glob("*.engine")):
        try:
            manifest = read_manifest(engine)
        except RestoreKitError:
            continue  # an unrelated or broken file beside the ONNX is not a candidate
        if manifest.engine is not None and source_onnx_name(manifest) == path.name:
            engines.append(engine)
    return [*engines, path]


def choose_artifact(
    paths: Iterable[str | Path],
    *,
    facts: NodeFacts | Callable[[], NodeFacts] = node_facts,
) -> Choice:
    """Pick the first engine that runs on this node, else the first ONNX.

    Args:
        paths: candidate artifacts (``.engine`` and ``.onnx``), in order of preference among
            engines; see :func:`candidate_artifacts`.
        facts: this node's facts, or the function that finds them (asked only when an engine is
            a candidate or to choose the ONNX provider).

    Returns:
        The chosen artifact with the reasons other candidates were passed over.

    Raises:
        InputError: no candidates, a missing file, or no candidate fits this node (the message
            lists each candidate's reason).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no artifact to choose from: give an .onnx or .engine file")
    for p in paths:
        if not p.is_file():
            raise InputError(f"artifact not found: {p}")
    node = facts() if callable(facts) else facts
    skipped: list[tuple[str, str]] = []
    for path in paths:
        if default_backend(path) != "trt":
            continue
        reason = _engine_unfit(path, node)
        if reason is None:
            return Choice(path, "trt", "", tuple(skipped), node.host)
        skipped.append((path.name, reason))
    for path in paths:
        if default_backend(path) == "ort":
            provider = "cuda" if node.ort_cuda else "cpu"
            return Choice(path, "ort", provider, tuple(skipped), node.host)
    detail = "; ".join(f"{name}: {why}" for name, why in skipped)
    raise InputError(
        f"no artifact fits node {node.host or 'here'} ({detail}). Copy the ONNX beside the "
        "engine so nodes that cannot run it use ONNX Runtime, or build an engine on that node "
        "with `restore-build MODEL.onnx`"
    )


def _engine_unfit(path: Path, node: NodeFacts) -> str | None:
    """Why this engine cannot run on the node, or ``None`` when it can."""
    if node.device is None:
        return "no CUDA GPU on this node"
    if node.tensorrt_version is None:
        return "TensorRT is not installed on this node"
    try:
        from restorekit.tensorrt.compat import check_engine_compat

        check_engine_compat(read_manifest(path), node.tensorrt_version, node.device, path)
    except ManifestError as exc:
        return str(exc)
    return None


__all__ = ["Choice", "NodeFacts", "candidate_artifacts", "choose_artifact", "node_facts"]

"""What a Triton ``config.pbtxt`` says for a restorekit artifact, decided from its manifest.

* Platform: ``onnxruntime_onnx`` for an ``.onnx``, ``tensorrt_plan`` for an ``.engine``.
* Batch: a graph whose batch dimension is free (an ONNX from ``restore-export``, an engine whose
  profile spans several batch sizes) gets ``max_batch_size > 0``, ``dims`` without the batch and
  ``dynamic_batching`` with preferred sizes (the manifest's optimum and maximum), so Triton
  gathers tiles of several requests into one call. A fixed batch cannot be batched by Triton:
  ``max_batch_size: 0``, ``dims`` with the batch, no dynamic batching; a client then sends exactly
  that many tiles per request. A fixed tile gives fixed height and width, a dynamic one ``-1``.
* Data types: the graph's I/O (``TYPE_FP32``; ``TYPE_FP16`` for a graph with FP16 I/O), names
  ``input``/``output`` as every restorekit graph has them. For an ONNX, the graph itself is read
  when the ``onnx`` package is installed (else the manifest).
* Instances: ``KIND_GPU`` (count ``instances``) or ``KIND_CPU``.
* ONNX on GPU: ONNX Runtime's TensorRT execution provider as the GPU accelerator, with
  ``precision_mode`` ``FP16`` for an FP16 graph, ``INT8`` for a Q/DQ graph of the TensorRT layout
  (explicit quantization: no calibration table; the backend refuses one for Q/DQ graphs) and
  ``FP32`` otherwise, and a 1 GiB workspace. ONNX Runtime's provider builds TensorRT networks
  weakly typed: ``FP16`` lets TensorRT choose FP16 kernels anywhere, including nodes the FP16 graph
  kept in FP32 for range; where that overflows, serve the strongly typed engine
  ``restore-build`` makes (``tensorrt_plan``) instead. An INT8 graph of the ONNX Runtime CPU layout
  is not for TensorRT: it gets no accelerator and CPU instances by default.
* Engines: the plan runs only on the GPU and TensorRT release it was built for (the manifest's
  record is repeated in a comment at the top of the config): the Triton container's TensorRT must
  be that release.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from restorekit.errors import InputError
from restorekit.manifest import Manifest

DEFAULT_ONNX_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 500
TRT_WORKSPACE_BYTES = 1 << 30
KINDS = ("gpu", "cpu")
_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}
# ONNX TensorProto element types of image tensors.
_ONNX_TYPES = {1: "float32", 10: "float16"}


@dataclass(frozen=True)
class TritonOptions:
    """Choices for the repository. ``None`` fields take the defaults.

    Attributes:
        name: the model's name in Triton (default: the artifact's file stem, with characters
            other than letters, digits, ``_`` and ``-`` made ``_``).
        instances: model instances (default 1).
        kind: ``gpu`` or ``cpu`` (default ``gpu``; ``cpu`` for an INT8 graph of the ONNX Runtime
            CPU layout).
        max_batch: ``max_batch_size`` for a free batch dimension (default: an engine's profile
            maximum; 8 for an ONNX, whose batch is unbounded).
        queue_delay_us: how long Triton's dynamic batcher waits to fill a batch (default 500).
    """

    name: str | None = None
    instances: int | None = None
    kind: str | None = None
    max_batch: int | None = None
    queue_delay_us: int | None = None


@dataclass(frozen=True)
class TensorIO:
    """One graph input or output: name, element type and shape (``None``: free)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


def model_name(artifact: str | Path, wanted: str | None = None) -> str:
    """The Triton model name: ``wanted`` checked, else one made from the artifact's name.

    Raises:
        InputError: ``wanted`` holds characters a model directory and URL cannot carry.
    """
    if wanted is not None:
        if not wanted or not all(c.isalnum() or c in "_-." for c in wanted) or wanted[0] == ".":
            raise InputError(
                f"--name {wanted!r}: use letters, digits, '_', '-' and '.' (not first) only"
            )
        return wanted
    stem = Path(artifact).stem
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in stem)


def graph_io(artifact: Path, manifest: Manifest) -> tuple[TensorIO, TensorIO]:
    """The artifact's image input and output as the server will see them.

    An ONNX is read with the ``onnx`` package when it is installed (the graph is the truth); an
    engine, or an ONNX without ``onnx`` installed, is described by its manifest: the engine's
    optimisation profile, else the manifest's batch range and tile.
    """
    if artifact.suffix.lower() == ".onnx":
        read = _onnx_graph_io(artifact)
        if read is not None:
            return read
    rec = manifest.engine
    if rec is not None and rec.profile.get("min") and rec.profile.get("max"):
        lo, hi = rec.profile["min"], rec.profile["max"]
        shape = tuple(a if a == b else None for a, b in zip(lo, hi, strict=True))
    else:
        rng = manifest.batch
        batch = rng.min if rng.min == rng.max and artifact.suffix.lower() != ".onnx" else None
        h, w = manifest.tile if manifest.tile is not None else (None, None)
        shape = (batch, manifest.input.channels, h, w)
    s = manifest.scale
    out_shape = (
        shape[0],
        manifest.output.channels,
        None if shape[2] is None else shape[2] * s,
        None if shape[3] is None else shape[3] * s,
    )
    return (
        TensorIO(manifest.input.name, manifest.input.dtype, shape),
        TensorIO(manifest.output.name, manifest.output.dtype, out_shape),
    )


def _onnx_graph_io(path: Path) -> tuple[TensorIO, TensorIO] | None:
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)

    def describe(value) -> TensorIO:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return TensorIO(value.name, _ONNX_TYPES.get(t.elem_type, f"onnx-type-{t.elem_type}"), dims)

    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise InputError(
            f"{path.name} has {len(inputs)} inputs and {len(graph.output)} outputs; restorekit "
            "artifacts have one image input and one image output"
        )
    return describe(inputs[0]), describe(graph.output[0])


def _data_type(io: TensorIO, artifact: Path) -> str:
    kind = _TYPES.get(io.dtype)
    if kind is None:
        raise InputError(
            f"{artifact.name}: {io.name} is {io.dtype}; Triton repositories are written for FP32 "
            "or FP16 image I/O"
        )
    return kind


def _dims(shape: tuple[int | None, ...]) -> str:
    return "[ " + ", ".join("-1" if d is None else str(d) for d in shape) + " ]"


def config_text(artifact: str | Path, manifest: Manifest, options: TritonOptions) -> str:
    """The ``config.pbtxt`` for ``artifact`` (see the module docstring for every choice).

    Raises:
        InputError: an option that does not fit the artifact (batch above an engine's profile,
            CPU instances for an engine, a name Triton cannot use, non-float I/O).
    """
    artifact = Path(artifact)
    engine = artifact.suffix.lower() in (".engine", ".plan")
    name = model_name(artifact, options.name)
    precision = manifest.precision
    cpu_layout = precision.precision == "int8" and precision.layout == "ort-cpu"
    kind = options.kind or ("cpu" if cpu_layout and not engine else "gpu")
    if kind not in KINDS:
        raise InputError(f"unknown instance kind {kind!r}; use gpu or cpu")
    if engine and kind == "cpu":
        raise InputError("a TensorRT plan runs on a GPU only: drop --cpu or use the ONNX artifact")
    instances = 1 if options.instances is None else options.instances
    if instances < 1:
        raise InputError(f"--instances must be >= 1, got {instances}")
    inp, out = graph_io(artifact, manifest)
    batch = inp.shape[0]
    lines = [
        f"# {manifest.model} {precision.precision}, written by restorekit from {artifact.name}"
    ]
    if engine and manifest.engine is not None:
        rec = manifest.engine
        lines.append(
            f"# TensorRT plan built for {rec.gpu_name} (compute capability "
            f"{rec.compute_capability}) with TensorRT {rec.tensorrt_version}: the server's GPU and "
            "its TensorRT must match; rebuild on the server otherwise"
        )
    lines += [
        f'name: "{name}"',
        f'platform: "{"tensorrt_plan" if engine else "onnxruntime_onnx"}"',
    ]
    if batch is None:
        top = _max_batch(artifact, manifest, options, engine)
        lines.append(f"max_batch_size: {top}")
        in_dims, out_dims = inp.shape[1:], out.shape[1:]
    else:
        if options.max_batch is not None and options.max_batch != batch:
            raise InputError(
                f"{artifact.name} runs batches of exactly {batch}: Triton cannot batch it "
                "(max_batch_size 0, the batch is part of dims); export it with a free batch "
                "to use --max-batch"
            )
        lines.append(
            f"# a fixed batch of {batch}: Triton's dynamic batcher cannot gather requests, each "
            f"request carries exactly {batch} tiles"
        )
        lines.append("max_batch_size: 0")
        in_dims, out_dims = inp.shape, out.shape
    lines += [
        "input [",
        f'  {{ name: "{inp.name}" data_type: {_data_type(inp, artifact)} dims: {_dims(in_dims)} }}',
        "]",
        "output [",
        f'  {{ name: "{out.name}" data_type: {_data_type(out, artifact)} dims: {_dims(out_dims)} }}',
        "]",
        "instance_group [",
        f"  {{ count: {instances} kind: KIND_{kind.upper()} }}",
        "]",
    ]
    if batch is None:
        top = _max_batch(artifact, manifest, options, engine)
        preferred = sorted({min(max(manifest.batch.opt, 1), top), top})
        delay = DEFAULT_QUEUE_DELAY_US if options.queue_delay_us is None else options.queue_delay_us
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]",
            f"  max_queue_delay_microseconds: {delay}",
            "}",
        ]
    if not engine and kind == "gpu" and not cpu_layout:
        mode = {"fp16": "FP16", "int8": "INT8"}.get(precision.precision, "FP32")
        lines += [
            "optimization { execution_accelerators {",
            "  gpu_execution_accelerator : [ {",
            '    name : "tensorrt"',
            f'    parameters {{ key: "precision_mode" value: "{mode}" }}',
            f'    parameters {{ key: "max_workspace_size_bytes" value: "{TRT_WORKSPACE_BYTES}" }}',
            "  } ]",
            "} }",
        ]
    lines.append(
        f'default_model_filename: "{"model.plan" if engine else "model.onnx"}"',
    )
    return "\n".join(lines) + "\n"


def _max_batch(artifact: Path, manifest: Manifest, options: TritonOptions, engine: bool) -> int:
    rec = manifest.engine
    limit = None
    if engine and rec is not None and rec.profile.get("max"):
        limit = rec.profile["max"][0]
    elif engine:
        limit = manifest.batch.max
    wanted = options.max_batch
    if wanted is None:
        return limit if limit is not None else max(DEFAULT_ONNX_MAX_BATCH, manifest.batch.max)
    if wanted < 1:
        raise InputError(f"--max-batch must be >= 1, got {wanted}")
    if limit is not None and wanted > limit:
        raise InputError(
            f"--max-batch {wanted} exceeds the engine's profile maximum of {limit}; rebuild the "
            f"engine with a larger batch (restore-build --batch {wanted})"
        )
    return wanted


__all__ = ["TensorIO", "TritonOptions", "config_text", "graph_io", "model_name"]

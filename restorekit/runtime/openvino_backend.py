"""OpenVINO on the CPU: our ONNX read directly, compiled in FP32, BF16 or INT8.

- ``fp32``: the ONNX as exported.
- ``bf16``: the same ONNX with OpenVINO's ``INFERENCE_PRECISION_HINT=bf16``, only on a CPU with
  native bf16 (AMX-BF16 or AVX512-BF16, and OpenVINO listing ``BF16`` among its capabilities).
  Elsewhere OpenVINO ignores the hint and computes FP32, so ``bf16`` is refused with the flags it
  found, rather than run under a name it does not deserve; the compiled model is asked afterwards
  too, and refused if it did not take the hint.
- ``int8``: an INT8 Q/DQ artifact read as it is (refused where its 8-bit weights would saturate:
  a CPU without VNNI; the ``ort-cpu`` layout's 7-bit weights are safe), or, for an FP32 artifact,
  the OpenVINO INT8 model quantized once with NNCF from the same calibration tiles and saved
  beside it (``<artifact stem>.ov-int8.xml``; see :mod:`restorekit.calibration.openvino_int8`).

Every OpenVINO model is admitted for its artifact only after it matches ONNX Runtime's FP32 output
on real tiles (:mod:`restorekit.runtime.admission`), remembered beside the artifact per CPU and
library versions. Torch-free; ``openvino`` is imported inside :meth:`OpenVinoBackend._activate`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.errors import ManifestError, RestoreKitError, require
from restorekit.manifest import Manifest
from restorekit.runtime.backend import Backend, IOSpec
from restorekit.runtime.cpu_features import CpuFeatures, cpu_features

PRECISIONS = ("fp32", "bf16", "int8")
HINTS = ("latency", "throughput")
# |q| of an int8 weight up to this cannot saturate VPMADDUBSW's 16-bit pair sums with u8 inputs:
# 255 * 64 * 2 = 32640 <= 32767 (ONNX Runtime's reduce_range gives [-64, 64]).
SAFE_WEIGHT_LEVEL = 64
OV_INT8_SUFFIX = ".ov-int8.xml"
_OV_TYPES = {"f32": np.float32, "f16": np.float16, "u8": np.uint8, "i8": np.int8}


class PrecisionUnavailableError(RestoreKitError):
    """The requested precision cannot run correctly on this CPU or for this artifact."""


@dataclass(frozen=True)
class OpenVinoOptions:
    """How to compile an artifact with OpenVINO. ``None`` fields take the defaults.

    Attributes:
        precision: ``fp32``, ``bf16`` or ``int8``; default: the artifact's own (``int8`` for a
            Q/DQ graph, else ``fp32``).
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's, one per core).
        hint: ``latency`` (one request at a time, every core on it) or ``throughput`` (several
            requests in flight: tiles overlap); default ``latency``: the tiler feeds one batch at a
            time and a few cores are best spent on it.
        verify: admit the compiled model only after it matches ONNX Runtime's FP32 output on
            real tiles (remembered beside the artifact). ``restore-check`` turns it off to report
            its own figures against PyTorch instead.
    """

    precision: str | None = None
    threads: int | None = None
    hint: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise PrecisionUnavailableError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if self.hint is not None and self.hint not in HINTS:
            raise PrecisionUnavailableError(
                f"unknown performance hint {self.hint!r}; choose one of {', '.join(HINTS)}"
            )
        if self.threads is not None and self.threads < 1:
            raise PrecisionUnavailableError(f"threads must be >= 1, got {self.threads}")


def resolved_precision(manifest: Manifest, precision: str | None) -> str:
    """The precision OpenVINO runs an artifact in: the one asked for, or the artifact's own.

    Raises:
        PrecisionUnavailableError: a precision the artifact cannot be run in (an FP16 graph, or
            an INT8 graph asked for in FP32/BF16).
    """
    own = manifest.precision.precision
    if own == "fp16":
        raise PrecisionUnavailableError(
            f"{manifest.model}: the OpenVINO backend runs FP32 ONNX (in fp32, bf16 or int8) and "
            "INT8 Q/DQ ONNX; give it the FP32 ONNX restore-export wrote beside this FP16 graph"
        )
    if own == "int8":
        if precision not in (None, "int8"):
            raise PrecisionUnavailableError(
                f"this is an INT8 graph; --precision {precision} needs the FP32 ONNX of "
                f"{manifest.model} (restore-export writes it beside)"
            )
        return "int8"
    return precision or "fp32"


def ov_int8_path(artifact: str | Path) -> Path:
    """Where the NNCF INT8 model of an FP32 artifact is kept: ``x.fp32.64x64.ov-int8.xml``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.stem + OV_INT8_SUFFIX)


def bf16_refusal(features: CpuFeatures, capabilities: list[str]) -> str | None:
    """Why BF16 cannot run here (``None`` if it can): the flags and OpenVINO's capabilities."""
    if features.bf16 and "BF16" in capabilities:
        return None
    return (
        f"BF16 needs a CPU with AMX-BF16 or AVX512-BF16 and OpenVINO's bf16 kernels; this one is "
        f"{features.describe()} and OpenVINO lists {', '.join(capabilities) or 'nothing'} (no "
        "BF16). OpenVINO would ignore the bf16 hint here and compute FP32 (measured: identical "
        "output, same speed). Use --precision fp32 or int8"
    )


def saturating_weights(model_path: Path) -> list[str]:
    """Names of int8 weights in a Q/DQ ONNX with levels beyond :data:`SAFE_WEIGHT_LEVEL`."""
    onnx = require("onnx", "ort", "reading a Q/DQ graph")
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        init = inits[node.input[0]]
        if init.data_type != onnx.TensorProto.INT8:
            continue
        values = numpy_helper.to_array(init)
        if values.size and int(np.abs(values.astype(np.int16)).max()) > SAFE_WEIGHT_LEVEL:
            found.append(init.name)
    return found


class OpenVinoBackend(Backend):
    """Runs an ``.onnx`` artifact with OpenVINO on the CPU.

    Args:
        path: the ONNX file (single image input, the restored image as its first output).
        manifest: its manifest (batch range, precision, model).
        options: precision, threads, performance hint, admission check.

    Raises:
        PrecisionUnavailableError: (on open) the precision cannot run correctly here.
        ManifestError: (on open) the file is missing or OpenVINO cannot read it, or the model
            was not admitted (its output does not match ONNX Runtime's FP32 output).
        MissingDependencyError: (on open) OpenVINO is not installed.
    """

    name = "openvino"

    def __init__(
        self, path: str | Path, manifest: Manifest, options: OpenVinoOptions | None = None
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.manifest = manifest
        self.options = options or OpenVinoOptions()
        self.precision = resolved_precision(manifest, self.options.precision)
        self.name = f"openvino {self.precision}"
        self._compiled: Any = None
        self._request: Any = None
        self._in: IOSpec | None = None
        self._out: IOSpec | None = None

    @property
    def model_path(self) -> Path:
        """The file OpenVINO reads: the ONNX, or the NNCF INT8 model of an FP32 ONNX."""
        if self.precision == "int8" and self.manifest.precision.precision != "int8":
            return ov_int8_path(self.path)
        return self.path

    def _activate(self) -> None:
        ov = require("openvino", "openvino", "the OpenVINO backend")
        if not self.path.is_file():
            raise ManifestError(f"ONNX file not found: {self.path}")
        core = ov.Core()
        config = self._config(core)
        model = self._read(core)
        self._fix_batch(ov, model)
        try:
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises its own untyped errors
            raise ManifestError(f"OpenVINO cannot compile {self.model_path.name}: {exc}") from exc
        if self.precision == "bf16":
            got = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
            if got != ov.Type.bf16:
                raise PrecisionUnavailableError(
                    f"OpenVINO compiled {self.path.name} in {got.to_string()}, not bf16, on "
                    f"{cpu_features().describe()}: it ignores the bf16 hint here. Use "
                    "--precision fp32"
                )
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._in = _io_spec(compiled.inputs[0])
        self._out = _io_spec(compiled.outputs[0])

    def __enter__(self) -> OpenVinoBackend:
        super().__enter__()
        if self.options.verify:
            # Admission runs the open model on real tiles, so it follows opening.
            from restorekit.runtime.admission import admit

            try:
                admit(self.path, self.manifest, self, self.precision)
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def _config(self, core: Any) -> dict[str, Any]:
        hint = (self.options.hint or "latency").upper()
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if self.options.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.options.threads
        if self.precision == "bf16":
            reason = bf16_refusal(
                cpu_features(), list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            )
            if reason is not None:
                raise PrecisionUnavailableError(reason)
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        else:
            # FP32 and INT8 keep float parts in f32 (OpenVINO's own default is bf16 on a CPU with
            # AMX or AVX512-BF16).
            config["INFERENCE_PRECISION_HINT"] = "f32"
        return config

    def _read(self, core: Any) -> Any:
        path = self.model_path
        if self.precision == "int8" and path == self.path and not cpu_features().vnni:
            wide = saturating_weights(path)
            if wide:
                raise PrecisionUnavailableError(
                    f"{path.name} has 8-bit weights ({len(wide)} tensors, e.g. {wide[0]}); on "
                    f"this CPU ({cpu_features().describe()}, no VNNI) OpenVINO's u8 x s8 kernels "
                    "sum pairs of products in 16 bits, which these weights saturate (measured: "
                    "about 23 dB against FP32 on the demo MPRNet). Use the INT8 CPU layout "
                    "(restore-export --int8 --int8-layout ort-cpu: 7-bit weights), or the FP32 "
                    "ONNX with --precision int8 (OpenVINO's own INT8, 7-bit weights)"
                )
        if path != self.path and path.is_file():
            self._check_int8_source(path)
        if not path.is_file():
            raise PrecisionUnavailableError(
                f"no OpenVINO INT8 model of {self.path.name} yet ({path.name}); make it once "
                f"with `restore-run {self.path} IMAGE -o OUT --backend openvino --precision "
                "int8` (it calibrates on the sample photos, or --calib DIR) or "
                "restorekit.calibration.openvino_int8.ov_int8_from_onnx()"
            )
        try:
            return core.read_model(str(path))
        except Exception as exc:
            raise ManifestError(f"OpenVINO cannot read {path.name}: {exc}") from exc

    def _check_int8_source(self, xml: Path) -> None:
        """The NNCF model must come from these artifact bytes (its record says which)."""
        from restorekit.files import file_sha256

        record_file = xml.with_name(xml.name + ".json")
        try:
            source = json.loads(record_file.read_text()).get("source_sha256")
        except (OSError, json.JSONDecodeError):
            source = None
        if source != file_sha256(self.path):
            raise PrecisionUnavailableError(
                f"{xml.name} was not made from this {self.path.name} (its record "
                f"{record_file.name} is missing or names other bytes); delete it and make it "
                f"again: restore-run {self.path} IMAGE -o OUT --backend openvino --precision int8"
            )

    def _fix_batch(self, ov: Any, model: Any) -> None:
        """Static batch where the manifest allows one batch size (faster plans), else its range."""
        (port,) = model.inputs
        shape = port.get_partial_shape()
        rng = self.manifest.batch
        if not shape[0].is_dynamic:
            return
        dims = list(shape)
        dims[0] = ov.Dimension(rng.min) if rng.min == rng.max else ov.Dimension(rng.min, rng.max)
        model.reshape({port.get_any_name(): ov.PartialShape(dims)})

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        return self._request.get_output_tensor(0).data.copy()

    def _infer_many(self, batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        if (self.options.hint or "latency") == "latency":
            yield from super()._infer_many(batches)
            return
        # Throughput: two requests alternate, so one batch computes while the previous output
        # is collected and the next tiles are cut (OpenVINO runs requests without the GIL).
        requests = [self._compiled.create_infer_request() for _ in range(2)]
        pending: list[Any] = []
        for i, batch in enumerate(batches):
            request = requests[i % 2]
            request.start_async({0: batch})
            pending.append(request)
            if len(pending) == 2:
                first = pending.pop(0)
                first.wait()
                yield first.get_output_tensor(0).data.copy()
        for request in pending:
            request.wait()
            yield request.get_output_tensor(0).data.copy()


def _io_spec(port: Any) -> IOSpec:
    shape = port.get_partial_shape()
    dims = tuple(None if d.is_dynamic else d.get_length() for d in shape)
    lo = tuple(None if d.is_dynamic and d.get_min_length() <= 0 else d.get_min_length()
               for d in shape)  # fmt: skip
    hi = tuple(None if d.get_max_length() < 0 else d.get_max_length() for d in shape)
    dtype = _OV_TYPES.get(port.get_element_type().get_type_name())
    if dtype is None:
        raise ManifestError(
            f"tensor '{port.get_any_name()}' has unsupported type {port.get_element_type()}"
        )
    return IOSpec(port.get_any_name(), dims, np.dtype(dtype), lo, hi)


def openvino_versions() -> dict[str, str]:
    """The OpenVINO (and NNCF, where installed) versions, for records keyed by them."""
    ov = require("openvino", "openvino", "the OpenVINO backend")
    versions = {"openvino": ov.__version__.split("-")[0]}
    try:
        from importlib.metadata import version

        versions["nncf"] = version("nncf")
    except Exception:  # NNCF is needed only to make INT8 models
        pass
    return versions


def record_json(data: dict[str, Any]) -> str:
    """JSON as the records beside artifacts are written (sorted keys, indented)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"

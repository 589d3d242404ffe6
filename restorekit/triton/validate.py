"""Check a ``config.pbtxt`` against Triton's own schema: the text is parsed into
``tritonclient``'s ``ModelConfig`` protobuf (the ``triton`` extra), so a misspelt field, a wrong
enum value or a value of the wrong type fails here instead of on the server; then the few rules
this text must also keep for Triton to load it are checked on the parsed message."""

from __future__ import annotations

import importlib.util
from typing import Any

from restorekit.errors import RestoreKitError, require


class TritonConfigError(RestoreKitError):
    """A Triton model configuration does not parse into Triton's ``ModelConfig``, or breaks one of
    the rules Triton checks when it loads a model."""


def schema_available() -> bool:
    """Whether ``tritonclient`` (with its protobuf schema) is installed."""
    return importlib.util.find_spec("tritonclient") is not None


def parse_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text into Triton's ``ModelConfig`` and check it.

    Returns:
        The ``tritonclient.grpc.model_config_pb2.ModelConfig`` message.

    Raises:
        MissingDependencyError: ``tritonclient`` is not installed (``restorekit[triton]``).
        TritonConfigError: the text does not parse, or breaks a rule Triton enforces at load time
            (named model, platform, one input and output with dims, dynamic batching only with a
            batch dimension, positive instance counts).
    """
    pb2 = require(
        "tritonclient.grpc.model_config_pb2", "triton", "validating Triton model configurations"
    )
    from google.protobuf import text_format

    config = pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise TritonConfigError(f"config.pbtxt does not fit Triton's ModelConfig: {exc}") from exc
    problems = []
    if not config.name:
        problems.append("no model name")
    if config.platform not in ("onnxruntime_onnx", "tensorrt_plan"):
        problems.append(f"platform {config.platform!r} is not one restorekit writes")
    if len(config.input) != 1 or len(config.output) != 1:
        problems.append("expected one input and one output")
    for tensor in [*config.input, *config.output]:
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"{tensor.name}: dims {list(tensor.dims)} (each > 0 or -1)")
        if tensor.data_type == pb2.DataType.TYPE_INVALID:
            problems.append(f"{tensor.name}: no data type")
    if config.max_batch_size < 0:
        problems.append("max_batch_size < 0")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic batching needs max_batch_size > 0")
        if any(p > config.max_batch_size for p in config.dynamic_batching.preferred_batch_size):
            problems.append("a preferred batch size exceeds max_batch_size")
    if any(group.count < 1 for group in config.instance_group):
        problems.append("an instance group with count < 1")
    if problems:
        raise TritonConfigError("config.pbtxt breaks Triton's rules: " + "; ".join(problems))
    return config


__all__ = ["TritonConfigError", "parse_config", "schema_available"]

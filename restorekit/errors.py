"""One exception hierarchy for every error a user can cause.

The console commands catch :class:`RestoreKitError`, print its message and exit non-zero, so every
message must say what happened and what to do next. ``assert`` is kept for internal invariants.
"""

from __future__ import annotations


class RestoreKitError(Exception):
    """Base class of all errors restorekit raises for user-facing problems."""


class UnknownModelError(RestoreKitError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TileSizeError(RestoreKitError, ValueError):
    """A tile shape breaks the model's size rule."""


class WeightsError(RestoreKitError):
    """A weights file cannot be read, or does not fit the model."""


class MissingDependencyError(RestoreKitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExportError(RestoreKitError):
    """Tracing, simplifying or checking an ONNX graph failed."""


class VerificationError(RestoreKitError):
    """An artifact's output does not match the PyTorch reference; the message carries the figures."""


class EngineBuildError(RestoreKitError):
    """TensorRT could not parse the ONNX or build an engine; the message says why and what to try."""


class ManifestError(RestoreKitError):
    """An artifact's manifest is missing, unreadable or does not fit the artifact or machine."""


class InputError(RestoreKitError):
    """An input image, video or camera cannot be read or has an unusable format."""


class NonFiniteOutputError(RestoreKitError):
    """The model's output held NaN or Inf values; the message says which tiles."""


class ClusterError(RestoreKitError):
    """A Ray cluster cannot be reached or started; the message says how to start or reach one."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency, or raise an error naming the extra that provides it.

    Args:
        module: the module to import, e.g. ``"onnxruntime"``.
        extra: the restorekit extra that installs it, e.g. ``"ort"``.
        purpose: what the caller needs it for, shown in the message.

    Raises:
        MissingDependencyError: the module is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({exc}). Install it with: pip install 'restorekit[{extra}]'"
        ) from exc

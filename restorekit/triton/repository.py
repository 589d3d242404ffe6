"""Write one model of a Triton model repository from a restorekit artifact::

    DIR/<name>/config.pbtxt
    DIR/<name>/1/model.onnx        (or model.plan for an engine)
    DIR/<name>/1/model.onnx.json   (the manifest: tile, overlap, value range for a client)

Triton reads ``config.pbtxt`` and, in the version folder ``1/``, the file the config names; the
documented layout lets other files sit in the model folder (label files), and the manifest beside
the model is what restorekit reads for a model file (``<file>.json``). The model folder is written
under a temporary name beside its target and renamed into place, so a server polling the
repository never sees half a model; an existing model folder is replaced only when asked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from restorekit.errors import InputError
from restorekit.manifest import read_manifest, write_manifest
from restorekit.triton.config import TritonOptions, config_text, model_name
from restorekit.triton.validate import parse_config, schema_available

VERSION = "1"


@dataclass(frozen=True)
class TritonModel:
    """A written model folder, its config text and whether Triton's schema checked it."""

    path: Path
    config: str
    validated: bool

    @property
    def model_file(self) -> Path:
        return next(p for p in (self.path / VERSION).iterdir() if p.suffix in (".onnx", ".plan"))


def write_triton_model(
    artifact: str | Path,
    repository: str | Path,
    options: TritonOptions | None = None,
    *,
    force: bool = False,
    validate: bool | None = None,
) -> TritonModel:
    """Write ``artifact`` as a model of the Triton repository ``repository``.

    Args:
        artifact: an ``.onnx`` or ``.engine`` with its manifest.
        repository: the model repository folder (created if needed).
        options: name, instances, kind, batch (see :class:`TritonOptions`).
        force: replace an existing model folder of that name.
        validate: parse the config into Triton's ``ModelConfig`` (default: when ``tritonclient``
            is installed; ``True`` requires it).

    Raises:
        InputError: the artifact is missing, the model folder exists without ``force``, or an
            option does not fit the artifact.
        ManifestError: the artifact has no readable manifest.
        TritonConfigError: the config does not pass Triton's schema.
        MissingDependencyError: ``validate=True`` without ``tritonclient``.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise InputError(f"artifact not found: {artifact}")
    if artifact.suffix.lower() not in (".onnx", ".engine", ".plan"):
        raise InputError(f"{artifact}: expected an .onnx or .engine artifact")
    options = options or TritonOptions()
    manifest = read_manifest(artifact)
    name = model_name(artifact, options.name)
    text = config_text(artifact, manifest, options)
    check = schema_available() if validate is None else validate
    if check:
        parse_config(text)
    repository = Path(repository)
    target = repository / name
    if target.exists() and not force:
        raise InputError(
            f"{target} exists; pass --force to replace it, or --name to write another model"
        )
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from a server's user
        version = staging / VERSION
        version.mkdir()
        model_file = version / (
            "model.onnx" if artifact.suffix.lower() == ".onnx" else "model.plan"
        )
        shutil.copyfile(artifact, model_file)
        write_manifest(model_file, manifest)
        (staging / "config.pbtxt").write_text(text)
        _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TritonModel(target, text, check)


def _replace(staging: Path, target: Path) -> None:
    """Move ``staging`` onto ``target``. An old ``target`` is renamed aside first and removed
    after: between the two renames the name is briefly absent, never half written (Triton's
    polling sees the old model, then none, then the new one)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["TritonModel", "write_triton_model"]

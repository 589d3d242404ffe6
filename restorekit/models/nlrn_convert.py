"""Convert the official NLRN TensorFlow checkpoints to a state dict of :class:`restorekit.models.nlrn.NLRN`.

The official graphs name their convolutions (``conv1``, ``conv_end`` and, under ``rnn/``,
``RB1_a``, ``RB1_b``, ``non_local_theta``, ``non_local_phi``, ``non_local_g``) but not their
batch-norm layers: TF names unnamed layers ``batch_normalization``, ``batch_normalization_1``, ...
in creation order, counting separately in each variable scope. So:

* outer scope (``model/`` in the original release, none in the later one): creation order 0 is the
  input batch-norm, 1 the one before ``conv_end``;
* ``rnn/``: state ``t`` created three, in order: before the non-local module, before ``RB1_a``,
  before ``RB1_b``. Their count gives the number of states.

Kernels go from TF's HWIO to PyTorch's OIHW; ``gamma/beta/moving_mean/moving_variance`` become
``weight/bias/running_mean/running_var``. Optimizer slots (``.../Adam``), ``global_step`` and other
bookkeeping tensors are skipped. Whether a checkpoint used correlation propagation is not visible
in its weights (the same variables exist either way): the release decides, so the variant is chosen
by the user (``dn_s*``/``sr`` for the original release, ``dn15_s*`` for the later one).

numpy and safetensors only: conversion needs neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.errors import WeightsError, require
from restorekit.files import write_bytes_atomic
from restorekit.models.registry import REGISTRY, resolve
from restorekit.models.spec import ModelRef
from restorekit.models.tf_checkpoint import TFCheckpoint

ARCH = "nlrn"

_BN_LEAVES = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_CONV_LEAVES = {"kernel": "weight", "bias": "bias"}
_LAYER_LEAVES = set(_BN_LEAVES) | set(_CONV_LEAVES)

# TF layer (relative to the model scope) -> our module, for the layers TF names explicitly.
_CONVS = {
    "conv1": "conv1",
    "conv_end": "conv_end",
    "rnn/RB1_a": "rnn.RB1_a",
    "rnn/RB1_b": "rnn.RB1_b",
    "rnn/non_local_theta": "rnn.non_local.theta",
    "rnn/non_local_phi": "rnn.non_local.phi",
    "rnn/non_local_g": "rnn.non_local.g",
}
_STEP_NORMS = ("norm_in", "norm_a", "norm_b")  # creation order inside one state
_UNIQUE_SUFFIX = re.compile(r"^(?P<base>.+?)(?:_(?P<index>\d+))?$")

# Constructor defaults of NLRN that the variants do not restate.
_DEFAULTS = {"channels": 1, "num_features": 128, "nl_features": 64}


@dataclass(frozen=True)
class NLRNWeights:
    """A converted checkpoint: our state dict, the configuration it implies, and its provenance.

    Attributes:
        state_dict: parameter name -> array (float32; ``num_batches_tracked`` int64).
        config: ``channels``, ``num_features``, ``nl_features``, ``num_steps`` read off the shapes.
        sources: our name -> the TF variable it came from.
        skipped: checkpoint tensors that are not model weights (optimizer slots, counters).
        scope: the variable scope the model sat in (``"model/"`` or ``""``).
    """

    state_dict: dict[str, np.ndarray]
    config: dict[str, int]
    sources: dict[str, str]
    skipped: tuple[str, ...]
    scope: str


@dataclass(frozen=True)
class ConversionResult:
    """What ``restore-convert`` wrote."""

    output: Path
    weights: NLRNWeights
    fits: tuple[str, ...]
    checked_against: str | None = None
    notes: list[str] = field(default_factory=list)


def _model_scope(names: list[str]) -> str:
    hits = [n[: -len("conv1/kernel")] for n in names if re.search(r"(^|/)conv1/kernel$", n)]
    if len(hits) != 1:
        found = f"{len(hits)} such tensors" if hits else "none"
        raise WeightsError(
            "this checkpoint is not an NLRN model: expected exactly one '.../conv1/kernel' "
            f"tensor, found {found}. Check that it is an official NLRN checkpoint or SavedModel"
        )
    return hits[0]


def _order_by_creation(layers: list[str], scope: str) -> list[str]:
    """Sort TF-uniquified layer names (``base``, ``base_1``, ...) into creation order."""
    keyed = []
    for layer in layers:
        m = _UNIQUE_SUFFIX.match(layer)
        assert m is not None  # the pattern matches every non-empty name
        keyed.append((m["base"], int(m["index"] or 0), layer))
    bases = {base for base, _, _ in keyed}
    indices = sorted(index for _, index, _ in keyed)
    if len(bases) > 1 or indices != list(range(len(keyed))):
        raise WeightsError(
            f"cannot establish the creation order of the batch-norm layers in scope "
            f"'{scope or '/'}': expected one base name numbered 0..{len(keyed) - 1}, found "
            f"{sorted(layers)[:6]}"
        )
    return [layer for _, _, layer in sorted(keyed)]


def nlrn_weights_from_tf(ckpt: TFCheckpoint) -> NLRNWeights:
    """Map the tensors of an official NLRN checkpoint onto our parameter names.

    Raises:
        WeightsError: the checkpoint is not an NLRN (missing or unknown layers, shapes that do not
            fit each other), or the reader cannot decode a tensor.
    """
    names = sorted(ckpt.entries)
    scope = _model_scope(names)
    layers: dict[str, dict[str, str]] = {}
    skipped = []
    for name in names:
        rel = name[len(scope) :] if name.startswith(scope) else None
        layer, _, leaf = (rel or "").rpartition("/")
        if rel is None or not layer or leaf not in _LAYER_LEAVES:
            skipped.append(name)
            continue
        layers.setdefault(layer, {})[leaf] = name

    sd: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}

    def take(ours: str, tf_layer: str, leaves: Mapping[str, str]) -> None:
        got = layers.pop(tf_layer, None)
        if got is None or set(got) != set(leaves):
            have = sorted(got) if got else "nothing"
            raise WeightsError(
                f"NLRN checkpoint layer '{scope}{tf_layer}' should hold {sorted(leaves)}, "
                f"found {have}"
            )
        for leaf, param in leaves.items():
            value = ckpt.read(got[leaf])
            if leaf == "kernel":
                if value.ndim != 4:
                    raise WeightsError(f"'{got[leaf]}' is not a 2-D convolution kernel")
                value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            sd[f"{ours}.{param}"] = np.ascontiguousarray(value, dtype=np.float32)
            sources[f"{ours}.{param}"] = got[leaf]
        if set(leaves) == set(_BN_LEAVES):
            sd[f"{ours}.num_batches_tracked"] = np.zeros((), dtype=np.int64)

    for tf_layer, ours in _CONVS.items():
        take(ours, tf_layer, _CONV_LEAVES)

    is_bn = {layer for layer, leaves in layers.items() if set(leaves) == set(_BN_LEAVES)}
    outer = _order_by_creation([lay for lay in is_bn if "/" not in lay], scope)
    inner = _order_by_creation(
        [lay.split("/", 1)[1] for lay in is_bn if lay.startswith("rnn/") and lay.count("/") == 1],
        scope + "rnn/",
    )
    if len(outer) != 2 or not inner or len(inner) % 3:
        raise WeightsError(
            f"NLRN checkpoint has {len(outer)} batch-norm layers outside 'rnn/' (expected 2) and "
            f"{len(inner)} inside (expected 3 per recurrent state)"
        )
    take("bn_in", outer[0], _BN_LEAVES)
    take("bn_end", outer[1], _BN_LEAVES)
    for i, layer in enumerate(inner):
        take(f"rnn.steps.{i // 3}.{_STEP_NORMS[i % 3]}", f"rnn/{layer}", _BN_LEAVES)
    if layers:
        raise WeightsError(
            f"NLRN checkpoint has layers this converter does not know: "
            f"{', '.join(scope + lay for lay in sorted(layers)[:6])}"
        )

    config = {
        "channels": sd["conv1.weight"].shape[1],
        "num_features": sd["conv1.weight"].shape[0],
        "nl_features": sd["rnn.non_local.theta.weight"].shape[0],
        "num_steps": len(inner) // 3,
    }
    _check_shapes(sd, config)
    return NLRNWeights(sd, config, sources, tuple(skipped), scope)


def _expected_shapes(config: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    c, f, n = config["channels"], config["num_features"], config["nl_features"]
    shapes: dict[str, tuple[int, ...]] = {
        "conv1.weight": (f, c, 3, 3),
        "conv1.bias": (f,),
        "conv_end.weight": (c, f, 3, 3),
        "conv_end.bias": (c,),
        "rnn.RB1_a.weight": (f, f, 3, 3),
        "rnn.RB1_b.weight": (f, f, 3, 3),
        "rnn.non_local.theta.weight": (n, f, 1, 1),
        "rnn.non_local.phi.weight": (n, f, 1, 1),
        "rnn.non_local.g.weight": (f, f, 1, 1),
        "rnn.RB1_a.bias": (f,),
        "rnn.RB1_b.bias": (f,),
        "rnn.non_local.theta.bias": (n,),
        "rnn.non_local.phi.bias": (n,),
        "rnn.non_local.g.bias": (f,),
    }
    norms = {"bn_in": c, "bn_end": f}
    for t in range(config["num_steps"]):
        norms.update({f"rnn.steps.{t}.{k}": f for k in _STEP_NORMS})
    for name, width in norms.items():
        for param in _BN_LEAVES.values():
            shapes[f"{name}.{param}"] = (width,)
        shapes[f"{name}.num_batches_tracked"] = ()
    return shapes


def _check_shapes(sd: Mapping[str, np.ndarray], config: Mapping[str, int]) -> None:
    expected = _expected_shapes(config)
    assert set(expected) == set(sd), "converter and shape table disagree"
    wrong = [(k, sd[k].shape, s) for k, s in expected.items() if sd[k].shape != s]
    if wrong:
        shown = "; ".join(f"{k}: {list(a)} (expected {list(b)})" for k, a, b in wrong[:4])
        raise WeightsError(f"NLRN checkpoint tensors do not fit together: {shown}")


def _variant_config(ref: ModelRef) -> dict[str, Any]:
    return {**_DEFAULTS, **ref.variant.config}


def fitting_variants(config: Mapping[str, int]) -> list[str]:
    """NLRN registry variants whose shapes fit ``config`` (release flags cannot be checked)."""
    return [
        ref.name
        for ref in REGISTRY
        if ref.spec.name == ARCH
        and all(_variant_config(ref).get(k) == v for k, v in config.items())
    ]


def _release_hint(scope: str, corr_propagation: bool) -> str:
    """A warning when the variable scope suggests the other release than the chosen variant's.

    The original release's scripts build the model under ``model/``; the later estimator code
    uses no scope. Only a hint: anyone can re-save a checkpoint under another scope.
    """
    if scope == "model/" and not corr_propagation:
        return (
            "the variables sit under 'model/' like the original release (NLRN_v0), whose models "
            "use correlation propagation, but the chosen variant does not; check the variant"
        )
    if scope == "" and corr_propagation:
        return (
            "the variables sit at the top level like the later release (tf.estimator), whose "
            "models have no correlation propagation, but the chosen variant uses it; check it"
        )
    return ""


def convert_nlrn(
    checkpoint: str | Path, output: str | Path, model: str | None = None
) -> ConversionResult:
    """Convert an official NLRN TF checkpoint (or SavedModel, or a .zip of one) to safetensors.

    Args:
        checkpoint: anything :class:`~restorekit.models.tf_checkpoint.TFCheckpoint` accepts.
        output: the ``.safetensors`` file to write.
        model: a registry name; with a variant (``nlrn.dn_s25``) the weights must fit it.

    Raises:
        WeightsError: unreadable checkpoint, not an NLRN, or weights that do not fit ``model``.
        UnknownModelError: ``model`` is not in the registry.
    """
    st = require("safetensors.numpy", "convert", "writing .safetensors weights")
    ref = resolve(model) if model else None
    if ref is not None and ref.spec.name != ARCH:
        raise WeightsError(f"{ref.name} is not an NLRN model; this converter writes NLRN weights")
    with TFCheckpoint(checkpoint) as ckpt:
        weights = nlrn_weights_from_tf(ckpt)
        source = ckpt.prefix
    fits = fitting_variants(weights.config)
    explicit = model is not None and "." in model
    if explicit and ref is not None and ref.name not in fits:
        want = {k: _variant_config(ref).get(k) for k in weights.config}
        raise WeightsError(
            f"the checkpoint is an NLRN with {weights.config} but {ref.name} expects {want}. "
            + (f"It fits {', '.join(fits)}." if fits else "It fits no registered variant.")
        )
    metadata = {
        "arch": ARCH,
        "source": str(source),
        "source_scope": weights.scope,
        **{k: str(v) for k, v in weights.config.items()},
    }
    if explicit and ref is not None:
        metadata["variant"] = ref.name
    output = Path(output)
    write_bytes_atomic(output, st.save(weights.state_dict, metadata=metadata))
    notes = []
    if explicit and ref is not None:
        note = _release_hint(weights.scope, bool(ref.variant.config.get("corr_propagation")))
        if note:
            notes.append(note)
    if not fits:
        notes.append(
            f"no registered NLRN variant has this configuration ({weights.config}); load it "
            "with build overrides"
        )
    return ConversionResult(
        output=output,
        weights=weights,
        fits=tuple(fits),
        checked_against=ref.name if explicit and ref is not None else None,
        notes=notes,
    )

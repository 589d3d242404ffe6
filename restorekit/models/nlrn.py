"""NLRN: Non-Local Recurrent Network for Image Restoration (Liu et al., NeurIPS 2018).

Written from the paper and from reading both official TensorFlow code bases (Ding-Liu/NLRN_v0,
the original release, and Ding-Liu/NLRN, the later ``tf.estimator`` release). The network:

* ``BN -> conv3x3 (channels -> F)`` gives the feature ``y`` that every state adds back.
* ``T`` recurrent states. Each state is
  ``BN -> ReLU -> non-local -> BN -> conv3x3 RB1_a -> BN -> ReLU -> conv3x3 RB1_b -> + y``.
  The convolutions (non-local theta/phi/g, RB1_a, RB1_b) are shared by every state (TF
  ``reuse=True``); the three batch-norm layers are **not** shared: TF creates new ones at every
  state, so each state has its own affine parameters and moving statistics.
* The non-local module (paper Eq. 2, "embedded Gaussian"): theta and phi are 1x1 convolutions to
  ``F/2`` features, g a 1x1 convolution to ``F``; the attention is a softmax of ``theta . phi``
  over all positions of the patch (the patch *is* the confined neighbourhood: the official code
  runs the network on 45x45 or 43x43 patches), and the module adds its input back.
* Correlation propagation (paper Sec. 3.3, original release only): the pre-softmax scores of a
  state are added to the next state's scores, so they accumulate over the states.
* ``BN -> ReLU -> conv3x3 (F -> channels)`` gives a residual that is added to the input. The
  original release works in [0, 255] and adds the residual outside its graph (``test.py``); the
  later release works in [0, 1] and clips to [0, 1] inside its graph, per patch. Both are kept
  here so the module returns the restored patch; with the same averaging of overlapping patches
  the image equals the official one (averaging is linear, the input is the same in every patch).

Batch-norm epsilon is TensorFlow's default, 1e-3 (PyTorch's default is 1e-5); the momentum is
PyTorch's equivalent of TF's 0.99. Inference uses the moving statistics (``model.eval()``).

Parameter names follow the TF layer names where TF names them (``conv1``, ``conv_end``,
``rnn.RB1_a``, ``rnn.RB1_b``, ``rnn.non_local.theta`` for ``rnn/non_local_theta``); TF leaves the
batch-norm layers unnamed (``batch_normalization_<k>`` by creation order), so they are named by
their place here: ``bn_in``, ``bn_end``, ``rnn.steps.<t>.norm_in/norm_a/norm_b``. The checkpoint
converter (:mod:`restorekit.models.nlrn_convert`) maps one to the other.

Weights are initialised with PyTorch's defaults (the official code zero-initialises g, which
would make the attention invisible in checks on random weights); trained weights come from a
converted checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from restorekit.errors import InputError

# TensorFlow's tf.layers.batch_normalization defaults.
TF_BN_EPSILON = 1e-3
TF_BN_MOMENTUM = 0.99


class TFBatchNorm2d(nn.BatchNorm2d):
    """Batch-norm with TF's epsilon and momentum; in eval mode written as ``x * scale + shift``.

    The affine form computes the same values as ``BatchNormalization`` with the moving statistics.
    It matters for export: the ONNX exporter folds a BatchNormalization that follows a Conv into
    that Conv's weights, and since ``RB1_a`` is shared by every state but followed by a different
    batch-norm in each, the graph would then carry ``T`` fused copies of the shared kernel
    (1.45 MB -> 7.9 MB for the full model). As scale/shift the traced graph keeps the shared kernel
    as one initializer; onnxsim's ``fuse_mul_into_conv`` pass makes the same copies unless it is
    skipped (tests/models/test_nlrn.py). TensorRT may still fuse the scale when it builds.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=TF_BN_EPSILON, momentum=1.0 - TF_BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _batch_norm(channels: int) -> TFBatchNorm2d:
    return TFBatchNorm2d(channels)


class NonLocalBlock(nn.Module):
    """Non-local module over every position of its input (paper Eq. 2 and 5).

    ``z_i = x_i + sum_j softmax_j(theta(x_i) . phi(x_j) + c_ij) g(x_j)``, where ``c`` is the
    propagated correlation of the previous state (absent at the first state and in the later
    release). No 1/sqrt(d) scaling, as in the official code.
    """

    def __init__(self, channels: int, inner_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(channels, inner_channels, 1)
        self.phi = nn.Conv2d(channels, inner_channels, 1)
        self.g = nn.Conv2d(channels, channels, 1)

    def forward(
        self, x: torch.Tensor, corr: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the module's output and its pre-softmax scores ``[B, N, N]`` (N = H*W).

        Row-major ``flatten(2)`` of NCHW gives the same token order as TF's NHWC reshape.
        """
        theta = self.theta(x).flatten(2).transpose(1, 2)  # [B, N, Ci]
        phi = self.phi(x).flatten(2)  # [B, Ci, N]
        scores = torch.bmm(theta, phi)  # [B, N, N]; row i: query position i
        if corr is not None:
            scores = scores + corr
        attention = torch.softmax(scores, dim=-1)
        g = self.g(x).flatten(2).transpose(1, 2)  # [B, N, C]
        out = torch.bmm(attention, g).transpose(1, 2).reshape_as(x)
        return x + out, scores


class StepNorms(nn.Module):
    """The three batch-norm layers of one recurrent state (TF creates new ones at every state)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm_in = _batch_norm(features)  # before ReLU and the non-local module
        self.norm_a = _batch_norm(features)  # before RB1_a
        self.norm_b = _batch_norm(features)  # before ReLU and RB1_b


class RecurrentBody(nn.Module):
    """The recurrent states: convolutions shared by all states, batch-norms per state."""

    def __init__(self, features: int, nl_features: int, num_steps: int, corr_propagation: bool):
        super().__init__()
        self.non_local = NonLocalBlock(features, nl_features)
        self.RB1_a = nn.Conv2d(features, features, 3, padding=1)
        self.RB1_b = nn.Conv2d(features, features, 3, padding=1)
        self.steps = nn.ModuleList(StepNorms(features) for _ in range(num_steps))
        self.corr_propagation = corr_propagation

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # A Python loop: tracing unrolls it, and the shared convolutions stay single parameters,
        # so the ONNX graph stores each shared weight once.
        h = y
        corr: torch.Tensor | None = None
        for norms in self.steps:
            t = torch.relu(norms.norm_in(h))
            t, scores = self.non_local(t, corr)
            t = self.RB1_a(norms.norm_a(t))
            t = self.RB1_b(torch.relu(norms.norm_b(t)))
            h = t + y
            if self.corr_propagation:
                corr = scores
        return h


class NLRN(nn.Module):
    """Non-local recurrent network; maps a degraded patch to the restored patch.

    Args:
        channels: image channels (1: gray or the Y channel).
        num_features: feature width F (128 in both releases).
        nl_features: width of the non-local theta/phi embeddings (64 in both releases).
        num_steps: recurrent states T (12 in the original release, 15 in the later one).
        corr_propagation: carry the pre-softmax scores from state to state (original release).
        clip_max: clip the output to ``[0, clip_max]`` (1.0 in the later release; ``None`` in
            the original release, whose test script clips only when it saves the image).
    """

    def __init__(
        self,
        channels: int = 1,
        num_features: int = 128,
        nl_features: int = 64,
        num_steps: int = 12,
        corr_propagation: bool = True,
        clip_max: float | None = None,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.bn_in = _batch_norm(channels)
        self.conv1 = nn.Conv2d(channels, num_features, 3, padding=1)
        self.rnn = RecurrentBody(num_features, nl_features, num_steps, corr_propagation)
        self.bn_end = _batch_norm(num_features)
        self.conv_end = nn.Conv2d(num_features, channels, 3, padding=1)
        self.clip_max = clip_max

    @property
    def num_steps(self) -> int:
        return len(self.rnn.steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.bn_in(x))
        h = self.rnn(y)
        out = x + self.conv_end(torch.relu(self.bn_end(h)))
        if self.clip_max is not None:
            out = out.clamp(0.0, self.clip_max)
        return out


# ---------------------------------------------------------------------------------------------
# The official inference protocol: overlapping patches at stride 7, averaged.


def patch_origins(length: int, patch: int, stride: int = 7) -> list[int]:
    """Patch start positions along one axis, as both official test scripts compute them.

    ``range(0, length - patch, stride)`` plus a last patch flush with the far edge
    (``length - patch``), so the last patch overlaps its neighbour by more than the others.

    Raises:
        InputError: the image is smaller than one patch.
    """
    if length < patch:
        raise InputError(
            f"image side {length} px is smaller than the {patch}-px NLRN patch; pad the image "
            f"to at least {patch} px"
        )
    return list(range(0, length - patch, stride)) + [length - patch]


def official_patch_average(
    image: np.ndarray,
    forward: Callable[[np.ndarray], np.ndarray],
    patch: int,
    stride: int = 7,
    batch: int = 100,
) -> np.ndarray:
    """Run ``forward`` on every official patch of ``image`` and average the overlaps.

    The reference for checking a runtime tiler against the official protocol (NLRN_v0
    ``test.py``/``test_sr.py``; NLRN ``datasets.denoise.test_saved_model``).

    Args:
        image: ``[C, H, W]`` float array in the model's value range.
        forward: maps a batch ``[B, C, patch, patch]`` to an output batch of the same shape.
        patch: patch side (45 for the original release, 43 for the later one).
        stride: distance between patch starts (7 in both releases).
        batch: patches per ``forward`` call (100 in the original test scripts).

    Returns:
        ``[C, H, W]`` float64 average of the patch outputs.

    Raises:
        InputError: the image is not ``[C, H, W]`` or is smaller than one patch.
    """
    if image.ndim != 3:
        raise InputError(f"expected a [C, H, W] image, got shape {image.shape}")
    _, h, w = image.shape
    origins = [
        (i, j) for i in patch_origins(h, patch, stride) for j in patch_origins(w, patch, stride)
    ]
    out = np.zeros(image.shape, dtype=np.float64)
    count = np.zeros(image.shape[1:], dtype=np.float64)
    for start in range(0, len(origins), batch):
        chunk = origins[start : start + batch]
        patches = np.stack([image[:, i : i + patch, j : j + patch] for i, j in chunk])
        results = np.asarray(forward(patches))
        if results.shape != patches.shape:
            raise InputError(
                f"forward returned shape {results.shape} for patches of shape {patches.shape}"
            )
        for (i, j), res in zip(chunk, results, strict=True):
            out[:, i : i + patch, j : j + patch] += res
            count[i : i + patch, j : j + patch] += 1
    return out / count

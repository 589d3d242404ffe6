"""NLRN (Liu et al., "Non-Local Recurrent Network for Image Restoration", NeurIPS 2018).

Two official TensorFlow releases, both read for this spec:

* Ding-Liu/NLRN_v0 (original; the weights of the paper): 12 recurrent states with correlation
  propagation, gray images in [0, 255], the network predicts a residual added to the input,
  45x45 patches at stride 7, averaged. One super-resolution model serves x2, x3 and x4: its input
  is the Y channel (MATLAB-style YCbCr) of the bicubic-upsampled low-resolution image.
* Ding-Liu/NLRN (later, ``tf.estimator``): no correlation propagation, [0, 1] with the residual
  added and clipped inside the graph, 43x43 patches at stride 7; the README releases 15-state
  SavedModels. The layout is the code's with ``num_steps=15`` [inferred from the code and README;
  the released archives were not inspected].

Neither release publishes PyTorch weights: ``restore-convert nlrn CKPT -o model.safetensors``
converts a TF checkpoint or SavedModel (no TensorFlow needed).

The network is run on fixed-size patches: the patch is the non-local neighbourhood, so the patch
size is part of the model (``default_tile``) and the overlap is ``patch - stride``; overlapping
outputs are averaged (``blend="average"``).
"""

from __future__ import annotations

from restorekit.models.spec import ArchSpec, CheckpointFormat, SizeRule, Variant

STRIDE = 7
V0_PATCH = 45
LATER_PATCH = 43

_V0 = {"num_steps": 12, "corr_propagation": True, "clip_max": None}
_LATER = {"num_steps": 15, "corr_propagation": False, "clip_max": 1.0}
# The bundled demo: the original release's layout (correlation propagation) at reduced width, in
# [0, 1] and clipped; patches at half overlap (stride 16) keep a whole photo to a few seconds.
DEMO_PATCH = 32
_DEMO = {
    "num_features": 32,
    "nl_features": 16,
    "num_steps": 4,
    "corr_propagation": True,
    "clip_max": 1.0,
}
_V0_WEIGHTS = "Ding-Liu/NLRN_v0 README (Google Drive, TF checkpoint); convert with restore-convert"
_LATER_WEIGHTS = "Ding-Liu/NLRN README sigma{}.zip (TF SavedModel); convert with restore-convert"


def _v0_denoise(sigma: int) -> Variant:
    return Variant(
        name=f"dn_s{sigma}",
        task=f"gray Gaussian denoising, sigma {sigma} (original release, 12 states, "
        "correlation propagation)",
        config=_V0,
        default_tile=(V0_PATCH, V0_PATCH),
        in_channels=1,
        out_channels=1,
        value_range=255.0,
        color_order="GRAY",
        overlap=V0_PATCH - STRIDE,
        weights=f"sigma{sigma} checkpoint, {_V0_WEIGHTS}",
    )


def _later_denoise(sigma: int) -> Variant:
    return Variant(
        name=f"dn15_s{sigma}",
        task=f"gray Gaussian denoising, sigma {sigma} (later release, 15 states, "
        "no correlation propagation)",
        config=_LATER,
        default_tile=(LATER_PATCH, LATER_PATCH),
        in_channels=1,
        out_channels=1,
        value_range=1.0,
        color_order="GRAY",
        overlap=LATER_PATCH - STRIDE,
        weights=_LATER_WEIGHTS.format(sigma),
    )


SPEC = ArchSpec(
    name="nlrn",
    title="NLRN: Non-Local Recurrent Network for Image Restoration (Liu et al., NeurIPS 2018)",
    build="restorekit.models.nlrn:NLRN",
    variants=(
        _v0_denoise(15),
        _v0_denoise(25),
        _v0_denoise(50),
        Variant(
            name="sr",
            task="super-resolution x2/x3/x4 with one model: the input is the Y channel of the "
            "bicubic-upsampled low-resolution image (upsample outside the model), output the "
            "restored Y (original release)",
            config=_V0,
            default_tile=(V0_PATCH, V0_PATCH),
            in_channels=1,
            out_channels=1,
            scale=1,
            value_range=255.0,
            color_order="Y",
            overlap=V0_PATCH - STRIDE,
            weights=f"sr checkpoint (nlrn-data_sr-400000), {_V0_WEIGHTS}",
        ),
        _later_denoise(15),
        _later_denoise(25),
        _later_denoise(50),
        # Trained by tools/train_demo.py and shipped in the package, so a bare `nlrn` restores a
        # photo without a download (card: restorekit/data/weights/nlrn.demo_dn_s25.md).
        Variant(
            name="demo_dn_s25",
            task="demo: gray Gaussian denoising, sigma 25; reduced width (32 features, 4 states, "
            "32x32 patches at stride 16), trained on the 400 BSD images of Train400 (tools/train_demo.py)",
            config=_DEMO,
            default_tile=(DEMO_PATCH, DEMO_PATCH),
            in_channels=1,
            out_channels=1,
            value_range=1.0,
            color_order="GRAY",
            overlap=DEMO_PATCH // 2,
            weights="bundled with restorekit (tools/train_demo.py)",
            bundled_weights="nlrn.demo_dn_s25.safetensors",
        ),
    ),
    # The bundled demo weights: the only NLRN weights available without a conversion.
    default_variant="demo_dn_s25",
    # The graph computes at any patch size, but the patch is the model's non-local neighbourhood
    # (trained and evaluated at 45x45 or 43x43): each variant's default tile is its official patch.
    # Attention memory is (H*W)^2 per patch; 64x64 (67 MB per score matrix) bounds it.
    size_rule=SizeRule(max_tile_area=64 * 64),
    default_overlap=V0_PATCH - STRIDE,
    # Weights come from restore-convert, which writes our parameter names directly.
    checkpoint=CheckpointFormat(wrappers=(), strip_prefixes=()),
    blend="average",
    licence="MIT (Ding-Liu/NLRN); Ding-Liu/NLRN_v0 ships no licence file",
)

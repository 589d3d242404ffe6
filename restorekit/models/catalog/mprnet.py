"""MPRNet (Zamir et al., "Multi-Stage Progressive Image Restoration", CVPR 2021), swz30/MPRNet.

The three task files of the official code differ only in the constructor defaults (n_feat,
scale_unetfeats, scale_orsnetfeats); the values below are those defaults.
"""

from __future__ import annotations

from restorekit.models.spec import ArchSpec, CheckpointFormat, SizeRule, Variant

_RELEASE = "swz30/MPRNet README (Google Drive)"

SPEC = ArchSpec(
    name="mprnet",
    title="MPRNet: Multi-Stage Progressive Image Restoration (Zamir et al., CVPR 2021)",
    build="restorekit.models.mprnet:MPRNet",
    variants=(
        Variant(
            name="deblur",
            task="motion deblurring (GoPro)",
            config={"n_feat": 96, "scale_unetfeats": 48, "scale_orsnetfeats": 32},
            default_tile=(256, 256),
            weights=f"model_deblurring.pth, {_RELEASE}",
        ),
        Variant(
            name="denoise",
            task="real-image denoising (SIDD)",
            config={"n_feat": 80, "scale_unetfeats": 48, "scale_orsnetfeats": 32},
            default_tile=(256, 256),
            weights=f"model_denoising.pth, {_RELEASE}",
        ),
        Variant(
            name="derain",
            task="deraining (Rain13K)",
            config={"n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16},
            default_tile=(256, 256),
            weights=f"model_deraining.pth, {_RELEASE}",
        ),
        # Trained by tools/train_demo.py and shipped in the package, so a bare `mprnet` restores
        # a photo without a download (card: restorekit/data/weights/mprnet.demo_dn_s25.md).
        Variant(
            name="demo_dn_s25",
            task="demo: colour Gaussian denoising, sigma 25; reduced width (n_feat 16, 2 CABs per "
            "ORB), trained on Kodak24, McMaster and LIVE1 (tools/train_demo.py)",
            config={"n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8, "num_cab": 2},
            default_tile=(256, 256),
            weights="bundled with restorekit (tools/train_demo.py)",
            bundled_weights="mprnet.demo_dn_s25.safetensors",
        ),
        # The demo task at the derain variant's widths: INT8 speed depends on width, so INT8
        # figures on trained weights are measured on this one (benchmarks/precision.py). Its
        # weights (10 MB) are not bundled: `python tools/train_demo.py mprnet-wide` makes them.
        Variant(
            name="demo_wide_dn_s25",
            task="demo: colour Gaussian denoising, sigma 25; the derain widths (n_feat 40) with 2 "
            "CABs per ORB, trained like demo_dn_s25 (tools/train_demo.py mprnet-wide)",
            config={"n_feat": 40, "scale_unetfeats": 20, "scale_orsnetfeats": 16, "num_cab": 2},
            default_tile=(256, 256),
            weights="not bundled (10 MB): made by tools/train_demo.py mprnet-wide",
        ),
    ),
    # The bundled demo weights: the only MPRNet weights available without a download.
    default_variant="demo_dn_s25",
    # The image is halved for stage 2 and quartered for stage 1, whose U-Net halves it twice more.
    size_rule=SizeRule(multiple_of=8, shape_general=True),
    default_overlap=32,
    # train.py saves {'epoch', 'state_dict', 'optimizer'}; DataParallel adds 'module.'.
    checkpoint=CheckpointFormat(wrappers=("state_dict",), strip_prefixes=("module.",)),
    # forward returns [stage3, stage2, stage1]; the first is the restored image.
    output_index=0,
    licence="MIT (swz30/MPRNet)",
    tiny={"n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8, "num_cab": 2},
)

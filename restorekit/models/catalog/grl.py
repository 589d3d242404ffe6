"""GRL (Li et al., "Efficient and Explicit Modelling of Image Hierarchies for Image Restoration",
CVPR 2023), ofsoundof/GRL-Image-Restoration, release v1.0.0.

Window size, stripe size and anchor down-sampling factor of each released checkpoint cannot be
read from its weights (the position bias is an MLP of relative coordinates), so they are listed
here explicitly, from the experiment configs and the overrides in ``scripts/grl/grl_test.md``
(docs/models.md, GRL). ``pad_size`` is the largest window/stripe size: the input
height and width must be multiples of it.

Not supported: **dual-pixel defocus deblurring** (``db_defocus_dual_pixel_grl_base.ckpt``, 6-channel
input: left and right views). Its experiment config ``db_defocus/grl_dual_p480`` is missing from
the official repository, so its window/stripe/channel configuration is unknown and is not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from restorekit.models.spec import ArchSpec, CheckpointFormat, SizeRule, Variant

_RELEASE = "GRL release v1.0.0 (github.com/ofsoundof/GRL-Image-Restoration)"
_TITLE = (
    "GRL: Efficient and Explicit Modelling of Image Hierarchies for Image Restoration "
    "(Li et al., CVPR 2023)"
)
_BUILD = "restorekit.models.grl:GRL"
_LICENCE = "MIT (ofsoundof/GRL-Image-Restoration)"

_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "embed_dim": 64,
        "depths": [4, 4, 4, 4],
        "num_heads_window": [2, 2, 2, 2],
        "num_heads_stripe": [2, 2, 2, 2],
        "local_connection": False,
    },
    "small": {
        "embed_dim": 128,
        "depths": [4, 4, 4, 4],
        "num_heads_window": [2, 2, 2, 2],
        "num_heads_stripe": [2, 2, 2, 2],
        "local_connection": False,
    },
    "base": {
        "embed_dim": 180,
        "depths": [4, 4, 8, 8, 8, 4, 4],
        "num_heads_window": [3] * 7,
        "num_heads_stripe": [3] * 7,
        "local_connection": True,
    },
}

# The Lightning checkpoints hold the model under `model.` (`model_g.` for the GAN-trained BSR,
# whose discriminator `model_d.` is dropped), 13 persistent position/mask buffers that depend on
# the training patch size (recomputed by our model), and the engine's metric buffers.
_BUFFERS = (
    r"^(table_(w|sh|sv)|index_(w|sh_a2w|sh_w2a|sv_a2w|sv_w2a)|mask_(w|sh_a2w|sh_w2a|sv_a2w|sv_w2a))$",
    r"(relative_coords_table|relative_position_index|attn_mask)$",  # older per-block buffers
    r"^(current_val_metric|best_val_metric|best_iter)$",
    r"^model_[dg]\.",  # discriminator, and generator copies left after one prefix was stripped
)
CHECKPOINT = CheckpointFormat(
    wrappers=("state_dict", "params"),
    strip_prefixes=("model_g.", "model."),
    drop_patterns=_BUFFERS,
)

#: Unsupported official checkpoints and why (shown by listings and the README).
UNSUPPORTED = {
    "db_defocus_dual_pixel_grl_base.ckpt": (
        "dual-pixel defocus deblurring (6-channel input): the experiment config "
        "db_defocus/grl_dual_p480 is missing from the official repository, so its configuration "
        "is unknown"
    ),
}


def pad_size(config: Mapping[str, Any]) -> int:
    """The multiple the input height and width must have: the largest window/stripe size."""
    return max(config["window_size"], *config["stripe_size"])


def size_rule(variant: Variant) -> SizeRule:
    """The size rule of one variant (``multiple_of`` = its ``pad_size``; one graph per tile)."""
    return SizeRule(multiple_of=pad_size(variant.config), shape_general=False)


def _variant(
    name: str,
    task: str,
    size: str,
    ckpt: str,
    *,
    window: int,
    stripe: tuple[int, int],
    df: int,
    tile: int,
    overlap: int,
    channels: int = 3,
    scale: int = 1,
    upsampler: str = "",
) -> Variant:
    config = {
        **_SIZES[size],
        "in_channels": channels,
        "upscale": scale,
        "upsampler": upsampler,
        "window_size": window,
        "stripe_size": list(stripe),
        "anchor_window_down_factor": df,
        "mlp_ratio": 2.0,
    }
    assert tile % pad_size(config) == 0, (name, tile)
    return Variant(
        name=name,
        task=task,
        config=config,
        default_tile=(tile, tile),
        in_channels=channels,
        out_channels=channels,
        scale=scale,
        value_range=1.0,
        # Gray denoisers are trained on gray images (full-range luma); gray JPEG models on the Y
        # channel of YCbCr (studio range), as the JPEG benchmarks define it.
        color_order="RGB" if channels == 3 else ("Y" if name.startswith("jpeg") else "GRAY"),
        overlap=overlap,
        weights=f"{ckpt}, {_RELEASE}",
        size_rule=SizeRule(multiple_of=pad_size(config), shape_general=False),
    )


def _sr(size: str) -> list[Variant]:
    # Official SR test: tile=0 (whole image); window 32, stripe 64x64, df 4 (GRL-B: 2 on the
    # command line). Tile 128 LR px (512 px out at x4); overlap half a stripe.
    upsampler = "pixelshuffledirect" if size == "tiny" else "pixelshuffle"
    df = 2 if size == "base" else 4
    return [
        _variant(
            f"sr_x{s}",
            f"classical super-resolution x{s}",
            size,
            f"sr_grl_{size}_c3x{s}.ckpt",
            window=32,
            stripe=(64, 64),
            df=df,
            tile=128,
            overlap=32,
            scale=s,
            upsampler=upsampler,
        )
        for s in (2, 3, 4)
    ]


def _dn(size: str) -> list[Variant]:
    # Window 16 (GRL-B: 32, df 2), stripe 64x128, pad 128. Official GRL-B test: tile 256, overlap
    # 32; the same is used for T and S (a 128 tile would spend 44% of its area on overlap).
    window, df = (32, 2) if size == "base" else (16, 4)
    out = []
    for c, colour in ((3, "colour"), (1, "gray")):
        for s in (15, 25, 50):
            out.append(
                _variant(
                    f"dn_c{c}s{s}",
                    f"{colour} denoising, sigma {s}",
                    size,
                    f"dn_grl_{size}_c{c}s{s}.ckpt",
                    window=window,
                    stripe=(64, 128),
                    df=df,
                    tile=256,
                    overlap=32,
                    channels=c,
                )
            )
    return out


def _jpeg() -> list[Variant]:
    # GRL-S only. Window 36, stripe 72x144, pad 144; official test tile 288, overlap 36.
    return [
        _variant(
            f"jpeg_c{c}q{q}",
            f"{colour} JPEG artefact removal, quality {q}",
            "small",
            f"jpeg_grl_small_c{c}q{q}.ckpt",
            window=36,
            stripe=(72, 144),
            df=4,
            tile=288,
            overlap=36,
            channels=c,
        )
        for c, colour in ((3, "colour"), (1, "gray"))
        for q in (10, 20, 30, 40)
    ]


def _dm() -> Variant:
    # GRL-S only. Input is a 3-channel bilinear (MATLAB-style) demosaic, not raw Bayer.
    return _variant(
        "dm",
        "demosaicking (input: bilinear-demosaicked RGB)",
        "small",
        "dm_grl_small.ckpt",
        window=8,
        stripe=(32, 32),
        df=4,
        tile=256,
        overlap=16,
    )


def _deblur() -> list[Variant]:
    # GRL-B only. Window 12, stripe 48x96 (motion) / window 16, stripe 48x96 (defocus); pad 96.
    # Official tiles: defocus 480 / overlap 48; motion tile=0 on the command line (yaml 480/48).
    motion = [
        _variant(
            f"db_{key}",
            f"motion deblurring ({label})",
            "base",
            f"db_motion_grl_base_{key}.ckpt",
            window=12,
            stripe=(48, 96),
            df=4,
            tile=480,
            overlap=48,
        )
        for key, label in (
            ("gopro", "GoPro"),
            ("realblur_j", "RealBlur-J"),
            ("realblur_r", "RealBlur-R"),
        )
    ]
    defocus = _variant(
        "db_defocus",
        "single-image defocus deblurring (DPDD)",
        "base",
        "db_defocus_single_pixel_grl_base.ckpt",
        window=16,
        stripe=(48, 96),
        df=4,
        tile=480,
        overlap=48,
    )
    return [*motion, defocus]


def _bsr() -> Variant:
    # GRL-B, GAN-trained real-world x4 SR; nearest+conv tail; window 16, stripe 32x64, pad 64.
    return _variant(
        "bsr_x4",
        "real-world super-resolution x4 (BSR, GAN)",
        "base",
        "bsr_grl_base.ckpt",
        window=16,
        stripe=(32, 64),
        df=4,
        tile=128,
        overlap=16,
        scale=4,
        upsampler="nearest+conv",
    )


def _demo() -> Variant:
    # Trained by tools/train_demo.py and shipped in the package, so `grl` restores a photo without
    # a download. GRL-T's blocks at reduced size: half the width, two stages of two blocks, and
    # windows/stripes scaled down with the 64-px training crops (pad size 32, which divides 256).
    config = {
        "embed_dim": 32,
        "depths": [2, 2],
        "num_heads_window": [2, 2],
        "num_heads_stripe": [2, 2],
        "local_connection": False,
        "in_channels": 3,
        "upscale": 1,
        "upsampler": "",
        "window_size": 8,
        "stripe_size": [16, 32],
        "anchor_window_down_factor": 4,
        "mlp_ratio": 2.0,
    }
    return Variant(
        name="demo_dn_s25",
        task="demo: colour Gaussian denoising, sigma 25; reduced GRL-T (embed 32, 2 stages of 2 "
        "blocks, window 8, stripes 16x32), trained on Kodak24, McMaster and LIVE1 (tools/train_demo.py)",
        config=config,
        default_tile=(256, 256),
        overlap=32,
        weights="bundled with restorekit (tools/train_demo.py)",
        bundled_weights="grl-t.demo_dn_s25.safetensors",
        size_rule=SizeRule(multiple_of=32, shape_general=False),
    )


def _spec(name: str, size: str, variants: list[Variant], default: str) -> ArchSpec:
    rules = {pad_size(v.config) for v in variants}
    return ArchSpec(
        name=name,
        title=f"{_TITLE}, {size}",
        build=_BUILD,
        variants=tuple(variants),
        default_variant=default,
        # The spec-level rule is the common divisor of the variants' pad sizes; each variant
        # carries its exact rule (multiple of its pad_size), which export and runtime use.
        size_rule=SizeRule(multiple_of=math.gcd(*rules), shape_general=False),
        default_overlap=32,
        checkpoint=CHECKPOINT,
        fp16="unverified",
        int8="unverified",
        licence=_LICENCE,
    )


SPEC_TINY = _spec("grl-t", "tiny", [*_sr("tiny"), *_dn("tiny"), _demo()], "dn_c3s25")
SPEC_SMALL = _spec("grl-s", "small", [*_sr("small"), *_dn("small"), *_jpeg(), _dm()], "dn_c3s25")
SPEC_BASE = _spec("grl-b", "base", [*_sr("base"), *_dn("base"), *_deblur(), _bsr()], "sr_x4")
SPECS = (SPEC_TINY, SPEC_SMALL, SPEC_BASE)

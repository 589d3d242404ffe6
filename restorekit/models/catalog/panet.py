"""PANet and PA-EDSR (Mei et al., "Pyramid Attention Networks for Image Restoration", 2020).

Official code and weights: SHI-Labs/Pyramid-Attention-Networks; every released checkpoint is in
one Google Drive folder linked from the task READMEs. The checkpoints are raw state dicts
(``torch.save(model.state_dict())``, no wrapper, no ``module.`` prefix) that include both mean-shift
convolutions and the attention's ``escape_NaN`` buffer. All released models use ``rgb_range 1``
(``--rgb_range 1`` in the SR commands; the default of the DN/CAR/Demosaic options), so tensors
are in [0, 1].

Tiles and memory. The attention compares every pixel of a tile with all
``L = sum_s floor(H*s) * floor(W*s)`` (about 3.3 * H*W) pyramid positions, so its score matrix takes
``L * H*W * 4`` bytes per tile in FP32 (``restorekit.models.panet.attention_bytes``), and a pass
needs about twice that (measured peaks per tile size: benchmarks/README.md, panet_tiles.py). The
official test (``--chop``) splits an image into quadrants with a 10-px shave until a tile is below
6 400 px (6 800 for denoising), so its attention never sees more than about 80x80 px; the published
numbers are therefore those of tiled inference, and we cap the tile area at 6 400 px. The chop's
tiles are 45 to 80 px wide depending on the image size. The default tile of 64x64 lies in that
range and needs a third of the memory of 80x80 at about the same time per output pixel with the
20-px overlap. Adjacent chop tiles overlap by 2 x 10 px, hence the default overlap of 20.
See docs/models.md, "PANet and PA-EDSR".
"""

from __future__ import annotations

import re
from typing import Any

from restorekit.errors import WeightsError
from restorekit.models.spec import ArchSpec, CheckpointFormat, SizeRule, Variant

_RELEASE = "Google Drive folder of the SHI-Labs/Pyramid-Attention-Networks READMEs"
_TITLE = "Pyramid Attention Networks for Image Restoration (Mei et al., 2020)"
_LICENCE = "MIT (SHI-Labs/Pyramid-Attention-Networks; EDSR-PyTorch parts MIT)"

# The official chop's criterion (tile area below 6 400 px, 10-px shave on each inner border).
_SIZE_RULE = SizeRule(multiple_of=1, max_tile_area=6400, shape_general=True)
_OVERLAP = 20
_TILE = (64, 64)

_PANET = {"n_resblocks": 80, "n_feats": 64, "res_scale": 1.0, "rgb_range": 1.0}
_PAEDSR = {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, "rgb_range": 1.0}

_MSA = re.compile(r"^msa\.")
_BODY = re.compile(r"^body\.(\d+)\.")


def fold_msa_alias(sd: dict[str, Any]) -> dict[str, Any]:
    """Fold PA-EDSR's second name of its attention (``msa.*``) into ``body.<n/2>.*``.

    The official module registers the attention twice, so its state dict holds each tensor under
    both names; ours keeps only the ``body`` one. A file with both sets loses ``msa.*`` (after a
    check that the copies are equal); a file with only ``msa.*`` (de-duplicated) has it renamed.

    Raises:
        WeightsError: ``msa.X`` and ``body.<n/2>.X`` hold different tensors.
    """
    alias = {k[4:]: v for k, v in sd.items() if _MSA.match(k)}
    if not alias:
        return sd
    out = {k: v for k, v in sd.items() if not _MSA.match(k)}
    indices = [int(m.group(1)) for k in out if (m := _BODY.match(k))]
    # The body is n blocks + attention + final conv: highest index n + 1, attention at n // 2.
    index = (max(indices) - 1) // 2 if indices else 0
    for name, tensor in alias.items():
        key = f"body.{index}.{name}"
        if key not in out:
            out[key] = tensor
        elif tuple(out[key].shape) != tuple(tensor.shape) or not out[key].equal(tensor):
            raise WeightsError(
                f"msa.{name} and {key} should be the same tensor (PA-EDSR registers its attention "
                "under both names) but differ; the file was edited or belongs to another model"
            )
    return out


def _panet(name: str, task: str, weights: str, colors: int = 3) -> Variant:
    return Variant(
        name=name,
        task=task,
        config={**_PANET, "n_colors": colors},
        default_tile=_TILE,
        in_channels=colors,
        out_channels=colors,
        color_order="RGB" if colors == 3 else "Y",
        weights=f"{weights}, {_RELEASE}",
    )


SPEC = ArchSpec(
    name="panet",
    title=f"PANet: {_TITLE}",
    build="restorekit.models.panet:PANet",
    variants=(
        *(
            _panet(f"dn_s{s}", f"colour denoising, AWGN sigma {s}", f"model_N{s}.pt")
            for s in (10, 30, 50, 70)
        ),
        # Gray: the Y channel of skimage's rgb2ycbcr (about [16, 235] / 255), as the CAR test set.
        *(
            _panet(f"car_q{q}", f"JPEG artefact removal (Y channel), quality {q}", f"Q{q}.pt", 1)
            for q in (10, 20, 30, 40)
        ),
        # Input: the Bayer mosaic laid out as an RGB image (zeros where a colour was not sampled).
        _panet("demosaic", "demosaicking (mosaicked RGB input)", "model_best.pt"),
        # Trained by tools/train_demo.py and shipped in the package, so a bare `panet` restores a
        # photo without a download. The attention's cost grows with the square of the tile area,
        # so the demo trains and runs on 32x32 tiles (overlap 8).
        Variant(
            name="demo_dn_s25",
            task="demo: colour Gaussian denoising, sigma 25; reduced PANet (4 residual blocks, "
            "32 features, 32x32 tiles), trained on Kodak24, McMaster and LIVE1 (tools/train_demo.py)",
            config={**_PANET, "n_resblocks": 4, "n_feats": 32, "n_colors": 3},
            default_tile=(32, 32),
            overlap=8,
            weights="bundled with restorekit (tools/train_demo.py)",
            bundled_weights="panet.demo_dn_s25.safetensors",
        ),
    ),
    # The bundled demo weights: the only PANet weights available without a download.
    default_variant="demo_dn_s25",
    size_rule=_SIZE_RULE,
    default_overlap=_OVERLAP,
    checkpoint=CheckpointFormat(wrappers=("state_dict",), strip_prefixes=("module.",)),
    licence=_LICENCE,
    tiny={"n_resblocks": 2, "n_feats": 16},
)

PAEDSR_SPEC = ArchSpec(
    name="pa-edsr",
    title=f"PA-EDSR: {_TITLE}",
    build="restorekit.models.panet:PAEDSR",
    variants=tuple(
        Variant(
            name=f"sr_x{r}",
            task=f"super-resolution x{r} (DIV2K, bicubic)",
            config={**_PAEDSR, "scale": r},
            default_tile=_TILE,
            scale=r,
            weights=f"model_x{r}.pt, {_RELEASE}",
        )
        for r in (2, 3, 4)
    ),
    default_variant="sr_x4",
    size_rule=_SIZE_RULE,
    default_overlap=_OVERLAP,
    checkpoint=CheckpointFormat(
        wrappers=("state_dict",), strip_prefixes=("module.",), fixup=fold_msa_alias
    ),
    licence=_LICENCE,
    # n_feats 16 with reduction 8 leaves a 2-channel matching embedding: still a real attention.
    tiny={"n_resblocks": 2, "n_feats": 16},
)

"""The official implementations, imported at benchmark time from checkouts outside the repository.

Nothing here copies the official code: it finds a checkout the user names (``--official DIR``),
imports its network module, and builds it with the configuration of one of our variants so that
our parameters load into it strictly. The official GRL imports ``timm``, ``fairscale`` and
``omegaconf`` for a handful of helpers its inference path uses trivially (``to_2tuple``,
``trunc_normal_``, ``DropPath`` at rate 0 in eval mode, an unused activation-checkpoint wrapper,
a config namespace); PANet imports ``torchvision`` for nothing it runs. Where those packages are
not installed, minimal stand-ins are registered for the import only (see :func:`_stand_ins`).

Benchmarks run as ``python benchmarks/NAME.py``, so they import this module as ``official_code``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Repository:
    """An official repository: its GitHub name and a file that identifies a checkout of it."""

    name: str
    marker: str

    def find(self, dirs: Iterable[Path]) -> Path | None:
        """The checkout among ``dirs`` (or one level below them) that holds :attr:`marker`."""
        for d in dirs:
            for candidate in (d, *sorted(p for p in d.iterdir() if p.is_dir())):
                if (candidate / self.marker).is_file():
                    return candidate
        return None


GRL_REPO = Repository("ofsoundof/GRL-Image-Restoration", "models/networks/grl.py")
MPRNET_REPO = Repository("swz30/MPRNet", "Deblurring/MPRNet.py")
PANET_REPO = Repository("SHI-Labs/Pyramid-Attention-Networks", "DN_RGB/code/model/panet.py")


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__path__ = []  # a package, so that ``from pkg.sub import x`` resolves the submodule
    return mod


class _DropPath(nn.Identity):
    # timm's DropPath is the identity in eval mode; the benchmark runs eval mode only.
    def __init__(self, drop_prob: float = 0.0, *args: Any, **kwargs: Any) -> None:
        super().__init__()


def _stand_ins() -> dict[str, types.ModuleType]:
    """Import-time stand-ins for packages the official inference path barely uses."""

    def to_2tuple(x: Any) -> tuple:
        return tuple(x) if isinstance(x, (list, tuple)) else (x, x)

    layers = _module(
        "timm.models.layers",
        to_2tuple=to_2tuple,
        trunc_normal_=nn.init.trunc_normal_,
        DropPath=_DropPath,
    )
    timm_models = _module("timm.models", layers=layers)
    fairscale_nn = _module("fairscale.nn", checkpoint_wrapper=lambda m, **_: m)

    class OmegaConf:  # only ``OmegaConf.create(dict)`` read by attribute is used
        @staticmethod
        def create(d: dict) -> types.SimpleNamespace:
            return types.SimpleNamespace(**d)

    tv_utils = _module("torchvision.utils")
    tv_transforms = _module("torchvision.transforms")
    return {
        "timm": _module("timm", models=timm_models),
        "timm.models": timm_models,
        "timm.models.layers": layers,
        "fairscale": _module("fairscale", nn=fairscale_nn),
        "fairscale.nn": fairscale_nn,
        "omegaconf": _module("omegaconf", OmegaConf=OmegaConf),
        "torchvision": _module("torchvision", utils=tv_utils, transforms=tv_transforms),
        "torchvision.utils": tv_utils,
        "torchvision.transforms": tv_transforms,
    }


def _import_from(root: Path, module: str) -> types.ModuleType:
    """Import ``module`` with ``root`` first on ``sys.path`` (the official code imports its own
    packages absolutely, e.g. ``models.common``), missing helper packages stood in for."""
    stand_ins = _stand_ins()
    for top in {name.split(".")[0] for name in stand_ins}:
        try:
            importlib.import_module(top)
        except ImportError:
            for name, stand_in in stand_ins.items():
                if name.split(".")[0] == top:
                    sys.modules.setdefault(name, stand_in)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(root))


def _load_file(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_grl(checkout: Path, config: dict[str, Any], tile: tuple[int, int]) -> nn.Module:
    """The official GRL built as the experiment configs build it, with our variant's sizes.

    ``img_size`` is the tile, so the official buffers are built at the traced size and the naive
    export holds them as constants (what a user who exports at their tile size gets).
    """
    grl = _import_from(checkout, "models.networks.grl")
    return grl.GRL(
        img_size=list(tile),
        in_channels=config["in_channels"],
        embed_dim=config["embed_dim"],
        upscale=config["upscale"],
        img_range=1.0,
        upsampler=config["upsampler"],
        depths=config["depths"],
        num_heads_window=config["num_heads_window"],
        num_heads_stripe=config["num_heads_stripe"],
        window_size=config["window_size"],
        stripe_size=config["stripe_size"],
        stripe_groups=[None, None],
        stripe_shift=True,
        mlp_ratio=config["mlp_ratio"],
        qkv_bias=True,
        qkv_proj_type="linear",
        anchor_proj_type="avgpool",
        anchor_one_stage=True,
        anchor_window_down_factor=config["anchor_window_down_factor"],
        out_proj_type="linear",
        local_connection=config["local_connection"],
        conv_type="1conv",
        init_method="n",
        use_buffer=True,
        use_efficient_buffer=True,
        euclidean_dist=False,
        separable_conv_act=True,
    )


_MPRNET_FOLDERS = {"deblur": "Deblurring", "denoise": "Denoising", "derain": "Deraining"}


def official_mprnet(checkout: Path, task: str) -> nn.Module:
    """The official MPRNet of one task folder (its constructor defaults are that task's widths)."""
    folder = _MPRNET_FOLDERS[task]
    mod = _load_file(checkout / folder / "MPRNet.py", f"official_mprnet_{task}")
    return mod.MPRNet()


def official_panet(checkout: Path, n_resblocks: int, n_feats: int, n_colors: int) -> nn.Module:
    """The official denoising PANet (``DN_RGB``) with the given depth and width, ``rgb_range`` 1."""
    code = checkout / "DN_RGB" / "code"
    panet = _import_from(code, "model.panet")
    args = types.SimpleNamespace(
        n_resblocks=n_resblocks,
        n_feats=n_feats,
        scale=[1],
        rgb_range=1,
        n_colors=n_colors,
        res_scale=1,
    )
    return panet.PANET(args)


def load_strict(official: nn.Module, ours: nn.Module, extra: Callable[[str], bool]) -> None:
    """Load our state dict into the official module with ``strict=True``.

    ``extra(name)`` names the official module's own non-weight buffers (GRL's 13 position/mask
    tables, rebuilt by our model in-graph); they are taken from the official module itself, so
    every weight comes from ours and nothing is left at its initial value.
    """
    sd = dict(ours.state_dict())
    for name, value in official.state_dict().items():
        if name not in sd and extra(name):
            sd[name] = value
    official.load_state_dict(sd, strict=True)
    official.eval()

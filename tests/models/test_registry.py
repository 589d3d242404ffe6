from __future__ import annotations

import pytest

from restorekit.errors import TileSizeError, UnknownModelError
from restorekit.models.registry import REGISTRY, Registry, resolve
from restorekit.models.spec import ArchSpec, SizeRule, Variant


def _spec(name="toy", variants=("a", "b"), default="a"):
    return ArchSpec(
        name=name,
        title="toy",
        build="tests.models.toys:Identity",
        variants=tuple(Variant(v, f"task {v}", {}, (32, 32)) for v in variants),
        default_variant=default,
        size_rule=SizeRule(multiple_of=8),
        default_overlap=4,
    )


def test_bare_name_resolves_to_documented_default():
    # Bare names resolve to the demo variants whose trained weights ship in the package.
    assert resolve("mprnet").name == "mprnet.demo_dn_s25"
    assert resolve("nlrn").name == "nlrn.demo_dn_s25"
    assert resolve("panet").name == "panet.demo_dn_s25"
    assert resolve("grl").name == "grl-t.demo_dn_s25"  # an alias
    assert resolve("mprnet.deblur").name == "mprnet.deblur"
    assert resolve("MPRNet.Derain").name == "mprnet.derain"
    for name in ("mprnet.deblur", "mprnet.denoise", "mprnet.derain"):
        assert name in REGISTRY.names()


def test_unknown_name_lists_known_ones_and_suggests():
    with pytest.raises(UnknownModelError) as err:
        resolve("mprnet.deblr")
    msg = str(err.value)
    assert "mprnet.deblur" in msg and "Did you mean" in msg and "restore-export --list" in msg
    with pytest.raises(UnknownModelError):
        resolve("nosuchnet")


def test_duplicates_raise():
    reg = Registry()
    reg.add(_spec())
    with pytest.raises(ValueError):
        reg.add(_spec())
    with pytest.raises(ValueError):
        _spec(variants=("a", "a"))
    with pytest.raises(ValueError):
        _spec(default="zzz")
    reg.alias("short", "toy.b")
    assert reg.resolve("short").name == "toy.b"
    with pytest.raises(ValueError):
        reg.alias("toy", "toy.a")


def test_size_rule_messages_name_a_valid_tile():
    rule = SizeRule(multiple_of=8)
    rule.check_tile((256, 320), "m")
    with pytest.raises(TileSizeError, match="--tile 104x256"):
        rule.check_tile((100, 256), "m")
    with pytest.raises(TileSizeError, match="safe tile area"):
        SizeRule(max_tile_area=6400).check_tile((96, 96), "m")
    with pytest.raises(TileSizeError, match="only at 45x45"):
        SizeRule(fixed_tile=(45, 45)).check_tile((48, 48), "m")
    assert rule.padded_shape(250, 257) == (256, 264)


def test_every_registered_variant_has_a_valid_default_tile():
    for ref in REGISTRY:
        ref.size_rule.check_tile(ref.variant.default_tile, ref.name)
        assert ref.variant.task and ref.spec.licence


def test_any_catalog_module_imports_first_without_torch():
    """The catalog imports only the spec types, never the registry: no import cycle."""
    import subprocess
    import sys

    for name in ("mprnet", "grl", "nlrn", "panet"):
        code = f"import sys; sys.modules['torch'] = None; import restorekit.models.catalog.{name}"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

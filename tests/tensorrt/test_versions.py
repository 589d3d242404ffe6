"""TensorRT versions compared as versions, the major.minor.patch form, the thresholds."""

from __future__ import annotations

import pytest
from packaging.version import Version

from restorekit.errors import EngineBuildError, ManifestError
from restorekit.tensorrt.versions import (
    ALWAYS_STRONGLY_TYPED_SINCE,
    EXPLICIT_BATCH_IMPLIED_SINCE,
    STRONGLY_TYPED_SINCE,
    parse_trt_version,
    release3,
    short_trt_version,
    supports_hardware_compatibility,
)


def test_versions_compare_as_versions_not_strings():
    # As strings "10.0.0" < "9.0" and "10.10.0" < "10.9.0"; as versions neither holds.
    assert parse_trt_version("10.0.0") >= STRONGLY_TYPED_SINCE
    assert parse_trt_version("10.10.0") > parse_trt_version("10.9.0")
    assert parse_trt_version("10.3.0.30") >= EXPLICIT_BATCH_IMPLIED_SINCE
    assert parse_trt_version("10.12.0.36") < ALWAYS_STRONGLY_TYPED_SINCE
    assert parse_trt_version("11.4.0.106") >= ALWAYS_STRONGLY_TYPED_SINCE


def test_unreadable_version_raises_the_error_the_caller_asks_for():
    with pytest.raises(EngineBuildError, match="cannot read the TensorRT version 'ten'"):
        parse_trt_version("ten")
    with pytest.raises(ManifestError, match="cannot read the engine's TensorRT version 'x.y'"):
        parse_trt_version("x.y", what="engine's", error=ManifestError)


@pytest.mark.parametrize(
    ("text", "short", "triple"),
    [("10.3.0.30", "10.3.0", (10, 3, 0)), ("11.4.0.106", "11.4.0", (11, 4, 0)),
     ("10.3", "10.3.0", (10, 3, 0)), ("12", "12.0.0", (12, 0, 0))],
)  # fmt: skip
def test_major_minor_patch_drops_the_build_and_pads_missing_parts(text, short, triple):
    assert short_trt_version(text) == short
    assert release3(Version(text)) == triple


@pytest.mark.parametrize(
    ("cc", "ok"), [((7, 5), False), ((8, 0), True), ((8, 7), True), ((9, 0), True)]
)
def test_hardware_compatibility_needs_ampere_or_newer(cc, ok):
    assert supports_hardware_compatibility(cc) is ok

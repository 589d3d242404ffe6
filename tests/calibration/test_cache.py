"""TensorRT text calibration cache: format, round trip, and refusal for another graph."""

from __future__ import annotations

import struct

import pytest

from restorekit.calibration.cache import (
    cache_from_amax,
    read_cache,
    version_int,
    write_cache,
)
from restorekit.errors import ManifestError


def test_version_int_follows_tensorrt_encodings():
    assert version_int("10.3.0") == 100300
    assert version_int("11.4.0.106") == 110400
    assert version_int("8.6.1") == 8601
    assert version_int("8.5.3") == 8503


def test_round_trip_keeps_scales_and_header(tmp_path):
    amax = {"input": 1.0, "/stage/Conv_output_0": 3.75, "x": 0.002}
    cache = cache_from_amax(amax, "10.3.0", "entropy")
    path = tmp_path / "m.calib.cache"
    write_cache(path, cache)
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    # scale amax/127 as big-endian IEEE float32, computed here with struct independently
    assert lines[1] == "input: " + struct.pack(">f", 1.0 / 127).hex()
    assert lines[2].endswith(struct.pack(">f", 3.75 / 127).hex())
    back = read_cache(path)
    assert back.header() == "TRT-100300-EntropyCalibration2"
    for name, a in amax.items():
        want = struct.unpack(">f", struct.pack(">f", a / 127))[0]
        assert back.scales[name] == want
    assert read_cache(path).to_text() == path.read_text()


def test_known_bit_pattern():
    cache = cache_from_amax({"t": 127.0}, "8.6.1", "minmax")  # scale exactly 1.0
    assert cache.to_text() == "TRT-8601-MinMaxCalibration\nt: 3f800000\n"


def test_cache_for_other_tensors_is_rejected(tmp_path):
    cache = cache_from_amax({"input": 1.0, "/a/Conv_output_0": 2.0})
    cache.check_tensors(["input", "/a/Conv_output_0", "output"])
    with pytest.raises(ManifestError, match="written for another graph"):
        cache.check_tensors(["input", "/b/Conv_output_0"])


def test_malformed_caches(tmp_path):
    bad = tmp_path / "bad.cache"
    bad.write_text("hello\n")
    with pytest.raises(ManifestError, match="not a TensorRT calibration cache"):
        read_cache(bad)
    bad.write_text("TRT-100300-EntropyCalibration2\ninput 3f800000\n")
    with pytest.raises(ManifestError, match="expected"):
        read_cache(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_cache(tmp_path / "none.cache")

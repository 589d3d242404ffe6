"""The TensorFlow checkpoint reader and the NLRN converter, against checkpoints TensorFlow wrote.

tests/data/nlrn_tf_fixture/ was made by tools/make_nlrn_tf_fixture.py under TensorFlow 2.21
(tf.compat.v1 graph, tiny NLRN with the official variable layout): ``v0/`` a Saver checkpoint of
the original release's layout (scope ``model/``, correlation propagation, 0-255 residual, with
Adam slots and global_step), ``later/`` a SavedModel of the later release's layout (no scope, no
propagation, 0-1 with clip). Each ``expected.npz`` holds every tensor as TensorFlow read it back
and TensorFlow's output on a fixed input. No TensorFlow is needed here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from restorekit.errors import WeightsError
from restorekit.models.build import model_from_name
from restorekit.models.nlrn_convert import convert_nlrn, nlrn_weights_from_tf
from restorekit.models.tf_checkpoint import TFCheckpoint, crc32c, masked_crc32c

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "nlrn_tf_fixture"
V0 = FIXTURE / "v0"
LATER = FIXTURE / "later" / "saved_model"
TINY = {"num_features": 8, "nl_features": 4, "num_steps": 3}
ROOT = Path(__file__).resolve().parents[2]


def _expected(release: str) -> tuple[dict[str, np.ndarray], np.lib.npyio.NpzFile]:
    data = np.load(FIXTURE / release / "expected.npz")
    names = [str(n) for n in data["names"]]
    return {n: data[f"var{i}"] for i, n in enumerate(names)}, data


def test_crc32c_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 / iSCSI check value
    assert crc32c(b"") == 0


@pytest.mark.parametrize("release,path", [("v0", V0), ("later", LATER)])
def test_reader_returns_exactly_the_tensors_tensorflow_stored(release, path):
    tensors, _ = _expected(release)
    with TFCheckpoint(path) as ckpt:
        assert sorted(ckpt.entries) == sorted(tensors)
        got = ckpt.read_all()
    assert set(got) == set(tensors)
    for name, want in tensors.items():
        assert got[name].dtype == want.dtype, name
        assert got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    if release == "v0":
        assert got["global_step"].dtype == np.int64 and got["global_step"].shape == ()


def test_reader_accepts_every_way_of_naming_a_checkpoint(tmp_path):
    prefix = V0 / "nlrn-data-1234"
    forms = [
        prefix,
        Path(f"{prefix}.index"),
        Path(f"{prefix}.data-00000-of-00001"),
        Path(f"{prefix}.meta"),  # not shipped in the fixture; the name alone designates the bundle
        V0,  # folder with a `checkpoint` state file
    ]
    for form in forms:
        assert TFCheckpoint(form).prefix == str(prefix), form
    # A SavedModel folder and a zip of it (the later release ships sigma*.zip).
    assert TFCheckpoint(LATER.parent / "saved_model").prefix.endswith("variables/variables")
    archive = tmp_path / "sigma25.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in LATER.rglob("*"):
            zf.write(f, Path("sigma25") / f.relative_to(LATER))
    tensors, _ = _expected("later")
    with TFCheckpoint(archive) as ckpt:
        got = ckpt.read_all()
    for name, want in tensors.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def _copy_v0(tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(V0, target)
    return target / "nlrn-data-1234"


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        TFCheckpoint(tmp_path / "missing")
    v1 = tmp_path / "model.ckpt"
    v1.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="V1 checkpoints"):
        TFCheckpoint(v1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no .index file"):
        TFCheckpoint(empty)

    prefix = _copy_v0(tmp_path)
    index = Path(f"{prefix}.index")
    good = index.read_bytes()
    index.write_bytes(good[:-8] + b"\x00" * 8)
    with pytest.raises(WeightsError, match="magic"):
        TFCheckpoint(prefix)
    index.write_bytes(good[:20])
    with pytest.raises(WeightsError, match="shorter than a table footer"):
        TFCheckpoint(prefix)
    damaged = bytearray(good)
    damaged[30] ^= 0xFF  # inside the first data block
    index.write_bytes(bytes(damaged))
    with pytest.raises(WeightsError, match="CRC"):
        TFCheckpoint(prefix)
    index.write_bytes(good)

    data = Path(f"{prefix}.data-00000-of-00001")
    ckpt = TFCheckpoint(prefix)
    entry = ckpt.entries["model/conv1/kernel"]
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="CRC-32C check"):
        ckpt.read("model/conv1/kernel")
    assert ckpt.read("model/conv1/kernel", verify=False).shape == (3, 3, 1, 8)
    data.unlink()
    with pytest.raises(WeightsError, match="shard .* is missing"):
        ckpt.read("model/conv1/bias")
    with pytest.raises(WeightsError, match="no tensor"):
        ckpt.read("model/conv9/kernel")


def test_reader_refuses_compressed_blocks(tmp_path):
    prefix = _copy_v0(tmp_path)
    index = Path(f"{prefix}.index")
    table = bytearray(index.read_bytes())
    # The footer's index handle points at the index block; mark that block snappy-compressed
    # (type 1) and give it a valid checksum, as a table written with compression would have.
    footer = table[-48:]
    pos = 0
    for _ in range(2):  # skip the metaindex handle (two varints)
        while footer[pos] & 0x80:
            pos += 1
        pos += 1
    offset, shift = 0, 0
    while True:
        byte = footer[pos]
        offset |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    size, shift = 0, 0
    while True:
        byte = footer[pos]
        size |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            break
    end = offset + size
    table[end] = 1
    struct.pack_into("<I", table, end + 1, masked_crc32c(bytes(table[offset : end + 1])))
    index.write_bytes(bytes(table))
    with pytest.raises(WeightsError, match="compressed"):
        TFCheckpoint(prefix)


def test_batch_norms_map_by_creation_order():
    with TFCheckpoint(V0) as ckpt:
        weights = nlrn_weights_from_tf(ckpt)
    src = weights.sources
    # TF numbers unnamed layers per scope in creation order; state t creates 3t, 3t+1, 3t+2.
    assert src["bn_in.weight"] == "model/batch_normalization/gamma"
    assert src["bn_end.running_var"] == "model/batch_normalization_1/moving_variance"
    assert src["rnn.steps.0.norm_in.bias"] == "model/rnn/batch_normalization/beta"
    assert src["rnn.steps.1.norm_a.weight"] == "model/rnn/batch_normalization_4/gamma"
    assert src["rnn.steps.2.norm_b.running_mean"] == "model/rnn/batch_normalization_8/moving_mean"
    assert src["rnn.RB1_a.weight"] == "model/rnn/RB1_a/kernel"
    assert weights.config == {"channels": 1, "num_features": 8, "nl_features": 4, "num_steps": 3}
    assert weights.scope == "model/"
    assert all("Adam" in s or s in ("global_step", "solver/beta1_power", "solver/beta2_power")
               or not s.startswith("model/") for s in weights.skipped)  # fmt: skip
    tensors, _ = _expected("v0")
    np.testing.assert_array_equal(
        weights.state_dict["rnn.RB1_a.weight"],
        tensors["model/rnn/RB1_a/kernel"].transpose(3, 2, 0, 1),
    )


def _torch_output(weights_file: Path, name: str, x_nhwc: np.ndarray) -> np.ndarray:
    built = model_from_name(name, weights_file, overrides=TINY)
    with torch.no_grad():
        out = built.module(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1).numpy()


def test_converted_v0_model_reproduces_tensorflow(tmp_path):
    out = tmp_path / "v0.safetensors"
    result = convert_nlrn(V0, out, "nlrn")
    assert result.fits == ()  # tiny: no registered variant has 8 features
    _, data = _expected("v0")
    x, residual = data["input"], data["output"]
    got = _torch_output(out, "nlrn.dn_s25", x)
    # The v0 graph outputs the residual (test.py adds the input); ours returns the image.
    err = np.abs((got - x) - residual)
    assert err.max() <= 1e-5 * 255, f"max {err.max():.3g}, mean {err.mean():.3g}"
    # Correlation propagation matters: the same weights without it are far off.
    without = _torch_output(out, "nlrn.dn15_s25", x)  # no propagation (and clip to [0, 1])
    assert np.abs(without - x - residual).max() > 0.01


def test_converted_later_model_reproduces_tensorflow(tmp_path):
    out = tmp_path / "later.safetensors"
    convert_nlrn(LATER, out)
    _, data = _expected("later")
    x, expected = data["input"], data["output"]
    got = _torch_output(out, "nlrn.dn15_s25", x)
    err = np.abs(got - expected)
    assert err.max() <= 1e-5, f"max {err.max():.3g}, mean {err.mean():.3g}"
    interior = (expected > 0) & (expected < 1)
    assert interior.mean() > 0.25  # the check is not only on clipped values


def test_converter_checks_the_named_variant(tmp_path):
    with pytest.raises(WeightsError, match="nlrn.dn_s25 expects"):
        convert_nlrn(V0, tmp_path / "x.safetensors", "nlrn.dn_s25")
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(WeightsError, match="not an NLRN model"):
        convert_nlrn(V0, tmp_path / "x.safetensors", "mprnet")


class _FakeCheckpoint:
    """Just the ``entries``/``read`` surface the converter uses, for layouts TF would not write."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.entries = dict.fromkeys(tensors)

    def read(self, name: str) -> np.ndarray:
        return self.tensors[name]


def test_converter_rejects_non_nlrn_layouts():
    with TFCheckpoint(V0) as ckpt:
        real = {n: ckpt.read(n) for n in ckpt.entries}
    no_conv1 = {k: v for k, v in real.items() if "conv1/" not in k}
    with pytest.raises(WeightsError, match="not an NLRN model"):
        nlrn_weights_from_tf(_FakeCheckpoint(no_conv1))
    gap = {k: v for k, v in real.items() if "rnn/batch_normalization_4/" not in k}
    with pytest.raises(WeightsError, match="creation order"):
        nlrn_weights_from_tf(_FakeCheckpoint(gap))
    last = {k: v for k, v in real.items() if "rnn/batch_normalization_8/" not in k}
    with pytest.raises(WeightsError, match="8 inside .expected 3 per recurrent state"):
        nlrn_weights_from_tf(_FakeCheckpoint(last))
    extra = dict(real)
    extra["model/extra_conv/kernel"] = np.zeros((3, 3, 8, 8), np.float32)
    extra["model/extra_conv/bias"] = np.zeros(8, np.float32)
    with pytest.raises(WeightsError, match="does not know: model/extra_conv"):
        nlrn_weights_from_tf(_FakeCheckpoint(extra))
    wrong = dict(real)
    wrong["model/rnn/RB1_b/kernel"] = np.zeros((3, 3, 8, 7), np.float32)
    with pytest.raises(WeightsError, match="do not fit together"):
        nlrn_weights_from_tf(_FakeCheckpoint(wrong))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "restorekit.cli.convert", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_cli_converts_and_reports_user_errors_in_one_line(tmp_path):
    ok = _cli("nlrn", str(V0), "-o", str(tmp_path / "w.safetensors"))
    assert ok.returncode == 0, ok.stderr
    assert "3 recurrent states" in ok.stdout and (tmp_path / "w.safetensors").is_file()
    bad = _cli("nlrn", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.safetensors"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: TensorFlow checkpoint not found")
    other = _cli("mprnet", str(V0), "-o", str(tmp_path / "x.safetensors"))
    assert other.returncode == 2 and "restore-export mprnet --weights" in other.stderr


def test_conversion_needs_neither_torch_nor_tensorflow(tmp_path):
    out = tmp_path / "w.safetensors"
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['tensorflow'] = None\n"
        "from restorekit.cli.convert import main\n"
        f"sys.exit(main(['nlrn', {str(LATER)!r}, '-o', {str(out)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_scope_hints_at_the_release():
    from restorekit.models.nlrn_convert import _release_hint

    assert "original release" in _release_hint("model/", corr_propagation=False)
    assert "later release" in _release_hint("", corr_propagation=True)
    assert _release_hint("model/", corr_propagation=True) == ""
    assert _release_hint("", corr_propagation=False) == ""

"""Facts about the GPU: Jetson detection and nvidia-smi parsing."""

from __future__ import annotations

from restorekit.tensorrt.device import is_jetson, parse_nvidia_smi

# --- device facts -------------------------------------------------------------------------------


def test_jetson_detection_from_l4t_files(tmp_path):
    assert not is_jetson(tmp_path)
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert is_jetson(tmp_path)
    other = tmp_path / "l4t"
    (other / "etc").mkdir(parents=True)
    (other / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0")
    assert is_jetson(other)


def test_nvidia_smi_output_is_parsed():
    assert parse_nvidia_smi("NVIDIA GeForce RTX 4090, 8.9, 24564\n") == (
        "NVIDIA GeForce RTX 4090", "8.9", 24564 * 2**20,
    )  # fmt: skip
    assert parse_nvidia_smi("Orin, 8.7, [N/A]") == ("Orin", "8.7", None)
    assert parse_nvidia_smi("") is None

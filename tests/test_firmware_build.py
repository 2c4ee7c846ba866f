"""The gripper firmware builds warning-free (-Werror) and its C unit tests pass."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


def make(*targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(FIRMWARE), *targets], capture_output=True, text=True, timeout=240)


@pytest.mark.system("cc")
def test_c_unit_tests_pass():
    res = make("test")
    assert res.returncode == 0, res.stdout + res.stderr
    summary = re.search(r"^(\d+) passed, (\d+) failed$", res.stdout, re.MULTILINE)
    assert summary is not None, res.stdout
    assert int(summary.group(1)) >= 15 and summary.group(2) == "0"
    assert "ok   golden_vectors" in res.stdout


@pytest.mark.system("cc")
def test_host_firmware_builds():
    res = make("host")
    assert res.returncode == 0, res.stdout + res.stderr
    binary = FIRMWARE / "build" / "host" / "gripper-host"
    assert binary.is_file()
    usage = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=10)
    assert "--drift-ppm" in usage.stderr


@pytest.mark.system("arm-gcc")
def test_arm_image_builds_and_fits():
    res = make("arm")
    assert res.returncode == 0, res.stdout + res.stderr
    sizes = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+\w+\s+\S*gripper\.elf$", res.stdout, re.MULTILINE)
    assert sizes is not None, res.stdout
    text, data, bss = (int(x) for x in sizes.groups())
    assert 1000 < text + data < 1024 * 1024  # fits the STM32F405's flash
    assert data + bss < 128 * 1024           # and its SRAM
    image = FIRMWARE / "build" / "stm32f4" / "gripper.bin"
    vector0 = int.from_bytes(image.read_bytes()[:4], "little")
    assert vector0 == 0x20000000 + 128 * 1024  # initial stack pointer = top of SRAM

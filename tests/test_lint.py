import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by the [test] extra")
def test_ruff_is_clean():
    out = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_drivers_import_nothing_from_upper_rooms():
    """Rooms with walls: drivers < calibration < recorder < rig."""
    upper = {"drivers": ("rig", "calibration", "recorder"), "calibration": ("rig", "recorder"),
             "recorder": ("rig",)}
    offenders = []
    for room, banned in upper.items():
        for path in (ROOT / room).rglob("*.py"):
            for line in path.read_text().splitlines():
                s = line.strip()
                if any(s.startswith((f"from {b}.", f"from {b} ", f"import {b}.", f"import {b} ")) or s in (
                        f"import {b}",) for b in banned):
                    offenders.append(f"{path.relative_to(ROOT)}: {s}")
    assert offenders == [], "\n".join(offenders)


def test_package_imports_without_heavy_optional_libraries():
    code = ("import sys; import rig.cli, drivers.dynamixel.bus; "
            "bad=[m for m in ('torch','mujoco','pyrealsense2') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

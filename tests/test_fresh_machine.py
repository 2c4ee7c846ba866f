"""A fresh Debian machine lacks the apt packages .ci/run installs. There the README's test command
must still collect the whole suite and run it, every test that needs a package skipping with one
line naming it.

The machine is made here, for real: an unloadable ``libusb-1.0.so.0``, ``libEGL.so.1`` ... come
first on ``LD_LIBRARY_PATH`` (the dynamic loader finds them before the system's and fails, as it
fails where the package is missing), and ``PATH`` holds every program but the hidden ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each library under the names a loader asks for (PyOpenGL tries the unversioned name first).
HIDDEN_LIBS = ("libusb-1.0.so.0", "libusb-1.0.so", "libEGL.so.1", "libEGL.so", "libGL.so.1", "libGL.so",
               "libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")
HIDDEN_PROGRAMS = re.compile(r"^(tmux|make|cc|c89|c99|gcc|gcc-\d+|x86_64-linux-gnu-gcc.*|arm-none-eabi-.*|qemu-system-.*)$")
# What the skips must name (each a Debian package .ci/run installs).
PACKAGES = ("libusb-1.0-0", "libegl1 libgl1-mesa-dri", "make gcc", "gcc-arm-none-eabi", "qemu-system-arm", "tmux")


def fresh_machine(tmp_path: Path) -> dict[str, str]:
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in HIDDEN_LIBS:
        (lib / name).write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not Path(d).is_dir():
            continue
        for entry in Path(d).iterdir():
            link = bin_dir / entry.name
            if HIDDEN_PROGRAMS.match(entry.name) or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "PYTEST_ADDOPTS", "RIG_SYSTEM_PACKAGES")}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))
    env["PATH"] = str(bin_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["MUJOCO_GL"] = "egl"  # as headless setups often say: `import mujoco` then needs libEGL
    return env


def test_without_the_system_packages_the_suite_collects_and_those_tests_skip_naming_them(tmp_path):
    env = fresh_machine(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import pyrealsense2"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "ImportError" in probe.stderr  # the machine is made: libusb will not load
    # Every test that needs a package (marked system) runs; the rest of the suite is collected.
    # An import that fails other than "no such module" is an error from pytest 9.1 on: made one here.
    out = subprocess.run([sys.executable, "-m", "pytest", "-m", "system", "-q", "-rs", "-p", "no:cacheprovider",
                          "-W", "error::pytest.PytestDeprecationWarning", "-n", "0", "tests"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text  # a collection error would stop pytest (exit status 2)
    summary = next((ln for ln in reversed(text.splitlines()) if re.search(r"\d+ (skipped|passed|failed)", ln)), "")
    assert re.search(r"^\d+ skipped, \d+ deselected", summary), text[-2000:]  # none ran, none failed
    skips = [line for line in text.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("apt-get install " in line for line in skips), "\n".join(skips)
    named = " ".join(skips)
    assert [p for p in PACKAGES if p not in named] == [], "\n".join(skips)

"""System packages (Debian's names) that some tests need, and how to tell they are missing.

.ci/run installs them all (and sets RIG_SYSTEM_PACKAGES=required, so that a missing one fails
there). A test that needs one carries ``@pytest.mark.system("<name>")`` (or
calls :func:`require`); where the package is missing it skips with one line naming the apt
package, so `python -m pytest` on a fresh machine runs everything else.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

# A tiny scene rendered offscreen the way rig/sim/render.py does (MUJOCO_GL, default EGL).
_RENDER_PROBE = (
    "import mujoco\n"
    "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\".1\"/></worldbody></mujoco>')\n"
    "r = mujoco.Renderer(m, 8, 8)\n"
    "r.update_scene(mujoco.MjData(m))\n"
    "assert r.render().shape == (8, 8, 3)\n"
)


def _realsense() -> str | None:
    try:
        import pyrealsense2  # noqa: F401
    except ModuleNotFoundError:
        return "pyrealsense2 is not installed: pip install -e ."
    except (ImportError, OSError) as exc:  # the wheel loads libusb-1.0.so.0 from the system
        return f"pyrealsense2 cannot load ({exc}): apt-get install libusb-1.0-0"
    return None


def _render() -> str | None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("RIG_RENDER_GL", os.environ.get("MUJOCO_GL", "egl"))}
    try:
        out = subprocess.run([sys.executable, "-c", _RENDER_PROBE], capture_output=True, text=True, env=env,
                             timeout=60)
    except subprocess.TimeoutExpired:
        return "MuJoCo's offscreen rendering did not answer in 60 s"
    if out.returncode == 0:
        return None
    if "No module named 'mujoco'" in out.stderr:
        return "MuJoCo is not installed: pip install -e '.[sim]'"
    return (f"MuJoCo cannot render offscreen with MUJOCO_GL={env['MUJOCO_GL']}: "
            "apt-get install libegl1 libgl1-mesa-dri")


def _programs(apt: str, *names: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        missing = [n for n in names if shutil.which(n) is None]
        return f"{' and '.join(missing)} not on PATH: apt-get install {apt}" if missing else None
    return probe


PROBES: dict[str, Callable[[], str | None]] = {
    "libusb": _realsense,
    "render": _render,
    "tmux": _programs("tmux", "tmux"),
    "cc": _programs("make gcc", "make", os.environ.get("CC", "cc")),  # the gripper's host stand-in
    "arm-gcc": _programs("gcc-arm-none-eabi libnewlib-arm-none-eabi", "arm-none-eabi-gcc"),
    "qemu": _programs("qemu-system-arm", "qemu-system-arm"),
}


@functools.cache
def missing(name: str) -> str | None:
    """Why ``name`` cannot be used here (one line naming the apt package), or None."""
    return PROBES[name]()


def require(*names: str, module_level: bool = False) -> None:
    """Skip where a package is missing; fail instead under RIG_SYSTEM_PACKAGES=required (.ci/run,
    which has installed them all: there a missing one is a broken CI, not a bare machine)."""
    for name in names:
        if (why := missing(name)) is not None:
            if os.environ.get("RIG_SYSTEM_PACKAGES") == "required":
                pytest.fail(f"{why} (RIG_SYSTEM_PACKAGES=required)", pytrace=False)
            pytest.skip(why, allow_module_level=module_level)


def realsense():
    """pyrealsense2, or None where it cannot load (tests using it are marked system("libusb"))."""
    if missing("libusb") is not None:
        return None
    import pyrealsense2

    return pyrealsense2

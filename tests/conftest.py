"""Shared fixtures: emulated servo buses on ptys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `import mujoco` loads the OpenGL library MUJOCO_GL names, and fails (not with ImportError) where
# it is missing; physics needs none. As rig does itself (rig/sim/world.py), the choice goes to the
# render process, so a machine without libEGL imports mujoco and only rendering tests skip.
if "MUJOCO_GL" in os.environ:
    os.environ.setdefault("RIG_RENDER_GL", os.environ.pop("MUJOCO_GL"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.dynamixel.emulator import EmulatedBus, ServoSpec  # noqa: E402
from tests import system  # noqa: E402


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one worker per two cores, at most four. The suite's loops,
    buses and stand-ins are written against two cores of their own: two workers on a 2-core
    machine ran it in 9.9 min instead of 21, but starved a 50 Hz loop, a camera or the gripper's
    pty now and then (a failure that is the machine's, not the code's). `-n 0`: one process."""
    return max(1, min(4, len(os.sched_getaffinity(0)) // 2))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """@pytest.mark.system("tmux", ...): skip, naming the apt package, where one is missing."""
    for mark in item.iter_markers("system"):
        system.require(*mark.args)


@pytest.fixture
def emulated():
    """Factory: emulated(specs, baud=...) -> started EmulatedBus, stopped at teardown."""
    buses: list[EmulatedBus] = []

    def make(specs, baud: int = 1_000_000, **kw) -> EmulatedBus:
        specs = [s if isinstance(s, ServoSpec) else ServoSpec(**s) for s in specs]
        bus = EmulatedBus(specs, baud, **kw)
        bus.start()
        buses.append(bus)
        return bus

    yield make
    for b in buses:
        b.stop()


def soak_seconds(default: float) -> float:
    return float(os.environ.get("RIG_SOAK_SECONDS", default))


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    """A small dataset recorded for real on the simulated rig: 4 takes of 6 s of transfer-cube.

    Recorded once per test session with `rig record` (about 40 s); treat it as read-only: copy
    it (shutil.copytree) before changing labels or statuses.
    """
    import subprocess

    system.require("render")  # takes without camera frames would fail every test using them
    path = tmp_path_factory.mktemp("sim-dataset") / "transfer_cube.zarr"
    out = subprocess.run([sys.executable, "-m", "rig", "record", "--episodes", "4", "--seconds", "6",
                          "--reset-seconds", "1", "--dataset", str(path)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Training tests run torch on one thread: on a busy 2-core machine two spinning OpenMP threads
    slow training down. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""Shared fixtures: emulated servo buses on ptys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from drivers.dynamixel.emulator import EmulatedBus, ServoSpec  # noqa: E402


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

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

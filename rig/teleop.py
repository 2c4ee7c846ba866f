"""Teleop is the control loop with the leaders as its command source: see rig/loop.py.

Kept so that ``from rig.teleop import TeleopFault`` goes on working."""

from rig.loop import BusWorker, ControlLoop, LoopStats, Teleop, TeleopFault, sleep_until

__all__ = ["BusWorker", "ControlLoop", "LoopStats", "Teleop", "TeleopFault", "sleep_until"]

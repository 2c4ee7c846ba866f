"""Per-arm joint calibration: how servo ticks become joint angles, and back.

A joint's angle is ``sign * (ticks - zero) * 2π / 4096``: ``zero`` is the tick reading at the
joint's zero pose, ``sign`` is +1 or -1 so that the same motion reads the same way on leader and
follower. A gripper is normalized instead: 0 closed, 1 open, from its closed and open ticks.

A *full-turn* joint (it spins all the way round, e.g. a continuous wrist) reads within one turn
in position mode, so its angle is wrapped into [-π, π). A *multi-turn* joint (extended position
mode) reads beyond one turn and its angle is never wrapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from drivers.errors import RigError

TICKS_PER_RAD = 4096 / (2 * math.pi)


class CalibrationError(RigError):
    pass


@dataclass(frozen=True)
class JointCalibration:
    zero: float = 2048.0
    sign: int = 1
    min_ticks: float | None = None  # measured range; None: not measured
    max_ticks: float | None = None
    full_turn: bool = False  # spins through a whole turn: angle wrapped into [-pi, pi)
    multi_turn: bool = False  # extended position mode: readings beyond one turn, never wrapped


@dataclass(frozen=True)
class GripperCalibration:
    open: float
    closed: float

    def __post_init__(self):
        if self.open == self.closed:
            raise CalibrationError("gripper calibration has open == closed; re-run `rig calibrate arm` "
                                   "and move the gripper fully open, then fully closed")


@dataclass(frozen=True)
class ArmCalibration:
    """Calibration of one arm's joints, in the arm's joint order; the gripper (if any) last."""

    joints: tuple[JointCalibration, ...]
    gripper: GripperCalibration | None = None
    source: str = "config"
    # Where a stored calibration came from: its file, adapter identity and servos (see
    # calibration.store); None for inline and identity calibrations.
    origin: object | None = field(default=None, compare=False)
    _zero: np.ndarray = field(init=False, repr=False, compare=False)
    _sign: np.ndarray = field(init=False, repr=False, compare=False)
    _wrap: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_zero", np.array([j.zero for j in self.joints], dtype=np.float64))
        sign = np.array([j.sign for j in self.joints], dtype=np.float64)
        sign.flags.writeable = False
        object.__setattr__(self, "_sign", sign)
        wrap = np.array([j.full_turn and not j.multi_turn for j in self.joints], dtype=bool)
        object.__setattr__(self, "_wrap", wrap if wrap.any() else None)
        for i, j in enumerate(self.joints):
            if j.sign not in (1, -1):
                raise CalibrationError(f"joint {i}: sign must be 1 or -1, not {j.sign}")

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    @property
    def signs(self) -> np.ndarray:
        """Each joint's sign (+1/-1) as an array, in joint order: turns servo velocities into joint
        velocities. Read-only: the calibration is frozen."""
        return self._sign

    def to_radians(self, ticks: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Arm-joint ticks (without the gripper) -> radians."""
        out = np.subtract(ticks, self._zero, out=out)
        out *= self._sign
        out /= TICKS_PER_RAD
        if self._wrap is not None:  # full-turn joints: the short way round
            w = self._wrap
            out[w] = np.mod(out[w] + math.pi, 2 * math.pi) - math.pi
        return out

    def to_ticks(self, radians: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.multiply(radians, TICKS_PER_RAD, out=out)
        out *= self._sign
        out += self._zero
        if self._wrap is not None:  # position mode takes goals within one turn only
            w = self._wrap
            out[w] = np.mod(out[w], 4096)
        return out

    def gripper_to_normalized(self, ticks: float) -> float:
        g = self.gripper
        return (ticks - g.closed) / (g.open - g.closed)

    def gripper_to_ticks(self, normalized: float) -> float:
        g = self.gripper
        return g.closed + normalized * (g.open - g.closed)

    @classmethod
    def identity(cls, n_joints: int, gripper: GripperCalibration | None = None) -> ArmCalibration:
        return cls(tuple(JointCalibration() for _ in range(n_joints)), gripper, source="identity")

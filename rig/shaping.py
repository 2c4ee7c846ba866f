"""How a command source's target becomes what the followers are sent: the joint limits, then the
largest step per tick. The control loop's tick (rig/loop.py) and the fast simulator
(rig/train/fastsim.py) both call :func:`shape_target`, so a policy scored in the fast simulator
meets the same clamps as on the arms.

Pure functions of numpy arrays and the rig's config; :func:`shape_target` works in place and
allocates nothing (it runs inside the tick).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rig.config import ArmConfig, SafetyConfig


def joint_limits(arm: ArmConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of one follower's values: its joints' configured limits (none: unbounded),
    the gripper 0 (closed) .. 1 (open)."""
    lo = [j.lower if j.lower is not None else -np.inf for j in arm.joints]
    hi = [j.upper if j.upper is not None else np.inf for j in arm.joints]
    if arm.gripper is not None:
        lo.append(0.0)
        hi.append(1.0)
    return np.array(lo), np.array(hi)


def step_limits(arm: ArmConfig, safety: SafetyConfig) -> np.ndarray:
    """The largest change of each of one follower's targets in one tick."""
    step = [safety.max_step_rad] * len(arm.joints)
    if arm.gripper is not None:
        step.append(safety.max_gripper_step)
    return np.array(step)


@dataclass(frozen=True)
class TargetLimits:
    """The rig-wide vectors, followers in order."""

    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray

    @classmethod
    def of(cls, followers: Sequence[ArmConfig], safety: SafetyConfig) -> TargetLimits:
        if not followers:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0))
        lims = [joint_limits(a) for a in followers]
        return cls(np.concatenate([lo for lo, _ in lims]), np.concatenate([hi for _, hi in lims]),
                   np.concatenate([step_limits(a, safety) for a in followers]))


def shape_target(want: np.ndarray, target: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 max_step: np.ndarray) -> None:
    """Move ``target`` towards ``want``: ``want`` is clipped to [lower, upper], then the move to it
    to at most ``max_step`` per value. In place: afterwards ``want`` holds the step taken (the tick
    takes it back from an arm it must hold) and ``target`` the new target."""
    np.clip(want, lower, upper, out=want)
    want -= target
    np.clip(want, -max_step, max_step, out=want)
    target += want


__all__ = ["TargetLimits", "joint_limits", "shape_target", "step_limits"]

"""Leader-follower alignment check: pose both arms alike, compare what their calibrations say.

Each follower's joints are compared with its leader's, in degrees (the gripper in percent of its
opening). A joint further apart than the threshold is flagged: its zero or direction is off on
one side. On hardware the followers have torque off and the operator poses both arms by hand; on
the simulated rig both arms are driven to known poses (see `rig calibrate check`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD_DEG = 5.0
DEFAULT_GRIPPER_THRESHOLD = 0.10  # normalized opening (10 %)


@dataclass(frozen=True)
class JointCheck:
    follower: str
    leader: str
    joint: str
    leader_value: float  # degrees (gripper: percent open)
    follower_value: float
    diff: float  # follower - leader, same unit
    unit: str
    flagged: bool


@dataclass(frozen=True)
class CheckReport:
    rows: tuple[JointCheck, ...]
    threshold_deg: float
    gripper_threshold: float
    pose: str = ""

    @property
    def flagged(self) -> list[JointCheck]:
        return [r for r in self.rows if r.flagged]

    @property
    def ok(self) -> bool:
        return not self.flagged

    def worst_deg(self) -> float:
        return max((abs(r.diff) for r in self.rows if r.unit == "deg"), default=0.0)

    def format(self) -> str:
        head = f"{'follower':<16}{'joint':<14}{'leader':>9}{'follower':>10}{'diff':>9}"
        lines = [f"pose: {self.pose}" if self.pose else "", head]
        for r in self.rows:
            mark = "  <-- over " + (f"{self.threshold_deg:g} deg" if r.unit == "deg" else
                                   f"{self.gripper_threshold * 100:g} %") if r.flagged else ""
            u = "°" if r.unit == "deg" else "%"
            lines.append(f"{r.follower:<16}{r.joint:<14}{r.leader_value:>8.1f}{u}"
                         f"{r.follower_value:>9.1f}{u}{r.diff:>+8.1f}{u}{mark}")
        verdict = "OK: every joint agrees" if self.ok else \
            f"{len(self.flagged)} joint(s) disagree: re-calibrate the arm whose reading is wrong " \
            "(`rig calibrate arm NAME`)"
        lines.append(verdict)
        return "\n".join(x for x in lines if x)


def wrap_deg(d: float) -> float:
    return (d + 180.0) % 360.0 - 180.0


def compare_pair(follower: str, leader: str, joint_names: Sequence[str], leader_q: np.ndarray,
                 follower_q: np.ndarray, n_joints: int, threshold_deg: float = DEFAULT_THRESHOLD_DEG,
                 gripper_threshold: float = DEFAULT_GRIPPER_THRESHOLD) -> list[JointCheck]:
    """Rows for one pair; ``*_q`` in rig units (radians, then the gripper normalized)."""
    rows = []
    for i, name in enumerate(joint_names[:n_joints]):
        a, b = math.degrees(leader_q[i]), math.degrees(follower_q[i])
        d = wrap_deg(b - a)
        rows.append(JointCheck(follower, leader, name, a, b, d, "deg", abs(d) > threshold_deg))
    if len(leader_q) > n_joints and len(follower_q) > n_joints:
        a, b = float(leader_q[n_joints]) * 100, float(follower_q[n_joints]) * 100
        rows.append(JointCheck(follower, leader, "gripper", a, b, b - a, "%", abs(b - a) > gripper_threshold * 100))
    return rows


def check_arms(followers: Sequence, leaders: dict, threshold_deg: float = DEFAULT_THRESHOLD_DEG,
               gripper_threshold: float = DEFAULT_GRIPPER_THRESHOLD, pose: str = "", reads: int = 3) -> CheckReport:
    """Read every pair (``rig.arms`` objects, opened) and compare; median of ``reads`` readings."""
    rows = []
    for f in followers:
        lead = leaders[f.cfg.leader]
        fq = _median_q(f, reads)
        lq = _median_q(lead, reads)
        names = [j.name for j in f.cfg.joints]
        rows += compare_pair(f.name, lead.name, names, lq, fq, len(names), threshold_deg, gripper_threshold)
    return CheckReport(tuple(rows), threshold_deg, gripper_threshold, pose)


def _median_q(arm, reads: int) -> np.ndarray:
    qs = []
    for _ in range(reads):
        arm.read()
        qs.append(arm.q.copy())
    return np.median(np.array(qs), axis=0)

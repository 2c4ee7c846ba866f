"""What the simulated ALOHA looks like on its Dynamixel buses.

Each arm is one bus of 9 servos. Shoulder and elbow are driven by a pair (the shadow runs with
Drive Mode reverse and answers the same joint angle as its primary). The sim uses an identity
calibration for the arm joints: ``ticks = 2048 + angle_rad * 4096 / 2pi``. Grippers differ between
leader (a handle) and follower (a motor driving the fingers), so each has its own open/closed ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TICKS_PER_TURN = 4096
CENTER_TICK = 2048
TICKS_PER_RAD = TICKS_PER_TURN / (2 * math.pi)
VELOCITY_UNIT_RAD_S = 0.229 * 2 * math.pi / 60  # one Present Velocity unit (0.229 rpm)
CURRENT_UNIT_A = 0.00269  # one Present Current unit on xm430/xm540 (2.69 mA)


@dataclass(frozen=True, slots=True)
class ServoSlot:
    """One servo on an arm bus."""

    id: int
    name: str
    joint: int  # index into the arm's 7 joint values (6 arm joints + gripper)
    shadow_of: int | None = None  # primary ID when this servo is a shadow


ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")

SERVOS: tuple[ServoSlot, ...] = (
    ServoSlot(1, "waist", 0),
    ServoSlot(2, "shoulder", 1),
    ServoSlot(3, "shoulder_shadow", 1, shadow_of=2),
    ServoSlot(4, "elbow", 2),
    ServoSlot(5, "elbow_shadow", 2, shadow_of=4),
    ServoSlot(6, "forearm_roll", 3),
    ServoSlot(7, "wrist_angle", 4),
    ServoSlot(8, "wrist_rotate", 5),
    ServoSlot(9, "gripper", 6),
)

# ViperX 300-class follower and WidowX-class leader, per servo ID.
FOLLOWER_MODELS = {1: "xm540-w270", 2: "xm540-w270", 3: "xm540-w270", 4: "xm540-w270",
                   5: "xm540-w270", 6: "xm540-w270", 7: "xm540-w270", 8: "xm430-w350", 9: "xm430-w350"}
LEADER_MODELS = {1: "xm430-w350", 2: "xm430-w350", 3: "xm430-w350", 4: "xm430-w350",
                 5: "xm430-w350", 6: "xm430-w350", 7: "xm430-w350", 8: "xl430-w250", 9: "xc430-w150"}

# Torque constant (N*m per A) near the operating point, to turn actuator torque into Present Current.
TORQUE_PER_AMP = {"xm540-w270": 2.4, "xm430-w350": 1.8, "xl430-w250": 1.4, "xc430-w150": 1.0}

ARM_NAMES = ("left_leader", "right_leader", "left_follower", "right_follower")


def ticks_from_angle(angle_rad: float) -> int:
    """Identity calibration: the joint angle the sim reports as a servo position."""
    return int(round(CENTER_TICK + angle_rad * TICKS_PER_RAD))


def angle_from_ticks(ticks: float) -> float:
    return (ticks - CENTER_TICK) / TICKS_PER_RAD


# Gripper servo angles (identity calibration), the same ranges an ALOHA rig measures.
# Follower: the motor angle that opens/closes the fingers fully.
FOLLOWER_GRIPPER_OPEN_RAD = 1.4910
FOLLOWER_GRIPPER_CLOSED_RAD = -0.6213
# Leader: the handle's angle, squeezed (closed) or released (open).
LEADER_GRIPPER_OPEN_RAD = 0.3083
LEADER_GRIPPER_CLOSED_RAD = -0.6842

FOLLOWER_GRIPPER_OPEN_TICKS = ticks_from_angle(FOLLOWER_GRIPPER_OPEN_RAD)  # 3020
FOLLOWER_GRIPPER_CLOSED_TICKS = ticks_from_angle(FOLLOWER_GRIPPER_CLOSED_RAD)  # 1643
LEADER_GRIPPER_OPEN_TICKS = ticks_from_angle(LEADER_GRIPPER_OPEN_RAD)  # 2249
LEADER_GRIPPER_CLOSED_TICKS = ticks_from_angle(LEADER_GRIPPER_CLOSED_RAD)  # 1602

# The MuJoCo finger slide joint (left finger; the right finger mirrors it) in metres.
FINGER_CLOSED_M = 0.021
FINGER_OPEN_M = 0.057


def _lerp(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


def finger_from_follower_gripper(angle_rad: float) -> float:
    """Follower gripper motor angle -> finger slide position (clamped to the finger's travel)."""
    f = _lerp(angle_rad, FOLLOWER_GRIPPER_CLOSED_RAD, FOLLOWER_GRIPPER_OPEN_RAD, FINGER_CLOSED_M, FINGER_OPEN_M)
    return min(max(f, FINGER_CLOSED_M), FINGER_OPEN_M)


def follower_gripper_from_finger(finger_m: float) -> float:
    return _lerp(finger_m, FINGER_CLOSED_M, FINGER_OPEN_M, FOLLOWER_GRIPPER_CLOSED_RAD, FOLLOWER_GRIPPER_OPEN_RAD)


def leader_gripper_from_opening(opening: float) -> float:
    """Normalized opening (0 closed .. 1 open) -> leader handle angle."""
    return _lerp(opening, 0.0, 1.0, LEADER_GRIPPER_CLOSED_RAD, LEADER_GRIPPER_OPEN_RAD)


def follower_gripper_from_opening(opening: float) -> float:
    return _lerp(opening, 0.0, 1.0, FOLLOWER_GRIPPER_CLOSED_RAD, FOLLOWER_GRIPPER_OPEN_RAD)


def opening_from_leader_gripper(angle_rad: float) -> float:
    return _lerp(angle_rad, LEADER_GRIPPER_CLOSED_RAD, LEADER_GRIPPER_OPEN_RAD, 0.0, 1.0)


def follower_gripper_ticks_from_leader_ticks(leader_ticks: float) -> int:
    """What a teleop loop does for the gripper: normalize by the leader's range, map into the follower's."""
    opening = (leader_ticks - LEADER_GRIPPER_CLOSED_TICKS) / (LEADER_GRIPPER_OPEN_TICKS - LEADER_GRIPPER_CLOSED_TICKS)
    return int(round(FOLLOWER_GRIPPER_CLOSED_TICKS + opening * (FOLLOWER_GRIPPER_OPEN_TICKS - FOLLOWER_GRIPPER_CLOSED_TICKS)))

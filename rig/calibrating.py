"""The rig's side of calibration, shared by `rig calibrate` and the app's calibration screen:
the arms' ports (starting the simulated world where the config is simulated) and the
leader-follower alignment check run automatically on the simulated rig.

The procedures, checks and files themselves live in ``calibration/``; this module only opens
the rig's arms and world around them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.check import DEFAULT_GRIPPER_THRESHOLD, DEFAULT_THRESHOLD_DEG, CheckReport, check_arms
from rig.config import RigConfig


def arm_ports(config: RigConfig, names: Sequence[str]) -> tuple[dict[str, str], Any]:
    """Ports for arms; sim configs start their world (operator off: the arms hold still)."""
    from rig.session import resolve_ports

    world = None
    if any(config.arm(n).is_sim for n in names):
        from rig.sim.launch import start_world

        world = start_world(task=config.sim.task, seed=config.sim.seed, cameras=(), operator=False,
                            wire_timing=config.sim.wire_timing)
    try:
        return resolve_ports(config, world.ports if world else None), world
    except BaseException:
        if world is not None:
            world.close()
        raise


def sim_poses() -> dict[str, list[float]]:
    """Known poses for the simulated check: 6 joint angles (rad) + gripper opening (0..1)."""
    from rig.sim.scene import START_ARM_POSE

    return {
        "start": [*START_ARM_POSE, 0.5],
        "reach": [0.35, -0.4, 0.55, 0.25, 0.5, -0.4, 0.9],
        "twist": [-0.4, -0.7, 0.9, -0.35, -0.2, 0.6, 0.15],
    }


def _hold_sim_pose(world: Any, arm: Any, q: Sequence[float]) -> None:
    """Drive one simulated arm to ``q`` in the world's own joint convention (independent of the
    config's calibration, so a wrong calibration shows up as disagreement)."""
    from rig.sim import hardware as hw

    if arm.cfg.role == "leader" and hasattr(world, "set_leader_pose"):
        world.set_leader_pose(arm.name, list(q))
        return
    # Leaders with the operator off are plain servos; followers are moved by the physics. Both go
    # to a goal written straight in the world's ticks.
    grip = (hw.leader_gripper_from_opening if arm.cfg.role == "leader" else hw.follower_gripper_from_opening)(q[6])
    goals = {}
    for slot in hw.SERVOS:
        if slot.shadow_of is None:
            goals[slot.id] = hw.ticks_from_angle(grip if slot.joint == 6 else q[slot.joint])
    bus = arm.bus
    bus.set_torque(arm.read_ids, True)
    bus.sync_write("goal_position", goals)


def sim_check(config: RigConfig, poses: dict[str, list[float]] | None = None,
              threshold_deg: float = DEFAULT_THRESHOLD_DEG, gripper_threshold: float = DEFAULT_GRIPPER_THRESHOLD,
              settle_s: float = 1.5, world: Any = None) -> list[CheckReport]:
    """The alignment check on the simulated rig, run automatically from known poses."""
    from rig.arms import Follower, Leader
    from rig.session import resolve_ports
    from rig.sim.launch import start_world

    own = world is None
    if own:
        world = start_world(task=config.sim.task, seed=config.sim.seed, cameras=(), operator=False,
                            wire_timing=config.sim.wire_timing)
    else:
        world.set_operator(False)
    arms = []
    try:
        ports = resolve_ports(config, world.ports)
        leaders = {a.name: Leader(a, ports[a.name], timeout_margin_ms=100).open()
                   for a in config.leaders if not a.is_handheld}
        arms += leaders.values()
        followers = [Follower(a, ports[a.name], timeout_margin_ms=100).open() for a in config.followers]
        arms += followers
        reports = []
        for name, q in (poses or sim_poses()).items():
            for arm in arms:
                _hold_sim_pose(world, arm, q)
            _wait_still(arms, settle_s)
            reports.append(check_arms(followers, leaders, threshold_deg, gripper_threshold, pose=name))
        return reports
    finally:
        for arm in arms:
            with contextlib.suppress(Exception):
                arm.torque_off()
            arm.close()
        if own:
            world.close()


def _wait_still(arms: Sequence[Any], settle_s: float, timeout_s: float = 6.0) -> None:
    """Until no joint moved more than 0.2 deg over ``settle_s / 3``, at least ``settle_s``."""
    start = time.monotonic()
    time.sleep(settle_s)
    last = None
    while time.monotonic() - start < timeout_s:
        now = []
        for a in arms:
            a.read()
            now.append(a.q.copy())
        if last is not None and max(np.abs(x - y).max() for x, y in zip(now, last, strict=True)) < math.radians(0.2):
            return
        last = now
        time.sleep(settle_s / 3)

"""The simulated scene, its tasks and the scripted operator, in-process (no buses, no timing)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("gym_aloha")

from rig.sim import hardware as hw  # noqa: E402
from rig.sim.operator import plan_episode  # noqa: E402
from rig.sim.scene import SimScene, SimUnavailable, UnknownTask, object_poses  # noqa: E402

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def scenes():
    return {task: SimScene(task) for task in ("transfer_cube", "insertion")}


_plans: dict = {}


def plan(scenes, task: str, seed: int):
    """Plans are deterministic, so tests share them (planning takes a fraction of a second)."""
    if (task, seed) not in _plans:
        _plans[task, seed] = plan_episode(task, seed, scenes[task])
    return _plans[task, seed]


def mirror(scene: SimScene, leader_plan, lag_s: float = 0.04) -> bool:
    """Play the plan's leader angles onto the followers at 50 Hz with identity calibration and a
    teleop-like lag; True if the task was achieved at the end."""
    scene.reset(leader_plan.seed)
    steps = int(round(0.02 / scene.model.opt.timestep))
    for k in range(int(leader_plan.duration / 0.02) + 1):
        q = leader_plan.at(k * 0.02 - lag_s)
        for i, side in enumerate(("left", "right")):
            leader_ticks = hw.ticks_from_angle(q[i, 6])
            grip = hw.angle_from_ticks(hw.follower_gripper_ticks_from_leader_ticks(leader_ticks))
            scene.set_arm_goal(side, q[i, :6], hw.finger_from_follower_gripper(grip))
        scene.step(steps)
    return scene.success()


def test_identity_calibration_and_gripper_ranges():
    assert hw.ticks_from_angle(0.0) == 2048
    assert hw.ticks_from_angle(np.pi / 2) == 3072
    assert hw.angle_from_ticks(1024) == pytest.approx(-np.pi / 2)
    assert hw.follower_gripper_ticks_from_leader_ticks(hw.LEADER_GRIPPER_OPEN_TICKS) == hw.FOLLOWER_GRIPPER_OPEN_TICKS
    assert hw.follower_gripper_ticks_from_leader_ticks(hw.LEADER_GRIPPER_CLOSED_TICKS) == hw.FOLLOWER_GRIPPER_CLOSED_TICKS
    assert hw.finger_from_follower_gripper(hw.FOLLOWER_GRIPPER_OPEN_RAD) == pytest.approx(hw.FINGER_OPEN_M)
    assert hw.finger_from_follower_gripper(hw.FOLLOWER_GRIPPER_CLOSED_RAD - 1) == hw.FINGER_CLOSED_M  # clamped
    # 9 servos per arm, shadows on the shoulder and elbow
    assert [s.id for s in hw.SERVOS] == list(range(1, 10))
    assert {s.id: s.shadow_of for s in hw.SERVOS if s.shadow_of} == {3: 2, 5: 4}


def test_object_poses_come_from_the_seed():
    assert object_poses("transfer_cube", 3) == object_poses("transfer_cube", 3)
    assert object_poses("transfer_cube", 3) != object_poses("transfer_cube", 4)
    xs = [object_poses("transfer_cube", s)[0].pos for s in range(50)]
    assert all(0.0 <= x <= 0.2 and 0.4 <= y <= 0.6 for x, y, _ in xs)
    peg, socket = object_poses("insertion", 1)
    assert peg.pos[0] > 0 > socket.pos[0]  # peg on the right arm's side, socket on the left's


def test_reset_places_objects_and_nothing_is_achieved_yet(scenes):
    scene = scenes["transfer_cube"]
    scene.reset(5)
    scene.step(200)
    box = scene.body_pos("box")
    assert box[:2] == pytest.approx(object_poses("transfer_cube", 5)[0].pos[:2], abs=2e-3)
    assert box[2] == pytest.approx(0.02, abs=2e-3)  # resting on the table
    assert not scene.success()
    assert scene.arm_qpos("left")[:6] == pytest.approx([0, -0.96, 1.16, 0, -0.3, 0], abs=0.03)


def test_unknown_task_is_refused_with_the_choices():
    with pytest.raises(UnknownTask, match="choose one of: transfer_cube, cube_in_bin, insertion"):
        SimScene("stack_blocks")


def test_missing_mujoco_names_the_install_command(monkeypatch):
    from rig.sim.scene import import_mujoco

    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco now raises ImportError
    with pytest.raises(SimUnavailable, match=r"pip install -e '\.\[sim\]'"):
        import_mujoco()


def test_plan_is_reproducible_and_varies_between_seeds(scenes):
    a, b, c = plan(scenes, "transfer_cube", 2), plan_episode("transfer_cube", 2, scenes["transfer_cube"]), \
        plan(scenes, "transfer_cube", 3)
    assert np.array_equal(a.q, b.q)
    assert a.q.shape[1:] == (2, 7)
    assert a.duration != c.duration
    n = min(len(a.q), len(c.q))
    assert np.abs(a.q[:n] - c.q[:n]).max() > 0.05
    # the leaders move: the right arm reaches for the cube, the grippers open and close
    assert np.ptp(a.q[:, 1, 0]) > 0.1
    for arm in (0, 1):
        grip = a.q[:, arm, 6]
        assert grip.max() > hw.LEADER_GRIPPER_OPEN_RAD - 0.05 and grip.min() < hw.LEADER_GRIPPER_CLOSED_RAD + 0.05
    # hand tremor: small, fast wiggles on top of the smooth moves (second differences)
    still = a.q[:20, 0, :6]  # the first 0.2 s: the operator has not started moving yet
    assert 1e-6 < np.abs(np.diff(still, 2, axis=0)).max() < 5e-3


def test_some_plans_include_a_failed_grasp_and_a_retry(scenes):
    plans = [plan(scenes, "transfer_cube", s) for s in range(5)]
    retried = [p for p in plans if p.retries]
    assert retried and len(retried) < len(plans)
    assert any("retrying" in text for p in retried for _, text in p.events)


@pytest.mark.parametrize("seed", [0, 2])  # seed 2 includes a failed grasp and its retry
def test_mirrored_operator_transfers_the_cube(scenes, seed):
    assert mirror(scenes["transfer_cube"], plan(scenes, "transfer_cube", seed))


@pytest.mark.parametrize("seed", [0, 1])
def test_mirrored_operator_inserts_the_peg(scenes, seed):
    assert mirror(scenes["insertion"], plan(scenes, "insertion", seed))

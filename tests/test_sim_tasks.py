"""Tasks as data: the registry, each task's success check on states put together in the real
MuJoCo model, the new task's scripted operator in the simulated physics, and the spec deciding how
many objects quick-train locates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drivers.errors import RigError
from rig.sim.scene import START_ARM_POSE, SimScene
from rig.sim.tasks import DEFAULT_TASK, TASKS, UnknownTask, apply_recipe, get_task, simulated_task

ROOT = Path(__file__).resolve().parents[1]


# ---- the registry -------------------------------------------------------------------------------

def test_every_task_module_is_listed_default_first_and_named_after_its_module():
    assert TASKS[0] == DEFAULT_TASK == "transfer_cube"
    assert set(TASKS) == {"transfer_cube", "insertion", "cube_in_bin"}
    for name in TASKS:
        spec = get_task(name)
        assert spec.name == name
        assert spec.trial_s > 0 and spec.objects and spec.summary


def test_an_unknown_task_is_one_line_naming_the_known_ones():
    with pytest.raises(UnknownTask) as e:
        get_task("stack_blocks")
    assert str(e.value) == "unknown sim task 'stack_blocks'; choose one of: transfer_cube, cube_in_bin, insertion"
    assert isinstance(e.value, RigError)  # the CLI turns it into that line and exit status 2
    with pytest.raises(UnknownTask):
        get_task("spec")  # the package's own modules are not tasks


def test_rig_sim_offers_every_task_without_loading_mujoco():
    code = ("import sys, rig.cli; from rig.commands import sim; import argparse; p = argparse.ArgumentParser(); "
            "s = p.add_subparsers(); sim.register(s); a = p.parse_args(['sim', '--task', 'cube_in_bin']); "
            "print(a.task, 'mujoco' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["cube_in_bin", "False"], out.stderr
    bad = subprocess.run([sys.executable, "-m", "rig", "sim", "--task", "stack_blocks"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cube_in_bin" in bad.stderr


def test_the_simulated_task_of_takes_comes_from_the_request_or_the_takes():
    assert simulated_task("insertion", ["transfer_cube"]) == "insertion"
    assert simulated_task(None, ["pick the cup", "cube_in_bin", "insertion"]) == "cube_in_bin"
    assert simulated_task("pick the cup", ["pick the cup"]) is None


@pytest.mark.parametrize("task", TASKS)
def test_start_poses_come_from_the_seed_within_the_ranges_and_apart(task):
    spec = get_task(task)
    assert spec.start_poses(7) == spec.start_poses(7) != spec.start_poses(8)
    for seed in range(50):
        poses = spec.start_poses(seed)
        assert [p.name for p in poses] == [o.body for o in spec.objects]
        for p, o in zip(poses, spec.objects):
            assert o.x[0] <= p.pos[0] <= o.x[1] and o.y[0] <= p.pos[1] <= o.y[1] and p.pos[2] == o.z
        # no two objects start overlapping on the table (their footprints are apart along x)
        for i in range(len(poses)):
            for j in range(i + 1, len(poses)):
                gap = abs(poses[i].pos[0] - poses[j].pos[0])
                assert gap > spec.objects[i].half_size[0] + spec.objects[j].half_size[0], (seed, poses)


# ---- success checks on constructed states (the real MuJoCo model, no stepping) ---------------------

@pytest.fixture(scope="module")
def scenes():
    pytest.importorskip("mujoco")
    pytest.importorskip("gym_aloha")
    return {task: SimScene(task) for task in TASKS}


def place(scene: SimScene, body: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
    m = scene.model
    adr = int(m.joint(m.body(body).jntadr[0]).qposadr[0])
    scene.data.qpos[adr:adr + 7] = [*pos, *quat]


def settle(scene: SimScene, steps: int = 0) -> bool:
    """The contacts of the state as put together (``steps`` > 0: after the physics let it rest)."""
    scene.mujoco.mj_forward(scene.model, scene.data)
    if steps:
        scene.step(steps)
    return scene.success()


@pytest.mark.sim
def test_every_task_builds_its_objects_into_the_model(scenes):
    for task, scene in scenes.items():
        for o in get_task(task).objects:
            assert scene.model.body(o.body).jntadr[0] >= 0  # a free body the world can place
        scene.reset(3)
        poses = get_task(task).start_poses(3)
        for p in poses:
            assert scene.body_pos(p.name) == pytest.approx(p.pos, abs=1e-6)
        assert not settle(scene)  # nothing is done at the start


@pytest.mark.sim
def test_transfer_cube_counts_only_a_cube_held_by_the_left_gripper_alone(scenes):
    from rig.sim.kinematics import ArmIK

    scene = scenes["transfer_cube"]
    scene.reset(0)
    grasp, _ = ArmIK(scene, "left").pose(np.array(START_ARM_POSE))  # between the left fingers, 30 cm up
    place(scene, "box", grasp)
    assert settle(scene)
    place(scene, "box", grasp + np.array([0.0, 0.15, 0.0]))  # in the air, in no hand
    assert not settle(scene)
    place(scene, "box", (0.1, 0.5, 0.02))  # on the table
    assert not settle(scene)


@pytest.mark.sim
def test_insertion_counts_the_peg_inside_the_lifted_socket(scenes):
    scene = scenes["insertion"]
    scene.reset(0)
    place(scene, "socket", (0.0, 0.5, 0.25))
    place(scene, "peg", (0.02, 0.5, 0.25))  # its -x end 4 cm deep in the socket
    assert settle(scene)
    place(scene, "peg", (0.11, 0.5, 0.25))  # lined up, but outside the mouth
    assert not settle(scene)
    place(scene, "peg", (0.02, 0.6, 0.25))  # beside the socket
    assert not settle(scene)
    place(scene, "socket", (0.0, 0.5, 0.0215))  # inserted, but the socket rests on the table
    place(scene, "peg", (0.02, 0.5, 0.0215))
    assert not settle(scene)


@pytest.mark.sim
def test_cube_in_bin_counts_a_cube_resting_inside_the_bin(scenes):
    from rig.sim.tasks.cube_in_bin import BIN_HALF, WALL_TOP

    scene = scenes["cube_in_bin"]
    scene.reset(0)
    bin_at = np.array(get_task("cube_in_bin").start_poses(0)[1].pos)
    place(scene, "box", bin_at + np.array([0.01, -0.01, 0.05]))  # dropped in from above
    assert settle(scene, steps=500)  # 1 s: it falls and rests on the floor
    assert scene.body_pos("box")[2] < WALL_TOP
    scene.reset(0)
    place(scene, "box", bin_at + np.array([BIN_HALF + 0.04, 0.0, 0.02]))  # on the table beside the bin
    assert not settle(scene, steps=200)
    scene.reset(0)
    place(scene, "box", bin_at + np.array([0.0, BIN_HALF - 0.004, WALL_TOP + 0.02]))  # balanced on the rim
    assert not settle(scene)
    scene.reset(0)
    place(scene, "box", bin_at + np.array([0.0, 0.0, 0.15]))  # above the bin, not in it
    assert not settle(scene)


# ---- the new task's scripted operator in the simulated physics ----------------------------------

@pytest.mark.sim
@pytest.mark.parametrize("seed", [0, 2, 13])  # 2: a grasp closed too early and retried; 13: beside the bin first
def test_the_scripted_operator_puts_the_cube_in_the_bin(scenes, seed):
    from test_sim_scene import mirror

    from rig.sim.operator import plan_episode

    plan = plan_episode("cube_in_bin", seed, scenes["cube_in_bin"])
    events = [text for _, text in plan.events]
    assert events[-1] == "done" and plan.duration < get_task("cube_in_bin").trial_s - 2
    assert (plan.retries > 0) == (seed == 2)
    assert any("beside the bin" in t for t in events) == (seed == 13)
    assert mirror(scenes["cube_in_bin"], plan)


# ---- the spec decides what quick-train locates ------------------------------------------------------

def test_quick_train_locates_as_many_objects_as_the_task_has():
    pytest.importorskip("torch")
    from rig.train.quick import QuickConfig

    for task in TASKS:
        qc = apply_recipe(QuickConfig(), task, seed=3)
        assert qc.n_objects == len(get_task(task).objects) and qc.seed == 3
    assert apply_recipe(QuickConfig(), "insertion").n_objects == 2
    assert apply_recipe(QuickConfig(), "pick the cup").n_objects == QuickConfig().n_objects  # no spec: defaults
    with pytest.raises(RigError, match="which quick-train's config does not have"):
        apply_recipe(QuickConfig(), "transfer_cube", no_such_field=1)
    # each task states what it does with retried grasps; the command line (--retried) wins
    assert all(apply_recipe(QuickConfig(), t).keep_retried is get_task(t).recipe["keep_retried"] for t in TASKS)
    assert apply_recipe(QuickConfig(), "insertion", keep_retried=True).keep_retried is True


@pytest.mark.sim
def test_the_locator_sized_by_the_spec_finds_the_cube_and_the_bin():
    pytest.importorskip("torch")
    from rig.sim.reference import render_take_starts
    from rig.train.locate import Locator
    from rig.train.quick import QuickConfig

    qc = apply_recipe(QuickConfig(), "cube_in_bin")
    seeds = [3, 11, 19, 27, 35, 43]
    ref, frames = render_take_starts("cube_in_bin", seeds)
    got = [Locator(qc.locator, qc.camera, qc.n_objects)(f, ref.frame, ref.arm_mask) for f in frames]
    assert all(g.found and len(g.xy) == 2 for g in got)
    for k, name in enumerate(("bin", "box")):  # the bin lies at -x, left in the top view
        px = np.array([g.xy[k] for g in got])
        true = np.array([p.pos[:2] for s in seeds for p in get_task("cube_in_bin").start_poses(s) if p.name == name])
        a = np.c_[px, np.ones(len(px))]
        coef, *_ = np.linalg.lstsq(a, true, rcond=None)
        assert np.abs(a @ coef - true).max() * 1000 < 5.0, name

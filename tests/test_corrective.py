"""Corrections, measured: the scripted corrector's "falls behind" decision per task, re-planning a
take from where the arms and the objects are, a corrective take recorded on the simulated rig
(a policy that holds still is taken over and the correction finishes the task), and quick-train
learning from a corrective take's ticks after the takeover only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rig.sim.tasks import Stage, get_task

# ---- (a) falls behind: the task's stages over plain object positions and time -------------------------

ON_TABLE = {"box": [0.1, 0.5, 0.02]}


def test_transfer_cube_falls_behind_without_a_grasp_or_after_a_drop_and_keeps_up_otherwise():
    spec = get_task("transfer_cube")
    assert spec.behind(ON_TABLE, 5.0) is None  # the demonstrations have not grasped yet either
    why = spec.behind(ON_TABLE, 11.5)
    assert why is not None and why.startswith("the cube lifted: not done at 11.5 s")
    lifted = {"box": [0.1, 0.5, 0.19]}
    assert spec.behind(lifted, 11.5) is None
    assert spec.behind(lifted, 16.0).startswith("the cube at the handover")  # a stalled handover
    at_meet = {"box": [0.0, 0.5, 0.24]}
    assert spec.behind(at_meet, 16.0) is None
    assert spec.behind(at_meet, 19.6).startswith("handed over")  # stalled there
    assert spec.behind(at_meet, 19.6, done=True) is None  # the world sees it done
    assert spec.behind(ON_TABLE, 16.0).startswith("the cube lifted")  # dropped: it fell back


def test_insertion_and_cube_in_bin_fall_behind_at_their_own_stages():
    ins = get_task("insertion")
    parts_down = {"peg": [0.15, 0.5, 0.01], "socket": [-0.15, 0.5, 0.022]}
    one_up = {"peg": [0.15, 0.5, 0.01], "socket": [-0.15, 0.5, 0.17]}
    both_up = {"peg": [0.15, 0.5, 0.16], "socket": [-0.15, 0.5, 0.17]}
    assert ins.behind(parts_down, 10.0) is None
    assert ins.behind(one_up, 11.5).startswith("both parts lifted")
    assert ins.behind(both_up, 11.5) is None
    assert ins.behind(both_up, 19.5).startswith("the peg in the socket")  # a stalled insertion

    bin_ = get_task("cube_in_bin")
    bin_at = [-0.04, 0.5, 0.0]
    assert bin_.behind({"box": [0.15, 0.5, 0.02], "bin": bin_at}, 11.5).startswith("the cube lifted")
    carried = {"box": [0.15, 0.5, 0.14], "bin": bin_at}
    assert bin_.behind(carried, 11.5) is None
    assert bin_.behind(carried, 15.5).startswith("the cube over the bin")  # a stalled placement
    in_bin = {"box": [-0.03, 0.51, 0.03], "bin": bin_at}  # down again, but in the bin: not a drop
    assert bin_.behind(in_bin, 15.5) is None
    assert bin_.behind(in_bin, 18.0).startswith("in the bin")


def test_every_task_has_stages_in_time_order_within_its_trial():
    from rig.sim.tasks import TASKS

    for name in TASKS:
        spec = get_task(name)
        deadlines = [s.deadline_s for s in spec.stages]
        assert len(deadlines) >= 2 and deadlines == sorted(deadlines) and deadlines[-1] <= spec.trial_s, name


# ---- (b) re-planning from a mid-task state, and a corrective take in the world --------------------------


@pytest.mark.sim
def test_a_plan_from_a_mid_task_state_starts_at_the_followers_and_picks_where_the_cube_is_now():
    pytest.importorskip("mujoco")
    from rig.sim.hardware import leader_gripper_from_opening
    from rig.sim.operator import ScriptedOperator, arms_now
    from rig.sim.scene import SIDES, SimScene

    scene = SimScene("transfer_cube")
    scene.reset(3)
    # the policy left the arms somewhere else and pushed the cube
    for k, side in enumerate(SIDES):
        adr = scene.qpos_adr[side]
        scene.data.qpos[adr[:6]] += np.array([0.2, -0.15, 0.1, 0.05, 0.1, -0.1]) * (1 if k else -1)
        scene.data.qpos[adr[6]] = 0.04
    box = scene.model.joint(scene.model.body("box").jntadr[0]).qposadr[0]
    scene.data.qpos[box:box + 3] = [0.05, 0.45, 0.02]
    scene.mujoco.mj_forward(scene.model, scene.data)
    now = arms_now(scene)
    assert now.objects[0].pos == pytest.approx((0.05, 0.45, 0.02), abs=1e-6)
    op = ScriptedOperator("transfer_cube", 3, scene, now=now)
    plan = op.plan()
    assert np.abs(plan.q[0, :, :6] - now.joints).max() < 5e-3  # tremor only: the leaders start on the followers
    for k in range(2):
        assert plan.q[0, k, 6] == pytest.approx(leader_gripper_from_opening(now.opening[k]), abs=0.02)
    assert any(text == "right: grasped" for _, text in plan.events)
    release = ScriptedOperator("transfer_cube", 3, scene, now=now).release()
    assert np.abs(release.q[0, :, :6] - now.joints).max() < 5e-3
    assert release.q[-1, :, 6] == pytest.approx([leader_gripper_from_opening(1.0)] * 2, abs=0.02)  # let go


class HoldStill:
    """A real policy that does nothing: every chunk holds the followers where they are."""

    start_q = None

    def __init__(self, n: int = 14, k: int = 10):
        from rig.train.model import PolicyConfig

        self.cfg = PolicyConfig(n=n, k=k, cameras=(), image_hw=(60, 80))

    def predict_chunk(self, images, q, dq):
        return np.repeat(np.asarray(q, np.float64)[None], self.cfg.k, 0)


@pytest.fixture(scope="module")
def corrective_dataset(tmp_path_factory):
    """A corrective take recorded on the simulated rig: HoldStill drives, the corrector takes over
    (the task's first stage made due at 1 s, so the test waits 1 s, not 11), re-plans and finishes.
    Returns (path, [(result, marks, corrector)] per take until one succeeds, at most two)."""
    pytest.importorskip("mujoco")
    from rig.commands.record import corrective_take
    from rig.config import load_config
    from rig.takes import Takes
    from rig.trials import PolicyTrials

    path = tmp_path_factory.mktemp("corrective") / "takes.zarr"
    spec = get_task("transfer_cube")
    early = dataclasses.replace(spec, stages=(Stage("the cube lifted", 1.0), *spec.stages[1:]))
    takes = Takes(load_config("sim-aloha"), path, seed=20_000, cameras=False)
    takes.open_dataset(interactive=False)
    takes.open()
    runs = []
    try:
        trials = PolicyTrials(takes)
        policy = HoldStill()
        for seed in (20_000, 20_001):
            takes.reset(seed)
            runs.append(corrective_take(takes, trials, policy, early, seconds=5.0))
            if runs[-1][0].success:
                break
    finally:
        takes.close()
    return path, runs


@pytest.mark.sim
def test_a_policy_that_holds_still_is_taken_over_and_the_correction_finishes_the_task(corrective_dataset):
    from recorder import Dataset

    path, runs = corrective_dataset
    ds = Dataset(path)
    for result, marks, corrector in runs:
        assert corrector.state == "finishing" and corrector.reason.startswith("the cube lifted")
        a = ds.episode(result.index).attrs
        assert a["trial"] == "policy" and marks.corrective and a["corrective"] is True
        assert a["takeover_tick"] == marks.takeover_tick and 0 < marks.takeover_tick < marks.ticks
        assert marks.policy_ticks >= 40  # ~1 s of the policy holding still before the takeover
    assert any(r.success for r, _, _ in runs), [c.reason for _, _, c in runs]  # the world saw it done
    ok = next(r for r, _, _ in runs if r.success)
    a = ds.episode(ok.index).attrs
    assert a["outcome"] == "success" and a["outcome_reason"].startswith("corrected: the cube lifted")


# ---- (c) quick-train learns from the ticks after the takeover only ------------------------------------


@pytest.mark.sim
def test_the_quick_recipe_samples_a_corrective_take_from_its_takeover_on(corrective_dataset):
    from recorder import Dataset
    from rig.recording import JOINTS
    from rig.train.quick import load_quick_episodes, sample_rows

    path, runs = corrective_dataset
    eps = load_quick_episodes(path, None, need_camera=False)
    assert [e.index for e in eps] == [r.index for r, _, _ in runs]
    rows = sample_rows(eps)
    offset = 0
    for e, (_, marks, _) in zip(eps, runs):
        # the takeover's row on the trainer's tick grid, where a skipped tick (a loaded machine)
        # repeats the row before it: the loop's tick counter of the takeover row, from the first
        tick = np.asarray(Dataset(path).episode(e.index).read_stream(JOINTS)["tick"], np.int64)
        assert e.label_from == tick[marks.takeover_tick] - tick[0] > 0
        mine = rows[(rows >= offset) & (rows < offset + e.ticks)] - offset
        assert mine[0] == e.label_from and len(mine) == e.ticks - e.label_from
        offset += e.ticks


def test_corrective_recording_off_the_simulated_rig_is_one_line_and_exit_2(tmp_path, capsys):
    from rig.cli import main

    data = tmp_path / "takes.zarr"
    assert main(["record", "--corrective", "--config", "aloha", "--dataset", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rig: --corrective needs the simulated rig (a world whose scripted corrector can take over); "
                   "aloha has none"]
    assert not data.exists()  # nothing written

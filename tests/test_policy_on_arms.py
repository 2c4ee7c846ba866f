"""Policy on the arms: `p` in the app runs the latest trained policy on the followers through the
one control loop, recorded as a trial; moving a leader takes over and makes it a corrective take
that the trainer learns from, from the takeover on.

The rig is treated as hardware: a leader/follower pair on emulated Dynamixel buses (ptys, the
real SDK), a synthetic camera, no simulated world and so no success check (the collector
labels). The app runs as `rig collect` runs it, the rig in its engine process. The policy is a
real TrainedPolicy trained for a few steps on two takes of this rig, saved where the
quick-trainer saves its latest; its head is then zeroed and its mean action offset set so that
what it commands is known (the waist 0.5 rad beyond wherever it is: the loop's limit then holds
it at 1.0 rad), which makes "the followers move under the policy" a plain check on servo state.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

pytest.importorskip("textual")
torch = pytest.importorskip("torch")

from recorder import Dataset  # noqa: E402
from rig.recording import JOINTS  # noqa: E402
from rig.ticks import SOURCE_CODES  # noqa: E402

# The training code is imported now, before any rig runs: the emulated buses live in this
# process, and a first import holds the interpreter long enough to starve them.
from rig.train.background import BackgroundTrainer  # noqa: E402
from rig.train.data import EpisodeCache  # noqa: E402
from rig.train.latest import latest_policy_path, load_latest, save_latest  # noqa: E402
from rig.train.trainer import TrainConfig, train_policy  # noqa: E402
from rig.tui.app import CollectorApp  # noqa: E402
from rig.tui.controller import CollectOptions, State  # noqa: E402
from rig.tui.engine import CollectorProcess  # noqa: E402
from tests.apps import screen_text, until  # noqa: E402
from tests.rigs import SYNTHETIC_CAMERA, WavingHand, pair_buses, pair_toml, pose_leader  # noqa: E402

SIZE = (170, 50)
TICKS_PER_RAD = 4096 / (2 * math.pi)


def waist(bus, register: str = "present_position") -> float:
    """The waist's angle in radians (zero at 2048 ticks, as the pair's calibration)."""
    return (bus.servo(1).get(register) - 2048) / TICKS_PER_RAD


def hold_leader(leader, rad: float) -> None:
    with leader.lock:
        pose_leader(leader, [2048 + rad * TICKS_PER_RAD, 2048, 2048])


def train_known_policy(dataset) -> None:
    """A real policy trained on the dataset's takes, made to command the waist +0.5 rad ahead."""
    eps = EpisodeCache().load(dataset)
    assert [e.index for e in eps] == [0, 1]
    policy = train_policy(eps, TrainConfig(steps=3, k=10, batch=16, width=8, hidden=32))
    assert policy.cfg.cameras == ("wrist",) and policy.cfg.n == 4
    last = policy.model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    policy.norm.d_mean[:] = 0.0
    policy.norm.d_mean[0] = 0.5
    save_latest(policy, dataset)


async def record_demo(pilot, c, leader, index: int) -> None:
    hand = WavingHand(leader)
    hand.start()
    try:
        await pilot.press("space")
        await until(pilot, lambda: c.state == State.RECORDING and c.recording and c.episode == index, 15, "recording")
        await pilot.pause(1.5)
        await pilot.press("space")
        await until(pilot, lambda: c.state == State.REVIEW and c.last is not None and c.last.index == index, 15,
                    "the take saved")
    finally:
        hand.stop.set()
        hand.join()
    hold_leader(leader, 0.0)
    await pilot.press("enter")
    await until(pilot, lambda: c.state == State.READY, 20, "READY again")


async def run_trial(pilot, c, follower, index: int) -> None:
    await pilot.press("p")
    await until(pilot, lambda: c.state == State.RECORDING and c.recording and c.episode == index, 60,
                "the policy trial recording")
    # The policy drives: the follower's waist goes to its 1.0 rad limit, the leader stays at 0.
    # the goal walks there at the loop's step clamp, slower on a loaded machine: wait for both
    end = time.monotonic() + 20
    while time.monotonic() < end and (waist(follower) < 0.8 or waist(follower, "goal_position") < 0.98):
        await pilot.pause(0.1)
    assert waist(follower, "goal_position") == pytest.approx(1.0, abs=0.02)
    assert waist(follower) > 0.8


def test_p_runs_the_policy_and_a_takeover_is_a_corrective_take_the_trainer_learns_from(tmp_path, emulated):
    leader, follower = pair_buses(emulated)
    asyncio.run(_scenario(tmp_path, leader, follower))
    check_disk(tmp_path / "takes.zarr", follower)


async def _scenario(tmp_path, leader, follower) -> None:
    path = tmp_path / "pair.toml"
    # Training runs in this process beside the emulated buses: ride out its stalls (2.5 s of missed
    # leader reads; a real leader's servos do not share an interpreter with the trainer).
    path.write_text(pair_toml(leader.port, follower.port, missed_reads_to_stop=125) + SYNTHETIC_CAMERA)
    ds_path = tmp_path / "takes.zarr"
    # Naming the policy file (as `rig collect --policy` does, or quick-train being on) has the
    # engine import torch before its loop starts.
    c = CollectorProcess(CollectOptions(config=path, dataset=ds_path, seconds=0, reset_seconds=0.1, train=False,
                                        policy=latest_policy_path(ds_path)), log_path=tmp_path / "engine.log")
    try:
        await _drive(c, leader, follower, ds_path)
    finally:
        c.close()  # a failed step must not leave the engine (not a daemon) running


async def _drive(c, leader, follower, ds_path) -> None:
    app = CollectorApp(c, train=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: c.state == State.READY, 90, "READY")
        assert "run policy" in screen_text(app)  # the footer names the key

        # No policy yet: one line saying where it is looked for, and the rig stays ready.
        await pilot.press("p")
        await until(pilot, lambda: "no trained policy" in c.message and c.state == State.READY, 30,
                    "the missing policy named")
        assert "takes.zarr.policy.pt" in c.message

        await record_demo(pilot, c, leader, 0)
        await record_demo(pilot, c, leader, 1)
        train_known_policy(ds_path)

        # Trial 2: the policy drives, then the operator moves the leader: a takeover.
        await run_trial(pilot, c, follower, 2)
        hold_leader(leader, 0.3)  # 0.3 rad > takeover_rad (0.15)
        end = time.monotonic() + 10
        while time.monotonic() < end and abs(waist(follower, "goal_position") - 0.3) > 0.02:
            await pilot.pause(0.1)
        assert waist(follower, "goal_position") == pytest.approx(0.3, abs=0.02)  # the leader drives again
        await pilot.pause(0.5)
        await pilot.press("space")
        await until(pilot, lambda: c.state == State.REVIEW and c.last is not None and c.last.index == 2, 15,
                    "the trial saved")
        assert "corrective take" in c.message, c.message
        assert c.last.success is None  # no world judged it: the collector labels
        await pilot.press("s")
        await until(pilot, lambda: "marked success" in c.message, 10, "labelled")
        hold_leader(leader, 0.0)
        await pilot.press("enter")
        await until(pilot, lambda: c.state == State.READY, 20, "READY after the trial")

        # Trial 3: nobody takes over; labelled a failure.
        await run_trial(pilot, c, follower, 3)
        await pilot.press("space")
        await until(pilot, lambda: c.state == State.REVIEW and c.last is not None and c.last.index == 3, 15,
                    "the second trial saved")
        assert "no takeover" in c.message, c.message
        await pilot.press("f")
        await until(pilot, lambda: "marked failure" in c.message, 10, "labelled")
        await pilot.press("enter")
        await until(pilot, lambda: c.state == State.READY, 20, "READY after the second trial")
        # Trial 4 is cut short by quitting while the policy drives: saved, and marked all the same.
        await run_trial(pilot, c, follower, 4)
        await pilot.press("q")
        await until(pilot, lambda: c.state == State.CLOSED, 90, "closed", after_fault=True)


def check_disk(ds_path, follower) -> None:
    assert follower.servo(1).get("torque_enable") == 0  # released at quit
    ds = Dataset(ds_path)

    # On disk: the corrective trial, its source per tick and its takeover tick.
    a = ds.episode(2).attrs
    s = ds.episode(2).read_stream(JOINTS)
    src = np.asarray(s["source"])
    r = a["takeover_tick"]
    assert a["trial"] == "policy" and a["corrective"] is True and a["success"] is True
    assert a["policy"]["path"].endswith("takes.zarr.policy.pt") and a["policy"]["steps"] == 3
    assert r > 10 and np.all(src[:r] == SOURCE_CODES["policy"]) and np.all(src[r:] == SOURCE_CODES["takeover"])
    assert a["takeover_t_ns"] == int(s["t_deadline_ns"][r])
    assert a["policy_ticks"] == r
    assert np.max(s["action"][:r, 0]) == pytest.approx(1.0, abs=0.02)  # the policy's targets
    assert abs(s["action"][-1, 0] - 0.3) < 0.02  # the operator's
    # The trial nobody took over: all policy ticks, labelled failure.
    b = ds.episode(3).attrs
    src3 = np.asarray(ds.episode(3).read_stream(JOINTS)["source"])
    assert b["trial"] == "policy" and b["corrective"] is False and b["takeover_tick"] is None
    assert b["success"] is False and np.all(src3 == SOURCE_CODES["policy"])
    d = ds.episode(4).attrs
    assert d["trial"] == "policy" and d["corrective"] is False and d["policy_ticks"] > 10

    # The trainer's selection: both demonstrations whole, the corrective take from its takeover
    # on (the operator's actions only), the uncorrected trial not at all.
    eps = {e.index: e for e in EpisodeCache().load(ds_path)}
    assert sorted(eps) == [0, 1, 2]
    corr = eps[2]
    tick = np.asarray(s["tick"])
    assert corr.ticks == tick[-1] - tick[r] + 1  # the trainer's grid repeats ticks a loaded machine skipped
    assert np.all(np.abs(corr.action[-5:, 0] - 0.3) < 0.02)
    assert corr.action[0, 0] == pytest.approx(s["action"][r, 0], abs=1e-4)

    # The app's quick-train retrains on that selection and saves its latest where `p` loads it.
    before = latest_policy_path(ds_path).stat().st_mtime_ns
    with BackgroundTrainer(ds_path, budget_s=1, curve=False) as trainer:
        end = time.monotonic() + 180
        while trainer.status().state not in ("done", "error") and time.monotonic() < end:
            time.sleep(0.2)
        st = trainer.status()
    assert st.state == "done" and st.result_episodes == [0, 1, 2], st.message
    assert latest_policy_path(ds_path).stat().st_mtime_ns > before
    assert load_latest(ds_path).episodes == sorted(set(st.result_episodes) - set(st.report["val_episodes"]))


def test_labels_start_at_the_takeover_on_the_trainers_tick_grid():
    """A corrective take's labels start at the takeover's time on the trainer's tick grid: rows
    before it (the policy's own actions) are never labels, and a trial nobody took over has none."""
    from rig.train.corrective import from_tick, label_start
    from rig.train.data import EpisodeData, JointInfo
    from rig.trials import find_takeover

    period = 20_000_000
    t0 = 5_000_000_000
    T = 100
    action = np.arange(T, dtype=np.float32)[:, None].repeat(2, 1)
    e = EpisodeData(7, "t", None, None, 50.0, action.copy(), np.zeros_like(action), action,
                    np.arange(T) * period / 1e9, {}, {}, JointInfo(("a", "b"), (False, False)), (), t0)
    # The loop skipped ticks 10-12 before the takeover: the recorded row is not the grid's index.
    source = np.full(T - 3, SOURCE_CODES["policy"], np.uint8)
    source[60:] = SOURCE_CODES["takeover"]
    deadlines = t0 + np.concatenate([np.arange(10), np.arange(13, T)]) * period
    row, t_ns = find_takeover(source, deadlines)
    assert (row, t_ns) == (60, t0 + 63 * period)
    cut = from_tick(e, {"takeover_t_ns": t_ns})
    assert cut.ticks == T - 63 and cut.action[0, 0] == 63 and cut.t_s[0] == 0 and cut.t0_ns == t_ns
    assert from_tick(e, t0 + T * period) is None  # a takeover at the very end leaves nothing
    assert label_start({}) == 0  # a demonstration
    assert label_start({"trial": "policy", "corrective": True, "takeover_tick": 60}) == 60
    assert label_start({"trial": "policy", "corrective": False, "takeover_tick": None}) is None
    assert find_takeover(np.full(5, SOURCE_CODES["policy"]), np.arange(5)) == (None, None)


def test_on_the_simulated_aloha_p_runs_the_policy_and_a_leader_held_aside_takes_over(tmp_path):
    """The same on the simulated ALOHA: the world judges the trial (the collector may override);
    the scripted operator stays still; a hand on the left leader (``set_leader_pose``)
    takes over."""
    pytest.importorskip("mujoco")
    from rig.sim.scene import START_ARM_POSE
    from tests.apps import wait_for

    ds_path = tmp_path / "takes.zarr"
    # As above: the engine imports torch before its loop starts.
    c = CollectorProcess(CollectOptions(dataset=ds_path, seconds=0, reset_seconds=0.2, train=False,
                                        policy=latest_policy_path(ds_path)), log_path=tmp_path / "engine.log")
    try:
        c.open()
        wait_for(c, lambda: c.state == State.READY, 120, "READY")
        for i in (0, 1):  # two demonstrations by the scripted operator
            c.toggle()
            wait_for(c, lambda i=i: c.recording and c.episode == i, 20, "recording")
            time.sleep(1.5)
            c.toggle()
            wait_for(c, lambda i=i: c.state == State.REVIEW and c.last.index == i, 20, "saved")
            c.keep()
            wait_for(c, lambda: c.state == State.READY, 30, "READY")
        policy = train_policy(EpisodeCache().load(ds_path), TrainConfig(steps=2, k=10, batch=8, width=8, hidden=32))
        assert set(policy.cfg.cameras) == {"top", "left_wrist", "right_wrist"} and policy.cfg.n == 14
        with torch.no_grad():
            policy.model.head[-1].weight.zero_()
            policy.model.head[-1].bias.zero_()
        policy.norm.d_mean[:] = 0.0
        policy.norm.d_mean[0] = 0.3  # the left waist turns, 0.3 rad ahead of wherever it is
        save_latest(policy, ds_path)

        assert c.run_policy() is True
        wait_for(c, lambda: c.recording and c.episode == 2, 60, "the trial recording")
        w0 = c.drill("arm_qpos")["left"][0]
        end = time.monotonic() + 20
        while time.monotonic() < end and c.drill("arm_qpos")["left"][0] < w0 + 0.3:
            time.sleep(0.1)
        assert c.drill("arm_qpos")["left"][0] > w0 + 0.3  # the follower turns under the policy
        c.drill("set_leader_pose", "left_leader", [*START_ARM_POSE, 1.0])  # a hand moves the leader
        time.sleep(2.5)  # the takeover blends over engage_seconds (1.5 s)
        assert abs(c.drill("arm_qpos")["left"][0] - START_ARM_POSE[0]) < 0.1  # the leader drives again
        c.toggle()
        wait_for(c, lambda: c.state == State.REVIEW and c.last.index == 2, 20, "the trial saved")
        # The world judges a trial on the simulated rig (the policy turned a waist: no task done);
        # the collector's label overrides it.
        assert "corrective take" in c.message and "the world judged it failure" in c.message, c.message
        assert c.last.success is False
        c.label(False)
        wait_for(c, lambda: "marked failure" in c.message, 10, "labelled")
    finally:
        c.close()
    ds = Dataset(ds_path)
    a = ds.episode(2).attrs
    s = ds.episode(2).read_stream(JOINTS)
    src, tick = np.asarray(s["source"]), np.asarray(s["tick"])
    r = a["takeover_tick"]
    assert a["trial"] == "policy" and a["corrective"] is True and a["success"] is False and a["seed"] == 2
    assert np.all(src[:r] == SOURCE_CODES["policy"]) and np.all(src[r:] == SOURCE_CODES["takeover"])
    eps = {e.index: e for e in EpisodeCache().load(ds_path)}
    assert sorted(eps) == [0, 1, 2] and eps[2].ticks == tick[-1] - tick[r] + 1


def test_on_the_simulated_aloha_p_runs_the_latest_quick_policy_after_two_kept_takes(tmp_path):
    """The done-when of the policy loop: two kept takes, the app's trainer (its quick recipe, a
    tiny budget) saves its latest policy after the pass, and `p` runs that quick policy on the
    followers through the one loader, its chunks predicted off the tick."""
    pytest.importorskip("mujoco")
    from rig.train.policy_file import policy_digest, read_policy_file
    from tests.apps import wait_for

    ds_path = tmp_path / "takes.zarr"
    c = CollectorProcess(CollectOptions(dataset=ds_path, seconds=0, reset_seconds=0.2, train=False,
                                        policy=latest_policy_path(ds_path)), log_path=tmp_path / "engine.log")
    try:
        c.open()
        wait_for(c, lambda: c.state == State.READY, 120, "READY")
        for i in (0, 1):  # two takes by the scripted operator, labelled success (too short to finish)
            c.toggle()
            wait_for(c, lambda i=i: c.recording and c.episode == i, 20, "recording")
            time.sleep(3.0)
            c.toggle()
            wait_for(c, lambda i=i: c.state == State.REVIEW and c.last.index == i, 20, "saved")
            c.label(True)
            wait_for(c, lambda: "marked success" in c.message, 10, "labelled")
            c.keep()
            wait_for(c, lambda: c.state == State.READY, 30, "READY")
        # The app's trainer, as its panel starts it, on a tiny budget: one fast trial, no curve.
        with BackgroundTrainer(ds_path, budget_s=2, curve=False, fast_trials=1, confirm_trials=0) as trainer:
            end = time.monotonic() + 300
            while trainer.status().state not in ("done", "error") and time.monotonic() < end:
                time.sleep(0.5)
            st = trainer.status()
        assert st.state == "done" and st.success is not None, st.message  # the quick recipe ran
        file = latest_policy_path(ds_path)
        header = read_policy_file(file)
        assert header["kind"] == "quick" and header["meta"]["dataset"] == str(ds_path)
        assert header["meta"]["cameras"] == ["top"] and "reference" in header  # its locator's empty scene
        digest = policy_digest(file)

        assert c.run_policy() is True
        wait_for(c, lambda: c.recording and c.episode == 2, 90, "the quick policy's trial recording")
        time.sleep(3.0)  # the policy drives (its start pose first)
        c.toggle()
        wait_for(c, lambda: c.state == State.REVIEW and c.last.index == 2, 20, "the trial saved")
        assert "policy trial 2 saved" in c.message and "the policy failed" not in c.message, c.message
        loop = c.snapshot().loop
        assert loop["source_failure"] is None and loop["ticks"] > 100
    finally:
        c.close()
    a = Dataset(ds_path).episode(2).attrs
    assert a["trial"] == "policy" and a["policy"]["kind"] == "quick" and a["policy"]["digest"] == digest
    assert a["judged_by"] == "world" and a["policy_ticks"] > 25  # the world judged it: the policy did not fail
    s = Dataset(ds_path).episode(2).read_stream(JOINTS)
    driven = np.asarray(s["action"])[np.asarray(s["source"]) == SOURCE_CODES["policy"]]
    assert np.ptp(driven, axis=0).max() > 0.01  # the quick policy's chunks moved the followers


class RaisingPolicy:
    """A policy of a kind of its own (registered with the one loader) that drives the waist to
    0.4 rad for ``after`` predictions, then raises, as a policy with a bug would mid-trial."""

    def __init__(self, after: int):
        from rig.train.model import PolicyConfig

        self.after = after
        self.cfg = PolicyConfig(n=4, k=10, cameras=("wrist",), image_hw=(60, 80))
        self.start_q = None
        self.calls = 0

    def state(self) -> dict:
        return {"kind": "raises", "after": self.after}

    def predict_chunk(self, images, q, dq):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("the gripper head diverged")
        out = np.repeat(q[None], self.cfg.k, 0)
        out[:, 0] = 0.4
        return out


def test_a_policy_that_raises_mid_trial_holds_the_followers_and_the_trial_fails_with_its_reason(tmp_path, emulated):
    from rig.train import policy_file
    from rig.train.policy_file import policy_digest
    from rig.tui.controller import Collector

    leader, follower = pair_buses(emulated)
    path = tmp_path / "pair.toml"
    path.write_text(pair_toml(leader.port, follower.port) + SYNTHETIC_CAMERA)
    ds_path = tmp_path / "takes.zarr"
    policy_file.register_kind("raises", lambda st, device: RaisingPolicy(st["after"]))
    c = Collector(CollectOptions(config=path, dataset=ds_path, seconds=0, reset_seconds=0.1, train=False,
                                 policy=latest_policy_path(ds_path)))

    def wait(pred, timeout: float, what: str, poll: bool = True) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            if poll:
                c.poll()  # what the app does a few times a second
            time.sleep(0.05)
        assert pred(), f"timed out waiting for {what}: {c.state} {c.message}"

    try:
        save_latest(RaisingPolicy(after=25), ds_path)  # one warm-up prediction at load, 24 in the trial (~2.5 s)
        c.open()
        wait(lambda: c.state == State.READY, 60, "READY")
        c.run_policy()
        wait(lambda: c.recording and c.trials.source is not None, 30, "the trial", poll=False)
        wait(lambda: c.trials.failure() is not None, 30, "the policy's failure", poll=False)
        loop = c.takes.session.teleop
        why = c.trials.failure()
        assert why == "the policy stopped: it raised RuntimeError: the gripper head diverged; the followers hold"
        assert loop.source_failure == why
        wait(lambda: loop.stats.summary()["source_failure"] == why, 5, "the loop's next tick", poll=False)
        assert waist(follower, "goal_position") > 0.1  # the policy had driven the waist out
        time.sleep(0.1)
        goals = [s.get("goal_position") for s in follower.servos]
        ticks = loop.stats.ticks
        time.sleep(1.5)
        assert [s.get("goal_position") for s in follower.servos] == goals  # the followers hold
        assert loop.stats.ticks > ticks + 25 and loop.running and loop.fault is None  # the loop goes on
        assert c.state == State.RECORDING  # the app ends the trial at its next poll
        wait(lambda: c.state == State.REVIEW, 20, "the failed trial saved")
        assert f"the policy failed ({why}): a failure" in c.message, c.message
        a = Dataset(ds_path).episode(0).attrs
        assert a["trial"] == "policy" and a["success"] is False and a["outcome"] == "failure"
        assert a["outcome_reason"] == f"the policy failed: {why}" and a["judged_by"] == "rig"
        assert a["policy"]["kind"] == "raises" and a["policy"]["digest"] == policy_digest(latest_policy_path(ds_path))
        c.keep()
        wait(lambda: c.state == State.READY, 20, "READY again")  # the rig goes on: the leaders drive
        assert loop.source_failure is None and loop.running
    finally:
        c.close()
        policy_file.KINDS.pop("raises", None)

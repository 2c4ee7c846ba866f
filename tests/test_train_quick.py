"""The quick policy: a colour-free object locator, a decided gripper, the takes that hurt, the
report measured in success, and one clear line for each kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("mujoco")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from recorder import Dataset  # noqa: E402
from rig.train.data import JointInfo  # noqa: E402
from rig.train.quick import QuickConfig, QuickEpisode, train_quick  # noqa: E402
from rig.train.quickrun import takes_that_hurt  # noqa: E402
from rig.train.report import success_projection  # noqa: E402
from rig.train.stats import SuccessFigure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JOINTS = JointInfo(tuple(f"{s}_{j}" for s in ("left", "right") for j in
                         ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")),
                   tuple(i in (6, 13) for i in range(14)))
L_GRIP, R_GRIP = 6, 13


def _rig_train(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig", "train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# ---- the locator --------------------------------------------------------------------------------------

def test_locator_finds_a_repainted_cube_against_a_live_reference_without_a_colour_prior():
    from rig.sim.reference import render_take_starts
    from rig.sim.scene import object_poses
    from rig.train.locate import locate_by_colour, locate_by_difference

    seeds = [3, 11, 19, 27, 35, 43]
    blue = (0.15, 0.35, 0.85, 1.0)  # not the task's red: the locator must not care
    ref, frames = render_take_starts("transfer_cube", seeds, object_rgba=blue)
    assert ref.frame.shape == (240, 320, 3) and ref.arm_mask.any() and not ref.arm_mask.all()
    got = [locate_by_difference(f, ref.frame, ref.arm_mask) for f in frames]
    assert all(g.found for g in got)
    px = np.array([g.xy[0] for g in got])
    true = np.array([object_poses("transfer_cube", s)[0].pos[:2] for s in seeds])
    # the top camera looks straight down: image coordinates map to the table by an affine map
    a = np.c_[px, np.ones(len(px))]
    coef, *_ = np.linalg.lstsq(a, true, rcond=None)
    err_mm = np.abs(a @ coef - true).max() * 1000
    assert err_mm < 3.0, err_mm
    assert not any(locate_by_colour(f, "red").found for f in frames)  # a red prior would find nothing here
    # the empty reference itself holds no object
    assert not locate_by_difference(ref.frame, ref.frame, ref.arm_mask).found


def test_locator_finds_both_insertion_objects_left_to_right():
    from rig.sim.reference import render_take_starts
    from rig.sim.scene import object_poses
    from rig.train.locate import locate_by_difference

    seeds = [3, 11, 19, 27, 35, 43]
    ref, frames = render_take_starts("insertion", seeds, object_rgba=(0.15, 0.35, 0.85, 1.0))
    got = [locate_by_difference(f, ref.frame, ref.arm_mask, n=2) for f in frames]
    assert all(g.found for g in got)
    for k, name in enumerate(("socket", "peg")):  # the socket lies at -x, left in the top view
        px = np.array([g.xy[k] for g in got])
        true = np.array([p.pos[:2] for s in seeds for p in object_poses("insertion", s) if p.name == name])
        a = np.c_[px, np.ones(len(px))]
        coef, *_ = np.linalg.lstsq(a, true, rcond=None)
        assert np.abs(a @ coef - true).max() * 1000 < 3.0, name


# ---- the gripper head and phase ------------------------------------------------------------------------

def _take(index: int, rng: np.random.Generator, reach_s: float, *, retry: bool = False, success: bool = True,
          ticks: int = 300) -> QuickEpisode:
    """A synthetic take: the left arm reaches (its waist turns to 1 rad in ``reach_s``), the left
    gripper closes 0.2 s after it arrives, the right gripper lets go 0.5 s after that (a handover).
    The right gripper reads closed throughout and nothing moves during the hold: only phase tells
    "just closed" from "held for half a second"."""
    t = np.arange(ticks) / 50.0
    q = np.zeros((ticks, 14), np.float32)
    q[:, 0] = np.clip(t / reach_s, 0, 1)
    close_at = reach_s + 0.2
    action = np.concatenate([q[1:], q[-1:]])  # the command leads the state by a tick
    action[:, L_GRIP] = np.where(t < close_at, 1.0, 0.0)
    action[:, R_GRIP] = np.where(t < close_at + 0.5, 0.0, 1.0) + rng.normal(0, 0.03, ticks)
    if retry:  # the right gripper closed, opened, closed again before the handover
        action[:, R_GRIP] = np.where((t > 0.5) & (t < 1.0), 1.0, action[:, R_GRIP])
    q[:, L_GRIP] = np.concatenate([[1.0], action[:-1, L_GRIP]])
    q[:, R_GRIP] = 0.0
    dq = np.gradient(q, axis=0) * 50
    frame = np.full((24, 32, 3), 90, np.uint8)
    x = int(rng.integers(4, 26))
    frame[10:14, x:x + 4] = 200  # the object, somewhere else in every take
    return QuickEpisode(index, index, success, q, dq.astype(np.float32), action, t.astype(np.float32), frame, JOINTS)


def test_the_gripper_is_decided_from_phase_not_averaged():
    rng = np.random.default_rng(0)
    eps = [_take(i, rng, reach_s=float(rng.uniform(1.2, 2.6))) for i in range(10)]
    ref = np.full((24, 32, 3), 90, np.uint8)
    cfg = QuickConfig(steps=1000, hidden=64, layers=2, batch=128, lr=3e-3, k=5, q_noise=0.0, absolute=False,
                      velocity="joint", members=1, execute=None)  # the phase mechanism alone, one network
    policy = train_quick(eps, "", cfg, reference=ref)
    levels = policy.stats.levels[1]
    assert levels[0] < 0.1 and levels[-1] > 0.9  # closed and open found in the takes' commands
    now = [0.0]
    policy.clock = lambda: now[0]
    policy.reset()
    e = _take(99, rng, reach_s=1.9)  # a take it never saw
    img = e.first_frame[None]
    left_closed_at, right, left_cmd = None, [], 1.0
    for k in range(50):  # a prediction every 0.1 s along the take; the left gripper follows the policy's command
        now[0] = 0.1 * k
        q = e.q[5 * k].copy()
        q[L_GRIP] = left_cmd
        chunk = policy.predict_chunk(img, q, e.dq[5 * k])
        left_cmd = chunk[4, L_GRIP]
        if left_closed_at is None and chunk[0, L_GRIP] < 0.5:
            left_closed_at = now[0]
        right.append((now[0], chunk[:, R_GRIP]))
    levels = policy.stats.levels[1]
    assert all(np.all(np.isin(r, levels)) for _, r in right)  # always one of the levels: decided, never averaged
    assert left_closed_at is not None and 1.0 <= left_closed_at <= 3.5, left_closed_at
    # the right gripper's state never changes (it reads 0 throughout): only phase can open it, about 0.5 s
    # after the left closed
    opened = [t for t, r in right if r[0] == levels[-1]]
    assert opened, right
    assert 0.2 <= opened[0] - left_closed_at <= 1.5, (left_closed_at, opened[0])
    assert all(r[0] == levels[0] for t, r in right if t < left_closed_at)


# ---- the takes that hurt --------------------------------------------------------------------------------

def test_takes_that_hurt_name_a_retried_grasp_and_a_failure():
    rng = np.random.default_rng(1)
    eps = [_take(i, rng, 2.0) for i in range(5)]
    eps.append(_take(5, rng, 2.0, retry=True))
    eps.append(_take(6, rng, 2.0, success=False))
    hurt = takes_that_hurt(eps)
    assert list(hurt["retried grasp"]) == [5]
    assert "right gripper closed 2 times (most takes: 1)" in hurt["retried grasp"][5]
    assert list(hurt["failure"]) == [6]
    assert not hurt["idle"] and not hurt["outlier"]


def test_a_recipe_that_keeps_retried_grasps_trains_on_them_and_leaves_the_failures_out():
    from rig.train.quickrun import QuickRunConfig, run_quick
    from rig.train.report import summary_lines

    rng = np.random.default_rng(1)
    eps = [_take(i, rng, 2.0) for i in range(5)] + [_take(5, rng, 2.0, retry=True), _take(6, rng, 2.0, success=False)]
    tiny = dict(steps=2, hidden=16, layers=1, members=1, k=10)
    for keep, trained, says in ((False, [0, 1, 2, 3, 4], "retried grasp: 5 (left out)"),
                                (True, [0, 1, 2, 3, 4, 5], "retried grasp: 5 (trained on)")):
        rc = QuickRunConfig(quick=QuickConfig(keep_retried=keep, **tiny), fast_trials=0, curve=False)
        rep, _ = run_quick("synthetic.zarr", None, rc, episodes=eps)
        assert rep["trained_on"] == trained and rep["left_out"]["6"] == "failure", rep["left_out"]
        assert rep["config"]["keep_retried"] is keep
        assert any(line.endswith(says) for line in summary_lines(rep)), summary_lines(rep)


def _fast(successes: int, trials: int = 50) -> SuccessFigure:
    return SuccessFigure("fastsim", successes, trials)


def test_the_projection_counts_takes_to_the_target_rate():
    text, more = success_projection([(10, _fast(15)), (20, _fast(25)), (40, _fast(35))], 40, 0.8)
    assert more is not None and 5 <= more <= 60 and text.startswith(f"about {int(more)} more takes to reach 80 %")
    assert success_projection([(10, _fast(25)), (20, _fast(25))], 20)[1] is None  # not rising: no number invented
    assert success_projection([(20, _fast(45))], 20)[0].startswith("target reached")


# ---- rig train: the report and the bad input ---------------------------------------------------------------

@pytest.fixture(scope="module")
def labelled(sim_dataset, tmp_path_factory) -> Path:
    """The session's simulated takes, labelled successful (6 s is too short to finish the task)."""
    path = tmp_path_factory.mktemp("quick") / "labelled.zarr"
    shutil.copytree(sim_dataset, path)
    ds = Dataset(path)
    for i in ds.indices():
        ds.set_success(i, True)
    return path


def test_rig_train_reports_success_per_trial_the_curve_and_the_baselines(labelled, tmp_path):
    out = tmp_path / "report.json"
    r = _rig_train(str(labelled), "--steps", "20", "--fast-trials", "2", "--eval-seconds", "4", "--device", "cpu",
                   "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "closed-loop success:" in r.stdout and "fast sim estimate" in r.stdout
    rep = json.loads(out.read_text())
    s = rep["success"]
    assert s["kind"] == "fastsim" and s["label"] == "fast sim estimate (early: 2 trials)" and s["trials"] == 2
    assert 0.0 <= s["rate"] <= 1.0 and s["n"] == 2 and s["ci95"][1] - s["ci95"][0] > 0.5  # 2 trials: wide
    assert [t["seed"] for t in s["per_trial"]] == [1000, 1001]
    assert all(isinstance(t["success"], bool) for t in s["per_trial"])
    assert [p["takes"] for p in rep["curve"]] == [2, 4]  # a sub-training and the full run
    assert all(p["n"] == 2 and len(p["ci95"]) == 2 for p in rep["curve"])
    assert rep["projection"].startswith("the interval is too wide to project") and rep["more_takes"] is None
    e = rep["errors"]
    for key in ("joint_error", "gripper_error", "hold_joint_error", "mean_action_joint_error", "per_joint"):
        assert key in e
    assert e["hold_joint_error"] > 0 and e["mean_action_joint_error"] > 0
    assert rep["training"]["steps"] == 20 and rep["locator"]["method"] == "difference"
    assert set(rep["takes_that_hurt"]) == {"retried grasp", "failure", "idle", "outlier"}


def test_a_dataset_with_no_successful_take_is_one_clear_line(sim_dataset):
    r = _rig_train(str(sim_dataset), "--steps", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "none of the 4 takes" in r.stderr and "succeeded" in r.stderr


def test_takes_without_a_success_check_are_one_clear_line(labelled, tmp_path):
    path = tmp_path / "unlabelled.zarr"
    shutil.copytree(labelled, path)
    ds = Dataset(path)
    for i in ds.indices():
        ds.set_success(i, None)
    r = _rig_train(str(path), "--steps", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no success label" in r.stderr and "success check" in r.stderr


def test_episodes_without_the_locating_camera_are_one_clear_line(labelled):
    r = _rig_train(str(labelled), "--steps", "2", "--camera", "front_close")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has no camera 'front_close'" in r.stderr and "--camera" in r.stderr


def test_a_dataset_with_no_cameras_is_one_clear_line(tmp_path):
    cfg = (ROOT / "rig" / "configs" / "sim-aloha.toml").read_text()
    blocks = cfg.split("[[cameras]]")
    no_cams = blocks[0] + "[[" + blocks[-1].split("[[", 1)[1]  # every [[cameras]] table left out
    assert "[[cameras]]" not in no_cams and "[[arms]]" in no_cams
    toml = tmp_path / "no-cameras.toml"
    toml.write_text(no_cams)
    path = tmp_path / "nocam.zarr"
    rec = subprocess.run([sys.executable, "-m", "rig", "record", "--config", str(toml), "--episodes", "2",
                          "--seconds", "2", "--reset-seconds", "0", "--dataset", str(path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert all(not Dataset(path).episode(i).cameras for i in Dataset(path).indices())
    r = _rig_train(str(path), "--steps", "2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no camera 'top' (it has no cameras at all)" in r.stderr
    r = _rig_train(str(path), "--steps", "2", "--policy", "visuomotor", "--no-curve")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no camera" in r.stderr


def test_device_cuda_without_a_gpu_is_one_clear_line(labelled):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    r = _rig_train(str(labelled), "--steps", "2", "--device", "cuda")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no CUDA GPU" in r.stderr and "--device cpu" in r.stderr


def test_a_policy_state_round_trips(labelled):
    from rig.train.quick import QuickPolicy, load_quick_episodes

    eps = [dataclasses.replace(e, success=True) for e in load_quick_episodes(labelled, None)]
    ref = np.median([e.first_frame for e in eps], 0).astype(np.uint8)
    p = train_quick(eps, "transfer_cube", QuickConfig(steps=5, hidden=32, layers=1), reference=ref)
    again = QuickPolicy.from_state(p.state())
    again.reference = ref
    img = eps[0].first_frame[None]
    q, dq = eps[0].q[10], eps[0].dq[10]
    for pol in (p, again):
        pol.clock = lambda: 1.0
        pol.reset()
    assert np.allclose(p.predict_chunk(img, q, dq), again.predict_chunk(img, q, dq))
    assert p.cfg.cameras == ("top",) and p.cfg.image_hw == (240, 320) and p.start_q is not None
    assert len(p.net.members) == 3 and p.execute == 25  # three voting networks, a chunk sent 25 at a time


class _HoldPolicy:
    """Predicts the pose the trial starts from; says how its chunks are to be sent (``execute``)
    and counts the ticks it was asked at."""

    def __init__(self, execute: int | None, ensemble: float | None = None):
        from rig.sim.scene import START_ARM_POSE
        from rig.train.model import PolicyConfig

        self.cfg = PolicyConfig(n=14, k=10, cameras=(), image_hw=(60, 80))
        self.start_q = np.array([*START_ARM_POSE, 0.5] * 2, np.float32)
        self.execute, self.ensemble = execute, ensemble
        self.asked: list[float] = []
        self.clock = lambda: 0.0

    def predict_chunk(self, images, q, dq):
        self.asked.append(round(self.clock() * 50))
        return np.repeat(self.start_q[None], self.cfg.k, 0)


def test_fast_trials_and_the_loop_send_a_policys_chunks_on_its_own_schedule():
    from rig.config import load_config
    from rig.sources import PolicySource
    from rig.train.fastsim import _trial

    assert PolicySource(_HoldPolicy(7)).execute == 7  # the policy's own schedule...
    assert PolicySource(_HoldPolicy(7), execute=3).execute == 3  # ...unless the caller says
    assert PolicySource(_HoldPolicy(None)).execute == 5  # none said: half the chunk
    s = PolicySource(_HoldPolicy(None, ensemble=0.01))
    assert s.execute == 1 and s.ensemble == 0.01  # ensembling: a chunk every tick, as ACT
    policy = _HoldPolicy(7)
    clock = [0.0]
    policy.clock = lambda: clock[0]
    r = _trial(policy, load_config("sim-aloha"), "transfer_cube", 0, 1.0, clock)
    assert not r.success  # holding still does not move the cube
    assert r.stopped_before == "the cube lifted"  # the first of the task's stages, never reached
    assert policy.asked == list(range(0, 50, 7))  # the fast loop asked at the same ticks the rig's loop would


def test_the_apps_background_trainer_estimates_success_and_confirms_it_through_the_buses(labelled, tmp_path):
    """The app's trainer runs in a process of its own and its trials in children of that one (a
    renderer for the fast estimate, a world for the real-time trial): both must come back."""
    import time

    from rig.train.background import BackgroundTrainer

    path = tmp_path / "ds.zarr"
    shutil.copytree(labelled, path)
    with BackgroundTrainer(path, budget_s=2, curve=False, fast_trials=1, confirm_trials=1) as trainer:
        end = time.monotonic() + 400
        while time.monotonic() < end:
            s = trainer.status()
            assert s.state != "error", s.message
            if s.confirmed is not None:
                break
            time.sleep(0.5)
    assert s.success is not None and s.success["kind"] == "fastsim" and s.success["trials"] == 1
    # an early estimate, labelled so; one trial: the interval says how little it tells
    assert s.success["label"].startswith("fast sim estimate (early") and s.success["ci95"][1] - s.success["ci95"][0] > 0.7
    assert s.first_estimate_s is not None  # seconds from the newest take to the first estimate
    assert s.confirmed["kind"] == "realtime" and s.confirmed["trials"] == 1 and s.confirmed["n"] == 1
    assert s.confirmed["seeds"] == [1000]


@pytest.fixture(scope="module")
def insertion_takes(tmp_path_factory) -> Path:
    """Three short insertion takes recorded for real with `rig record` (the task's two objects),
    labelled successful (6 s is too short to finish the task)."""
    from tests import system

    system.require("render")
    path = tmp_path_factory.mktemp("insertion") / "insertion.zarr"
    out = subprocess.run([sys.executable, "-m", "rig", "record", "--task", "insertion", "--episodes", "3",
                          "--seconds", "6", "--reset-seconds", "1", "--dataset", str(path)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    ds = Dataset(path)
    for i in ds.indices():
        ds.set_success(i, True)
    return path


def test_the_apps_background_trainer_works_on_insertion(insertion_takes):
    """The app's trainer reads the task from its spec: on insertion it locates two objects, trains,
    estimates success in insertion's world and saves a policy `p` can load (kind quick, task insertion)."""
    import time

    from rig.sim.tasks import get_task
    from rig.train.background import BackgroundTrainer
    from rig.train.latest import latest_policy_path, load_latest
    from rig.train.policy_file import read_policy_file

    with BackgroundTrainer(insertion_takes, budget_s=2, curve=False, fast_trials=1, confirm_trials=0) as trainer:
        end = time.monotonic() + 400
        while time.monotonic() < end:
            s = trainer.status()
            assert s.state != "error", s.message
            if s.success is not None and latest_policy_path(insertion_takes).exists():
                break
            time.sleep(0.5)
    assert s.success is not None and s.success["kind"] == "fastsim" and s.success["n"] == 1
    payload = read_policy_file(latest_policy_path(insertion_takes))
    assert payload["kind"] == "quick" and payload["meta"]["task"] == "insertion"
    policy = load_latest(insertion_takes)
    assert policy.qcfg.n_objects == len(get_task("insertion").objects) == 2

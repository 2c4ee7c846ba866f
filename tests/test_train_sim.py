"""Closed-loop evaluation runs the real simulated world; background training; `rig train`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

from recorder import Dataset  # noqa: E402
from rig.train.background import BackgroundTrainer  # noqa: E402
from rig.train.data import EpisodeCache  # noqa: E402
from rig.train.trainer import TrainConfig, train_policy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_success_rate_runs_the_policy_in_the_simulated_world(sim_dataset):
    from rig.train.rollout import evaluate_in_sim

    policy = train_policy(EpisodeCache().load(sim_dataset)[:2], TrainConfig(steps=5))
    res = evaluate_in_sim(policy, "transfer_cube", trials=2, seed0=7, seconds=1.5)
    assert res.trials == 2 and res.seeds == [7, 8] and 0 <= res.successes <= 2
    for t in res.per_trial:
        # the loop ran against the world's buses at the control rate (a loaded machine skips some ticks)
        assert t.ticks + t.skipped_ticks >= 60 and t.ticks >= 10
        assert t.missed_reads < t.ticks
    assert res.rate == res.successes / 2


def test_the_success_check_passes_the_scripted_demonstration_through_the_same_loop():
    """A 0 % success rate means the policy failed, not the harness: the seed's scripted
    demonstration, sent through the same loop, clamps, buses and world, transfers the cube."""
    from rig.train.rollout import ScriptedPolicy, evaluate_in_sim

    res = evaluate_in_sim(ScriptedPolicy("transfer_cube"), "transfer_cube", trials=1, seed0=1000, seconds=16.0)
    assert res.successes == 1, res.per_trial
    t = res.per_trial[0]
    assert 5.0 < t.t_success_s < 16.0  # a real transfer takes seconds
    assert t.missed_reads < t.ticks


def _wait(trainer: BackgroundTrainer, pred, timeout: float = 240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = trainer.status()
        if pred(s):
            return s
        time.sleep(0.2)
    raise AssertionError(f"timed out; last status: {trainer.status()}")


def test_background_trainer_is_niced_and_retrains_on_a_new_episode(sim_dataset, tmp_path):
    path = tmp_path / "ds.zarr"
    shutil.copytree(sim_dataset, path)
    ds = Dataset(path)
    last = ds.indices()[-1]
    ds.discard(last)  # held back: "kept" later, as a collector would
    trainer = BackgroundTrainer(path, budget_s=2, nice=10, curve=False)
    trainer.start()
    try:
        first = _wait(trainer, lambda s: s.state == "done")
        assert os.getpriority(os.PRIO_PROCESS, trainer.pid) >= 10
        assert first.episodes == 3 and last not in first.result_episodes
        assert first.val_error and all(k.endswith(("_deg", "_pct")) for k in first.val_error)
        assert first.units["left_gripper_pct"] == "%" and first.progress == 1.0 and first.updated_ns > 0
        assert isinstance(first.flagged, list) and first.message.startswith("val error")
        assert first.torch_threads == 1  # at most one core for training while recording
        ds.set_status(last, "complete")
        trainer.notify_new_episode()
        second = _wait(trainer, lambda s: s.state == "done" and s.runs >= 2)
        assert second.episodes == 4 and last in second.result_episodes
    finally:
        trainer.stop()
    assert trainer.pid is None


def test_background_trainer_waits_for_two_episodes(tmp_path):
    Dataset.create(tmp_path / "empty.zarr")
    with BackgroundTrainer(tmp_path / "empty.zarr", budget_s=1) as trainer:
        s = _wait(trainer, lambda s: "waiting for episodes" in s.message, timeout=120)
        assert s.state == "idle" and s.val_error is None


def test_rig_train_headless_writes_a_report(sim_dataset, tmp_path):
    out = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "rig", "train", str(sim_dataset), "--policy", "visuomotor", "--steps", "20",
                        "--no-curve",
                        "--json", str(out), "--save", str(tmp_path / "policy.pt")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validation action error" in r.stdout and "training: 100 %" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["steps"] == 20 and len(rep["episodes"]) == 4 and rep["val"]["per_joint"]
    assert np.isfinite(rep["val"]["joint_error"]) and (tmp_path / "policy.pt").stat().st_size > 0


def test_rig_train_with_keypoints_ensembling_and_the_demonstration_reference(sim_dataset, tmp_path):
    out = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "rig", "train", str(sim_dataset), "--policy", "visuomotor", "--steps", "5",
                        "--no-curve",
                        "--keypoints", "4", "--no-velocity", "--eval-trials", "1", "--eval-seconds", "12",
                        "--ensemble", "0.01", "--eval-demo", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the scripted demonstrations through the same trials: 1/1" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["success"]["trials"] == 1 and rep["demonstrations"]["successes"] == 1
    for fig in (rep["success"], rep["demonstrations"]):  # every figure with its n and 95 % interval
        assert fig["n"] == 1 and 0.0 <= fig["ci95"][0] < fig["ci95"][1] <= 1.0
    # every tick predicted (ensembling) and still on time: the loop kept the control rate
    t = rep["success"]["per_trial"][0]
    assert t["ticks"] + t["skipped_ticks"] >= 500 and t["skipped_ticks"] < 50


def test_eval_options_without_trials_are_a_clear_error(sim_dataset):
    r = subprocess.run([sys.executable, "-m", "rig", "train", str(sim_dataset), "--eval-demo"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "add --eval-trials N" in r.stderr and "Traceback" not in r.stderr


def test_rig_train_without_torch_says_how_to_install(sim_dataset):
    code = ("import sys; sys.modules['torch'] = None; from rig.cli import main; "
            f"sys.exit(main(['train', {str(sim_dataset)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "pip install -e '.[train]'" in r.stderr and "Traceback" not in r.stderr


def test_too_few_episodes_is_a_clear_error(sim_dataset, tmp_path):
    path = tmp_path / "one.zarr"
    shutil.copytree(sim_dataset, path)
    ds = Dataset(path)
    for i in ds.indices()[1:]:
        ds.discard(i)
    r = subprocess.run([sys.executable, "-m", "rig", "train", str(path), "--policy", "visuomotor", "--steps", "2"],
                       capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "at least 2 kept episodes" in r.stderr

"""`rig trial`: the policy on the followers as recorded, judged trial episodes, and its success
figure with n and a 95 % interval.

On the simulated rig a policy trained for a few steps by `rig train --save` runs three trials and
the world judges them (a policy that barely trained fails: what matters here is that the world's
verdicts, the starts and the digest are recorded). On a hardware rig (a leader/follower pair on
emulated Dynamixel buses, no world) `--judge` answers each trial, and the operator's one key on
stdin does where no judge is given.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from recorder import Dataset  # noqa: E402
from rig.cli import main  # noqa: E402
from rig.train.data import EpisodeCache  # noqa: E402
from rig.train.latest import latest_policy_path, save_latest  # noqa: E402
from rig.train.stats import wilson  # noqa: E402
from rig.train.trainer import TrainConfig, train_policy  # noqa: E402
from rig.trials import arm_trials  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.rigs import SYNTHETIC_CAMERA, pair_buses, pair_toml  # noqa: E402


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rig(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


# ---- the simulated rig: the world judges ---------------------------------------------------------------


# Both kinds `rig train --save` writes load through the one loader (rig.train.latest.load_latest).
@pytest.mark.parametrize("kind", ["quick", "visuomotor"])
def test_on_the_simulated_rig_the_world_judges_three_recorded_trials(tmp_path, sim_dataset, kind):
    data = tmp_path / "takes.zarr"
    shutil.copytree(sim_dataset, data)
    policy = tmp_path / f"{kind}.pt"
    # A few steps: the test is about the trials, not the policy's skill. The 6 s takes do not
    # finish the task, so the quick policy is told to learn from every take.
    train = rig("train", str(data), "--policy", kind, "--steps", "5", "--no-curve", "--fast-trials", "0",
                *(["--keep-all-takes"] if kind == "quick" else []), "--save", str(policy))
    assert train.returncode == 0, train.stdout + train.stderr
    before = Dataset(data).indices()
    report = tmp_path / "trials.json"
    out = rig("trial", str(data), "--policy", str(policy), "--trials", "3", "--seconds", "1.5",
              "--reset-seconds", "0.2", "--json", str(report))
    assert out.returncode == 0, out.stdout + out.stderr

    ds = Dataset(data)
    new = [i for i in ds.indices() if i not in before]
    assert len(new) == 3
    seeds_before = {ds.episode(i).attrs.get("seed") for i in before}
    digest = sha256(policy)
    world = []
    for i in new:
        a = ds.episode(i).attrs
        assert a["trial"] == "policy" and a["status"] == "complete"
        assert a["policy"]["digest"] == digest and a["policy"]["path"] == str(policy)
        assert a["judged_by"] == "world" and a["outcome"] in ("success", "failure")
        assert a["success"] is (a["outcome"] == "success")
        start = a["start"]
        assert start["seed"] == a["seed"] and start["seed"] not in seeds_before  # unseen scenes
        assert set(start["objects"]) == {"box"} and len(start["objects"]["box"]) == 3
        assert len(start["followers_q"]) == 14
        world.append(a["outcome"])
    assert len({ds.episode(i).attrs["seed"] for i in new}) == 3  # each trial its own start

    r = json.loads(report.read_text())
    assert [t["episode"] for t in r["trials"]] == new and [t["outcome"] for t in r["trials"]] == world
    ok = world.count("success")
    assert r["policy_digest"] == digest
    assert r["success"]["trials"] == 3 and r["success"]["successes"] == ok and r["success"]["kind"] == "arms"
    assert r["success"]["ci95"] == pytest.approx(list(wilson(ok, 3)))
    assert f"trials on the arms: {ok}/3" in out.stdout and "95 % CI" in out.stdout
    assert arm_trials(data, digest).trials == 3 and arm_trials(data, "another").trials == 0


# ---- hardware: the emulated pair, no world --------------------------------------------------------------


@pytest.fixture
def pair(tmp_path, emulated):
    """A pair on emulated buses with two recorded takes and a policy trained on them for a few steps,
    saved where quick-train saves its latest (`rig trial` finds it without --policy)."""
    leader, follower = pair_buses(emulated)
    config = tmp_path / "pair.toml"
    config.write_text(pair_toml(leader.port, follower.port, missed_reads_to_stop=125) + SYNTHETIC_CAMERA)
    data = tmp_path / "takes.zarr"
    assert main(["record", "--config", str(config), "--episodes", "2", "--seconds", "1", "--reset-seconds", "0.2",
                 "--dataset", str(data)]) == 0
    policy = train_policy(EpisodeCache().load(data), TrainConfig(steps=2, k=10, batch=8, width=8, hidden=32))
    save_latest(policy, data)
    return config, data, follower


def test_on_hardware_the_judge_answers_each_trial_and_the_episodes_keep_its_answers(tmp_path, pair, capsys):
    config, data, follower = pair
    answers = tmp_path / "answers.txt"
    answers.write_text("success\nfailure the cube slipped\nskip\n")
    report = tmp_path / "trials.json"
    capsys.readouterr()
    rc = main(["trial", str(data), "--config", str(config), "--trials", "3", "--seconds", "1", "--reset-seconds",
               "0.2", "--judge", f"sed -n \"${{RIG_TRIAL}}p\" {answers}", "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert follower.servo(1).get("torque_enable") == 0  # the followers are released at the end

    ds = Dataset(data)
    digest = sha256(latest_policy_path(data))
    got = []
    for i in (2, 3, 4):
        a = ds.episode(i).attrs
        assert a["trial"] == "policy" and a["judged_by"] == "judge" and a["policy"]["digest"] == digest
        assert "seed" not in a["start"] and len(a["start"]["followers_q"]) == 4  # no world: the arms' start
        got.append((a["outcome"], a["outcome_reason"], a["success"]))
    assert got == [("success", "", True), ("failure", "the cube slipped", False), ("skip", "", None)]

    r = json.loads(report.read_text())
    assert r["success"]["trials"] == 2 and r["success"]["successes"] == 1 and r["skipped"] == 1  # a skip is no trial
    assert r["success"]["ci95"] == pytest.approx(list(wilson(1, 2)))
    assert [t["outcome"] for t in r["trials"]] == ["success", "failure", "skip"]
    assert "trials on the arms: 1/2 = 50 % (95 % CI" in out and "1 skipped" in out
    assert arm_trials(data, digest).to_dict() == r["success"]

    # `rig train` leads its report with the best success signal: these trials on the arms, of the
    # policy file it is about to replace (no world here: no estimate to fall back on).
    capsys.readouterr()
    train_json = tmp_path / "train.json"
    assert main(["train", str(data), "--policy", "visuomotor", "--steps", "1", "--no-curve", "--save",
                 str(latest_policy_path(data)), "--json", str(train_json)]) == 0
    out = capsys.readouterr().out
    assert "success (trials on the arms): 1/2 = 50 % (95 % CI 9-91 %, n=2)" in out, out
    assert out.index("success (trials on the arms)") < out.index("policy: ")
    rep = json.loads(train_json.read_text())
    assert rep["success_best"] == r["success"] and rep["success_arms"]["kind"] == "arms"
    assert arm_trials(data, sha256(latest_policy_path(data))).trials == 0  # a new policy: no trials yet

    # A judge that answers something else: one line naming it, exit 2; the trial stays on disk unjudged.
    rc = main(["trial", str(data), "--config", str(config), "--trials", "1", "--seconds", "0.5",
               "--judge", "echo maybe"])
    err = capsys.readouterr().err
    assert rc == 2 and "'maybe'" in err and "success, failure or skip" in err and "Traceback" not in err
    a = Dataset(data).episode(5).attrs
    assert a["trial"] == "policy" and "outcome" not in a and a["success"] is None


def test_on_hardware_without_a_judge_the_operator_answers_one_key(tmp_path, pair, capsys, monkeypatch):
    config, data, _ = pair
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\nf\n"))  # a stray key first: asked again
    rc = main(["trial", str(data), "--config", str(config), "--trials", "1", "--seconds", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "s success / f failure / k skip?" in out and "answer s (success), f (failure) or k (skip)" in out
    a = Dataset(data).episode(2).attrs
    assert (a["outcome"], a["judged_by"], a["success"]) == ("failure", "operator", False)
    assert "trials on the arms: 0/1 = 0 % (95 % CI 0-79 %, n=1)" in out


def test_the_help_names_the_command_and_its_judge(capsys):
    for argv in (["--help"], ["trial", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    out = capsys.readouterr().out
    assert "trial " in out and "95 % interval" in out and "--judge CMD" in out and "RIG_TRIAL (1..N)" in out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "takes.zarr"
    assert main(["trial", str(data), "--trials", "0"]) == 2
    assert main(["trial", str(data), "--config", "sim-handheld"]) == 2
    assert main(["trial", str(data), "--policy", str(tmp_path / "none.pt")]) == 2  # before any rig starts
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert "--trials must be >= 1" in err[0] and "no followers" in err[1] and "no trained policy at" in err[2]
    assert not data.exists()  # nothing was created

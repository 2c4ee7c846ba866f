"""Leader-follower alignment check: pure comparison, and automatic on the simulated rig."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.check import compare_pair


def test_compare_flags_joints_over_threshold_and_wraps_angles():
    lq = np.array([0.0, math.radians(179.0), 0.5, 0.40])
    fq = np.array([math.radians(6.0), math.radians(-179.0), 0.5, 0.55])
    rows = compare_pair("f", "l", ["waist", "roll", "elbow"], lq, fq, 3, threshold_deg=5.0, gripper_threshold=0.1)
    by = {r.joint: r for r in rows}
    assert by["waist"].flagged and by["waist"].diff == pytest.approx(6.0)
    assert not by["roll"].flagged and by["roll"].diff == pytest.approx(2.0)  # across +-180, the short way
    assert not by["elbow"].flagged
    assert by["gripper"].unit == "%" and by["gripper"].flagged and by["gripper"].diff == pytest.approx(15.0)


def test_sim_check_runs_from_known_poses_and_catches_a_bad_calibration():
    """Both arms of each pair are driven to the same known poses in the world's own joint
    convention; the left follower carries a wrong calibration (waist zero 10 deg off, elbow
    reversed), which the check must flag, and nothing else."""
    pytest.importorskip("mujoco")
    from rig.calibrating import sim_check
    from rig.config import load_config, parse_config

    raw = load_config("sim-aloha").raw
    raw = {**raw, "arms": [dict(a) for a in raw["arms"]]}
    left = next(a for a in raw["arms"] if a["name"] == "left_follower")
    cal = dict(left["calibration"])
    cal["zero"] = [2048 + round(math.radians(10) * 4096 / (2 * math.pi)), *cal["zero"][1:]]
    cal["sign"] = [1, 1, -1, 1, 1, 1]
    left["calibration"] = cal
    config = parse_config(raw, "sim-aloha (left follower miscalibrated)")
    reports = sim_check(config)
    assert [r.pose for r in reports] == ["start", "reach", "twist"]
    for r in reports:
        flagged = {(x.follower, x.joint) for x in r.flagged}
        assert flagged == {("left_follower", "waist"), ("left_follower", "elbow")}, r.format()
        rows = {(x.follower, x.joint): x for x in r.rows}
        assert rows[("left_follower", "waist")].diff == pytest.approx(-10.0, abs=1.0)
        right = [x for x in r.rows if x.follower == "right_follower" and x.unit == "deg"]
        assert max(abs(x.diff) for x in right) < 1.5, r.format()  # a right calibration agrees closely
        assert "2 joint(s) disagree" in r.format()


def test_hardware_check_with_limp_arms_on_emulated_buses(tmp_path, emulated):
    """The hardware flow: both arms limp, the operator poses them, Enter compares, q ends."""
    import argparse
    import io

    from rig.commands.calibrate import _hardware_check
    from tests.rigs import pair_buses, pair_config, pose_leader

    leader, follower = pair_buses(emulated)
    config = pair_config(tmp_path, leader, follower)
    for s in follower.servos:
        s.external_motion = True  # posed by hand, not by its motor

    def pose_both():
        with leader.lock, follower.lock:
            pose_leader(leader, [2048 + 300, 2048 - 200, 2048 + 100], 2000)
            for sid, t in ((1, 2048 + 300), (2, 2048 - 200), (3, 2048 - 200), (4, 2048 + 100 + 180)):
                follower.servo(sid).set_present(t)  # the elbow is posed ~16 deg off
            follower.servo(5).set_present(1643 + (2000 - 1602) / (2249 - 1602) * (3020 - 1643))

    class Script:
        def __init__(self):
            self.steps = [(pose_both, ""), (None, "q")]

        def poll(self):
            move, answer = self.steps.pop(0)
            if move:
                move()
            return answer

    out = io.StringIO()
    args = argparse.Namespace(threshold=5.0, gripper_threshold=0.1)
    assert _hardware_check(config, args, Script(), out) == 1
    text = out.getvalue()
    assert "Followers and leaders are limp" in text
    assert "elbow" in text and "<-- over 5 deg" in text and "1 joint(s) disagree" in text
    assert all(not s.torque_enabled for s in follower.servos)

"""Teleop loop end to end on emulated buses, through the real SDK."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rig.session import RigSession
from rig.teleop import TeleopFault
from rig.ticks import TickQueue
from tests.rigs import FOLLOWER_GRIPPER, pair_buses, pair_config, pose_leader

RAD = 4096 / (2 * math.pi)


def records_of(sink: TickQueue):
    recs = sink.drain()
    assert recs, "the loop emitted no tick records"
    return recs


def test_follower_tracks_the_leader(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    sink = TickQueue(10_000)
    pose_leader(leader, [2048 + 0.3 * RAD, 2048 - 0.2 * RAD, 2048 + 0.5 * RAD], 1602)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.run(1.5)
        servo = {i: follower.servo(i) for i in (1, 2, 3, 4, 5)}
        assert all(v.torque_enabled for v in servo.values())
    recs = records_of(sink)
    last = recs[-1]
    np.testing.assert_allclose(last.leader_q, [0.3, -0.2, 0.5, 0.0], atol=2e-3)
    np.testing.assert_allclose(last.action, last.leader_q, atol=1e-6)
    np.testing.assert_allclose(last.follower_q, last.leader_q, atol=0.01)  # tolerance: 0.01 rad, 0.01 gripper
    # The follower's motors got the leader pose in their own ticks; the gripper mapped range to range.
    assert abs(follower.servo(2).get("goal_position") - (2048 - 0.2 * RAD)) <= 1
    assert abs(follower.servo(3).physical_position - (2048 - 0.2 * RAD)) <= 3  # shadow follows via secondary ID
    assert abs(follower.servo(5).get("goal_position") - FOLLOWER_GRIPPER[1]) <= 1
    assert follower.servo(5).get("operating_mode") == 5 and follower.servo(5).get("current_limit") == 300
    # Ctrl-C / normal exit: followers limp, leaders limp.
    assert not any(follower.servo(i).torque_enabled for i in (1, 2, 3, 4, 5))
    assert not any(leader.servo(i).torque_enabled for i in (1, 2, 3, 4, 5))


def test_ticks_are_scheduled_on_absolute_deadlines(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    sink = TickQueue(10_000)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        summary = s.run(1.0)
    recs = records_of(sink)
    t0 = recs[0].t_deadline_ns
    for r in recs:
        assert r.t_deadline_ns == t0 + r.tick * 20_000_000  # no drift: due at t0 + k * period
        assert r.t_start_ns >= r.t_deadline_ns
    # Every deadline in the second is either run or counted as skipped (a starved machine skips).
    assert summary["ticks"] == len(recs) and 48 <= len(recs) + summary["skipped_ticks"] <= 51


def test_soft_engage_ramps_from_the_follower_pose(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=1.0)
    sink = TickQueue(10_000)
    pose_leader(leader, [2048 + 0.8 * RAD, 2048, 2048])
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.run(1.6)
    recs = records_of(sink)
    waist = np.array([r.action[0] for r in recs])
    engage = np.array([r.engage for r in recs])
    assert waist[0] < 0.01  # starts at the follower's own pose, not the leader's
    assert np.all(np.diff(waist) >= -1e-9)  # monotonic ramp, no overshoot
    halfway = waist[np.searchsorted(engage, 0.5)]
    assert 0.2 < halfway < 0.6  # smoothstep midpoint: half the way there
    assert waist[-1] == pytest.approx(0.8, abs=1e-3)
    assert engage[-1] == 1.0


def test_safety_clamps_joint_limits_and_step_size(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=0.0, max_step_rad=0.05)
    sink = TickQueue(10_000)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.start(1.2)
        time.sleep(0.3)
        pose_leader(leader, [2048 + 2.0 * RAD, 2048 + 1.0 * RAD, 2048])  # waist past its 1.0 rad limit; a jump
        s.wait()
    recs = records_of(sink)
    act = np.array([r.action for r in recs])
    assert np.max(np.abs(np.diff(act[:, :3], axis=0))) <= 0.05 + 1e-6
    assert act[:, 0].max() == pytest.approx(1.0)  # clamped at the upper limit
    assert act[-1, 1] == pytest.approx(1.0, abs=1e-3)  # reached in steps of 0.05


def test_dropped_replies_hold_the_arm_and_are_counted(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    sink = TickQueue(10_000)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.start(1.5)
        time.sleep(0.6)
        # Enough lost replies to exhaust a tick's tries, then the bus recovers.
        leader.drop_replies(6)
        summary = s.wait()
    recs = records_of(sink)
    missed = [r for r in recs if r.missed & 0b01]  # the leader is bit 0, the follower bit 1
    assert len(missed) >= 1
    assert summary["bus_errors"]["leader"] == len(missed)  # every miss is counted
    for m in missed:
        i = recs.index(m)
        np.testing.assert_array_equal(m.action, recs[i - 1].action)  # held its last target
    assert any(r.tick > missed[-1].tick and not r.missed for r in recs)  # the bus recovered and the loop went on


def test_too_many_missed_reads_stop_safely(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, missed_reads_to_stop=5)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        s.start(5)
        time.sleep(0.7)
        follower.drop_replies(1000, servo_id=4)
        # Which error comes last (servo 4's timeout, or a late reply from a starved machine) is timing;
        # what matters is the count, the stop and the torque.
        with pytest.raises(TeleopFault, match=r"^arm follower: 5 reads in a row failed; stopped safely\. Last error: "):
            s.wait()
        follower.drop_replies(0)
        follower._drop.clear()
    assert s.shutdown_report["follower"] == "stopped; torque off confirmed on 5 of 5"
    assert not any(follower.servo(i).torque_enabled for i in (1, 2, 3, 4, 5))


def test_hardware_error_stops_with_the_decoded_reason(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        s.start(5)
        time.sleep(0.7)
        follower.servo(2).set_hardware_error(1 << 2)  # overheating
        with pytest.raises(TeleopFault, match=r"arm follower: .*servo 2.*overheating.*cool down"):
            s.wait()
    assert not any(follower.servo(i).torque_enabled for i in (1, 2, 3, 4, 5))


def test_unplugged_follower_stops_the_loop(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        s.start(5)
        time.sleep(0.7)
        t0 = time.monotonic()
        follower.unplug()
        with pytest.raises(TeleopFault, match="arm follower: .*vanished"):
            s.wait()
        assert time.monotonic() - t0 < 3.0  # at once: no waiting out timeouts
    assert s.shutdown_report["follower"].startswith("unreachable")


def test_uncalibrated_arm_is_refused(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    path = tmp_path / "raw.toml"
    source = pair_config(tmp_path, leader, follower).source
    body = Path(source).read_text().split("[arms.calibration]")
    path.write_text(body[0] + "[[arms]]" + body[1].split("[[arms]]", 1)[1])  # drop the leader's calibration
    from rig.config import load_config
    cfg = load_config(path)
    with pytest.raises(Exception, match=r"arm 'leader' is not calibrated.*rig calibrate arm leader"):
        RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}).open()
    assert not any(follower.servo(i).torque_enabled for i in (1, 2, 3, 4, 5))


def test_ctrl_c_on_the_command_line_leaves_torque_off(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    stats = tmp_path / "stats.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rig", "teleop", "--config", cfg.source, "--stats-json",
                             str(stats)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 20
    while not follower.servo(1).torque_enabled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert follower.servo(1).torque_enabled, proc.stdout.read() if proc.poll() is not None else "no torque"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "follower: stopped; torque off confirmed on 5 of 5" in out
    assert not any(follower.servo(i).torque_enabled for i in (1, 2, 3, 4, 5))
    import json
    summary = json.loads(stats.read_text())
    assert summary["ticks"] > 10 and set(summary) >= {"achieved_rate_hz", "period_error_ms", "overruns",
                                                        "bus_errors", "tick_cpu_ms"}


def test_a_one_tick_leader_glitch_is_held_but_a_real_jump_is_followed(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=0.0)
    sink = TickQueue(10_000)
    waist = leader.servo(1)
    real_read = waist.read
    glitch = {"left": 0}

    def mangled(address, length, now):  # one reply whose position reads 10 turns away
        err, data = real_read(address, length, now)
        if glitch["left"] and length >= 10:
            glitch["left"] -= 1
            data = data[:6] + (2048 + 40960).to_bytes(4, "little") + data[10:]
        return err, data

    waist.read = mangled
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.start(2.5)
        time.sleep(0.5)
        glitch["left"] = 1
        time.sleep(0.5)
        pose_leader(leader, [2048 + 1.5 * RAD, 2048, 2048])  # a real, sustained jump
        summary = s.wait()
    recs = records_of(sink)
    assert summary["glitches"] == {"leader": 2}  # the mangled read, then the first read of the jump
    assert max(abs(r.leader_q[0]) for r in recs) < 1.6  # 10 turns never reached the records
    assert recs[-1].leader_q[0] == pytest.approx(1.5, abs=1e-3)  # the real jump was accepted


def test_teleop_on_the_handheld_rig_reports_the_gripper_stream(tmp_path):
    """A handheld rig has no followers to mirror onto: `rig teleop` streams its gripper (the
    firmware's host build) and reports the figures a collector checks before recording."""
    import json

    stats = tmp_path / "stats.json"
    out = subprocess.run([sys.executable, "-m", "rig", "teleop", "--config", "sim-handheld", "--duration", "3",
                          "--stats-json", str(stats)], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "has no followers to mirror onto: streaming its handheld gripper" in out.stdout
    assert " Hz  jaw " in out.stdout and "clock drift" in out.stdout  # the live status line
    g = json.loads(stats.read_text())["gripper"]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == g  # the last line is the summary
    assert g["samples"] > 50 and g["lost"] == 0 and g["configured_rate_hz"] == 200
    assert 0.0 <= g["jaw"]["min"] < g["jaw"]["max"] <= 1.0  # the simulated hand opens and closes the jaw


def test_teleop_on_a_rig_with_nothing_to_drive_is_one_clear_error(tmp_path):
    path = tmp_path / "leaders-only.toml"
    path.write_text('name = "leaders-only"\n\n[[arms]]\nname = "leader"\nrole = "leader"\nport = "/dev/nosuch"\n'
                    'allow_uncalibrated = true\njoints = [ { name = "waist", id = 1, model = "xm430-w350" } ]\n')
    out = subprocess.run([sys.executable, "-m", "rig", "teleop", "--config", str(path), "--duration", "1"],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no follower arms to mirror onto and no handheld gripper" in out.stderr

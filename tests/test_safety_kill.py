"""A `rig teleop` killed outright (kill -9) leaves the followers stopped by their Bus Watchdog.

The emulated servos live in this test's process, which outlives the killed `rig teleop`; the
test reads when and where they stopped from the emulator's own state. How fast they stop is a
figure for benchmarks/bench_watchdog.py; here the bound only catches "never stopped".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rigs import WavingHand, pair_buses, pair_config

from rig.session import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_kill_9_of_teleop_leaves_followers_stopped_by_their_watchdog(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    # 1 s, not the 100 ms default: a loaded test machine can stall the loop longer than 100 ms
    # (the loop then stops with "stopped on their bus watchdog"); the benchmark times 100 ms.
    cfg = pair_config(tmp_path, leader, follower, watchdog_ms=1000, engage_seconds=0.2)
    hand = WavingHand(leader)
    hand.start()
    proc = subprocess.Popen([sys.executable, "-m", "rig", "teleop", "--config", cfg.source],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        servos = [follower.servo(i) for i in (1, 2, 3, 4, 5)]
        armed = wait_for(lambda: all(s.get("bus_watchdog") == 50 and s.torque_enabled for s in servos), 30)
        assert armed, proc.stdout.read() if proc.poll() is not None else "the watchdog was never armed"
        time.sleep(1.0)  # the follower now tracks the waving leader
        before = servos[0].physical_position
        moved = wait_for(lambda: abs(servos[0].physical_position - before) > 5, 5)
        assert moved, (proc.stdout.read() if proc.poll() is not None else "the follower never moved",
                       [s.get("bus_watchdog") for s in servos], servos[0].get("goal_position"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(lambda: all(s.watchdog_fired for s in servos), 10), "the watchdog never fired"
        for s in servos:
            assert s.get("bus_watchdog") == -1  # 98 reads -1
            assert s.torque_enabled  # stopped and holding, not dropped
            assert s.watchdog_fired_at - s.last_instruction >= 1.0  # not before its interval
        stopped = [s.physical_position for s in servos]
        time.sleep(0.3)
        assert [round(s.physical_position) for s in servos] == [round(x) for x in stopped]  # it stays put
        assert servos[0].get("goal_position") == round(stopped[0])
    finally:
        hand.stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unplugged_follower_adapter_stops_the_arm_on_its_watchdog(emulated, tmp_path):
    from rig.session import RigSession
    from rig.teleop import TeleopFault

    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)  # watchdog_ms = 2000 (tests/rigs.py)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        s.start(10)
        servos = [follower.servo(i) for i in (1, 2, 3, 4, 5)]
        assert wait_for(lambda: s.teleop.stats.ticks > 5, 10)  # the loop drives: the watchdog is armed
        assert all(sv.get("bus_watchdog") == 100 for sv in servos)
        follower.unplug()
        with pytest.raises(TeleopFault, match="vanished"):
            s.wait()
    report = s.shutdown_report["follower"]
    assert report.startswith("unreachable") and report.endswith("their bus watchdog stops them within 2000 ms")
    assert wait_for(lambda: all(sv.watchdog_fired for sv in servos), 10)
    assert all(sv.torque_enabled and sv.get("bus_watchdog") == -1 for sv in servos)


def test_a_fault_on_the_command_line_says_which_servo_did_not_confirm_torque_off(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, missed_reads_to_stop=5)
    proc = subprocess.Popen([sys.executable, "-m", "rig", "teleop", "--config", cfg.source],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert wait_for(lambda: follower.servo(1).get("bus_watchdog") == 100, 30), "the loop never started"
        time.sleep(0.5)
        follower.drop_replies(100_000, servo_id=4)  # servo 4 goes deaf on the way back: no reply ever again
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "arm follower: 5 reads in a row failed" in lines[0]
    assert lines[0].endswith("[follower: servo 4 did not confirm torque off (4 of 5 confirmed); its bus watchdog "
                             "stops it within 2000 ms; switch the arm's power off]"), lines[0]
    assert not any(follower.servo(i).torque_enabled for i in (1, 2, 3, 5))  # the others confirmed

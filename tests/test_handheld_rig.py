"""The handheld gripper in the rig: recorded into episodes, buttons start takes, and a leader."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from drivers.dynamixel.emulator import ServoSpec
from recorder import Dataset
from rig.config import load_config
from rig.session import RigSession
from rig.ticks import TickQueue
from tests.apps import handheld_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.system("cc")  # the gripper stand-in is its firmware built here
def test_record_handheld_takes_with_the_gripper_button(tmp_path):
    """The stand-in presses button 0 twice: one take starts and stops without a keyboard."""
    ds = tmp_path / "hand.zarr"
    cfg = handheld_config(tmp_path / "hand.toml", "hand-test", ["--at", "1.5:press 0 100", "--at", "3.5:press 0 100"])
    out = subprocess.run([sys.executable, "-m", "rig", "record", "--config", str(cfg), "--episodes", "1",
                          "--seconds", "20", "--button", "--dataset", str(ds)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "press the gripper's record button" in out.stdout
    ep = Dataset(ds).episode(0)
    g = ep.read_stream("gripper")
    duration = (g["t_ns"][-1] - g["t_ns"][0]) / 1e9
    # Between the two presses (device time 1.5 s and 3.5 s), not the 20 s cap, on the gripper's own
    # clock: how late the host saw each press is the machine's load.
    t_dev = g["t_device_us"]
    assert 1.5e6 <= t_dev[0] < 3.5e6 and 3.4e6 <= t_dev[-1] < 10e6, (t_dev[0], t_dev[-1])
    assert np.all(np.diff(g["seq"]) == 1)  # no sample lost
    assert set(g) >= {"jaw", "jaw_rad", "trigger", "buttons", "accel", "gyro", "t_device_us", "t_ns"}
    assert g["accel"].shape[1] == 3
    # Device time is stored beside host time, both rising together.
    dev = (g["t_device_us"][-1] - g["t_device_us"][0]) / 1e6
    assert dev == pytest.approx(duration, rel=0.2)
    frames = ep.frame_times("wrist")["t_ns"]
    assert len(frames) > 10 and g["t_ns"][0] - 0.2e9 < frames[0] < g["t_ns"][-1]
    assert zarr.open_group(str(ep.path), mode="r").attrs["status"] == "complete"


@pytest.mark.system("cc")
def test_gripper_leads_a_follower_gripper(emulated, tmp_path):
    follower = emulated([ServoSpec(1, model="xm430-w350", position=1643)], name="follower-gripper")
    path = tmp_path / "lead.toml"
    path.write_text(textwrap.dedent(f"""\
        name = "hand-leads"
        [safety]
        engage_seconds = 0.3
        missed_reads_to_stop = 25
        [gripper]
        port = "standin"
        standin_args = ["--at", "0:jaw 0.75"]
        [[arms]]
        name = "hand"
        role = "leader"
        device = "handheld"
        [[arms]]
        name = "follower"
        role = "follower"
        leader = "hand"
        port = "{follower.port}"
        gripper_current_limit = 300
        joints = [ {{ name = "gripper", id = 1, model = "xm430-w350", gripper = true }} ]
        [arms.calibration]
        gripper_open = 3020
        gripper_closed = 1643
        """))
    cfg = load_config(path)
    sink = TickQueue(1000)
    with RigSession(cfg, sink=sink, ports={"follower": follower.port}) as s:
        s.run(1.5)
        time.sleep(0.1)
    last = sink.drain()[-1]
    assert last.leader_q[0] == pytest.approx(0.75, abs=0.03)
    assert last.action[0] == pytest.approx(last.leader_q[0], abs=1e-6)
    goal = follower.servo(1).get("goal_position")
    assert goal == pytest.approx(1643 + 0.75 * (3020 - 1643), abs=45)

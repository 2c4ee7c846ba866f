"""Small rigs on emulated buses for teleop tests: one leader/follower pair, 3 joints + gripper."""

from __future__ import annotations

import math
import textwrap
import threading
import time
from pathlib import Path

from drivers.dynamixel.emulator import EmulatedBus, ServoSpec
from rig.config import RigConfig, load_config

LEADER_GRIPPER = (2249, 1602)  # open, closed ticks
FOLLOWER_GRIPPER = (3020, 1643)


# a small synthetic wrist camera, for a pair that a policy needs to see
SYNTHETIC_CAMERA = """
[[cameras]]
name = "wrist"
kind = "synthetic"
width = 160
height = 120
fps = 15
"""


def pair_toml(leader_port: str, follower_port: str, **safety) -> str:
    # Emulators share the test process and 2 busy cores: ride out scheduling stalls unless a test
    # is about faults (those set missed_reads_to_stop themselves).
    safety = {"engage_seconds": 0.5, "missed_reads_to_stop": 25, "watchdog_ms": 2000, **safety}
    safety_lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in safety.items())
    return textwrap.dedent("""\
        name = "test-pair"
        rate_hz = 50

        [safety]
        """) + safety_lines + textwrap.dedent(f"""

        [[arms]]
        name = "leader"
        role = "leader"
        port = "{leader_port}"
        joints = [
          {{ name = "waist", id = 1, model = "xm430-w350" }},
          {{ name = "shoulder", id = 2, model = "xm430-w350", shadow_id = 3 }},
          {{ name = "elbow", id = 4, model = "xm430-w350" }},
          {{ name = "gripper", id = 5, model = "xc430-w150", gripper = true }},
        ]
        [arms.calibration]
        zero = [2048, 2048, 2048]
        sign = [1, 1, 1]
        gripper_open = {LEADER_GRIPPER[0]}
        gripper_closed = {LEADER_GRIPPER[1]}

        [[arms]]
        name = "follower"
        role = "follower"
        leader = "leader"
        port = "{follower_port}"
        gripper_current_limit = 300
        joints = [
          {{ name = "waist", id = 1, model = "xm540-w270", lower = -1.0, upper = 1.0 }},
          {{ name = "shoulder", id = 2, model = "xm540-w270", shadow_id = 3 }},
          {{ name = "elbow", id = 4, model = "xm540-w270" }},
          {{ name = "gripper", id = 5, model = "xm430-w350", gripper = true }},
        ]
        [arms.calibration]
        zero = [2048, 2048, 2048]
        sign = [1, 1, 1]
        gripper_open = {FOLLOWER_GRIPPER[0]}
        gripper_closed = {FOLLOWER_GRIPPER[1]}
        """)


def pair_buses(emulated) -> tuple[EmulatedBus, EmulatedBus]:
    leader = emulated([ServoSpec(1), ServoSpec(2), ServoSpec(3, secondary_id=2), ServoSpec(4),
                       ServoSpec(5, model="xc430-w150", position=LEADER_GRIPPER[0])], name="leader")
    follower = emulated([ServoSpec(1, model="xm540-w270"), ServoSpec(2, model="xm540-w270"),
                         ServoSpec(3, model="xm540-w270", secondary_id=2), ServoSpec(4, model="xm540-w270"),
                         ServoSpec(5, model="xm430-w350", position=FOLLOWER_GRIPPER[0])], name="follower")
    for s in leader.servos:
        s.external_motion = True  # a hand moves the leader, not its motor
    return leader, follower


def pair_config(tmp_path: Path, leader: EmulatedBus, follower: EmulatedBus, **safety) -> RigConfig:
    path = tmp_path / "pair.toml"
    path.write_text(pair_toml(leader.port, follower.port, **safety))
    return load_config(path)


def pose_leader(leader: EmulatedBus, joints_ticks: list[float], gripper_ticks: float | None = None) -> None:
    for sid, t in zip((1, 2, 4), joints_ticks, strict=True):
        leader.servo(sid).set_present(t)
    leader.servo(3).set_present(joints_ticks[1])
    if gripper_ticks is not None:
        leader.servo(5).set_present(gripper_ticks)


class WavingHand(threading.Thread):
    """Moves the leader's waist back and forth (0.6 rad, 0.5 Hz) until ``stop`` is set, so the
    follower is moving whenever something happens to rig."""

    def __init__(self, leader: EmulatedBus):
        super().__init__(daemon=True)
        self.leader, self.stop = leader, threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            q = 0.6 * math.sin(2 * math.pi * 0.5 * (time.monotonic() - t0))
            with self.leader.lock:
                self.leader.servo(1).set_present(2048 + q * 4096 / (2 * math.pi))
            time.sleep(0.01)

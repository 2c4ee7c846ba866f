"""Teleop end to end on the simulated ALOHA: MuJoCo world, emulated buses, scripted operator."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.dynamixel.bus import DynamixelBus
from rig.config import load_config
from rig.session import RigSession
from rig.ticks import TickQueue

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def world():
    from rig.sim.launch import start_world

    handle = start_world(task="transfer_cube", seed=3, cameras=(), operator=True)
    yield handle
    handle.close()


def test_followers_mirror_the_scripted_leaders_and_end_limp(world):
    cfg = load_config("sim-aloha")
    sink = TickQueue(5000)
    with RigSession(cfg, ports=world.ports, sink=sink, cameras=False) as s:
        world.set_operator(True, True)
        s.run(6.0)
        summary = s.teleop.stats.summary()
        physics = world.arm_qpos()  # the follower joints in MuJoCo, straight from the physics
        last_q = s.teleop.follower_q.copy()
    recs = [r for r in sink.drain() if r.engage >= 1.0]
    assert len(recs) > 40 and summary["ticks"] > 60  # rates are measured in benchmarks, not here
    lead = np.array([r.leader_q for r in recs])
    foll = np.array([r.follower_q for r in recs])
    joints = [i for i in range(14) if i % 7 != 6]
    assert np.ptp(lead[:, joints], axis=0).max() > 0.3  # the operator really moved the leaders
    # Tracking: the follower is the leader a few ticks late (position actuators under load).
    lag = 5
    err = np.abs(lead[:-lag, joints] - foll[lag:, joints])
    assert np.percentile(err, 95) < 0.08  # rad: within 5 degrees for 95% of ticks
    # The bus reports what the physics does (identity calibration: radians in, radians out).
    sim_joints = np.concatenate([physics["left"][:6], physics["right"][:6]])
    assert np.allclose(last_q[joints], sim_joints, atol=0.05)
    # On exit the followers' torque went off.
    with DynamixelBus(world.ports["left_follower"]) as bus:
        assert [bus.read(i, "torque_enable") for i in range(1, 10)] == [0] * 9

"""The one control loop with its command sources, on emulated buses through the real SDK:
replay then back to the leaders, a policy that an operator takes over, the tick schema, and the
arm interface behind which counters and alerts live."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest

from rig.arms import Arm, DynamixelArm, HandheldLeader
from rig.session import RigSession, wait_until
from rig.sources import PolicySource
from rig.ticks import SOURCES, TickQueue, TickRecord, tick_fields
from tests.rigs import pair_buses, pair_config, pose_leader

RAD = 4096 / (2 * math.pi)


@dataclass(frozen=True)
class _Cfg:
    n: int
    k: int = 10
    cameras: tuple[str, ...] = ()
    image_hw: tuple[int, int] = (4, 4)


class ReachPolicy:
    """A policy with the interface the loop calls: it always predicts a chunk that reaches for
    one pose (waist at 0.4 rad, gripper half open), and counts its resets and predictions."""

    def __init__(self, n: int = 4):
        self.cfg = _Cfg(n)
        self.start_q = None
        self.resets = 0
        self.calls: list[tuple[tuple, np.ndarray]] = []

    def reset(self) -> None:
        self.resets += 1

    def predict_chunk(self, images: np.ndarray, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        self.calls.append((images.shape, q.copy()))
        assert q.dtype == np.float32 and dq.dtype == np.float32
        out = np.zeros((self.cfg.k, self.cfg.n), np.float32)
        out[:, 0] = 0.4
        out[:, 3] = 0.5
        return out


def _sources(recs: list[TickRecord]) -> list[str]:
    return [SOURCES[r.source] for r in recs]


def test_a_replay_drives_the_followers_then_the_leaders_take_back_over(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=0.2)
    sink = TickQueue(10_000)
    actions = np.zeros((25, 4))
    actions[:, 0] = np.linspace(0.0, 0.6, 25)  # the waist sweeps out in half a second
    actions[:, 3] = 1.0
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.start(2.5)
        assert wait_until(lambda: s.teleop.engaged, 5)
        s.teleop.replay(actions)
        assert s.teleop.replaying  # at once, before the loop picked it up
        assert wait_until(lambda: not s.teleop.replaying, 5)
        s.wait()
    recs = sink.drain()
    src = _sources(recs)
    assert src[0] == "leaders" and "replay" in src and src[-1] == "leaders"
    first = src.index("replay")
    assert src[first:first + 25] == ["replay"] * 25 and src.count("replay") == 25  # one row per tick run
    replayed = recs[first:first + 25]
    assert max(r.action[0] for r in replayed) > 0.3  # the followers went out with the take
    assert recs[first + 25].engage == 0.0  # then blended back onto the leaders
    assert abs(recs[-1].action[0]) < 0.01  # and came back to the leader (waist at 0)


def test_a_policy_drives_until_a_leader_moves_then_the_operator_takes_over(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=0.2, takeover_rad=0.15)
    sink = TickQueue(10_000)
    policy = ReachPolicy()
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        loop = s.teleop
        s.start(6.0)
        assert wait_until(lambda: loop.engaged, 5)
        loop.use(PolicySource(policy), engage_s=0.0)
        assert wait_until(lambda: loop.target[0] > 0.39, 5)  # the policy reached, the leader still at 0
        pose_leader(leader, [2048 + 0.05 * RAD, 2048, 2048])  # a hand resting on the leader: no takeover
        time.sleep(0.3)
        assert loop.source.name == "policy" and loop.stats.takeovers == 0
        pose_leader(leader, [2048 - 0.5 * RAD, 2048, 2048])  # the operator grabs the leader
        assert wait_until(lambda: loop.stats.takeovers == 1, 5)
        assert wait_until(lambda: loop.engaged and abs(loop.target[0] + 0.5) < 1e-3, 5)
        taken_at = loop.stats.takeover_tick
        time.sleep(0.1)
        assert abs(follower.servo(1).get("goal_position") - (2048 - 0.5 * RAD)) <= 1  # the follower follows
        loop.stop()
        summary = s.wait()
    assert policy.resets == 1 and policy.calls and policy.calls[0][0] == (0, 4, 4, 3)
    assert summary["takeovers"] == 1 and summary["takeover_tick"] == taken_at and summary["source"] == "takeover"
    recs = sink.drain()
    src = _sources(recs)
    assert src.index("policy") < src.index("takeover")
    first = next(r for r in recs if SOURCES[r.source] == "takeover")
    assert first.tick == taken_at and first.engage == 0.0  # blended from the policy's targets
    assert first.leader_q[0] == pytest.approx(-0.5, abs=2e-3)
    assert all(s == "takeover" for s in src[src.index("takeover"):])  # the corrective ticks are flagged
    steps = np.abs(np.diff([r.action[0] for r in recs]))
    assert steps.max() <= cfg.safety.max_step_rad + 1e-6  # no jump at either switch
    assert recs[-1].action[0] == pytest.approx(-0.5, abs=1e-3)


def test_a_policy_that_does_not_fit_the_rig_is_refused_before_a_tick(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        with pytest.raises(Exception, match="the policy predicts 14 values but the rig's followers have 4"):
            s.teleop.use(PolicySource(ReachPolicy(n=14)))
        assert s.teleop.source.name == "leaders"
        with pytest.raises(Exception, match=r"replay needs actions of shape \(T, 4\)"):
            s.teleop.replay(np.zeros((10, 3)))


def test_tick_records_and_the_recorder_schema_come_from_one_definition(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    sink = TickQueue(10_000)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        s.run(0.5)
    rec = sink.drain()[-1]
    schema = tick_fields(4)
    row = rec.row()
    assert list(row) == list(schema) and "t_start_ns" not in schema  # the row's time, not a field
    for name, (shape, dtype) in schema.items():
        assert np.asarray(row[name]).shape == shape, name
        assert np.asarray(row[name]).astype(dtype).item(0) == pytest.approx(np.asarray(row[name]).item(0)), name
    assert SOURCES[row["source"]] == "leaders"


def test_arms_keep_their_counters_and_alerts_behind_one_interface(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        lead, foll = s.leaders[0], s.followers[0]
        assert isinstance(lead, Arm) and isinstance(foll, DynamixelArm) and foll.connected
        assert list(foll.features) == ["waist", "shoulder", "elbow", "gripper"]
        m0, r0 = lead.misses, lead.reads  # setup's reads count too
        s.start(1.2)
        time.sleep(0.4)
        leader.drop_replies(3)  # one tick's tries and more: the leader misses a read
        summary = s.wait()
        assert lead.misses - m0 == summary["bus_errors"]["leader"] >= 1  # the arm counted, the loop summed
        assert lead.reads - r0 == summary["ticks"] - summary["bus_errors"]["leader"]  # one read a tick
        assert lead.consecutive_misses == 0  # it recovered
        assert foll.alert() is None
        follower.servo(2).set_hardware_error(1 << 2)
        # the next status packet carries the alert bit
        assert wait_until(lambda: foll.read() or foll.alert() is not None, 2)
        alert = foll.alert()
        assert alert is not None and "servo 2" in str(alert) and "overheating" in str(alert)
        follower.servo(2).set_hardware_error(0)
    assert not hasattr(HandheldLeader, "bus")

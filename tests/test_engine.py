"""The collector's engine process on a hardware-style rig (emulated Dynamixel buses on ptys, no
simulated world): the app's end drives it, and stops the followers itself when the engine dies."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rig.tui.controller import CollectOptions, Collector, State
from rig.tui.engine import CollectorProcess, EngineError
from rig.tui.interface import ACTIONS, VIEW_FIELDS, Actions, CollectorView
from tests.apps import wait_for
from tests.rigs import pair_buses, pair_toml

FOLLOWER_IDS = (1, 2, 3, 4, 5)


@pytest.fixture
def pair_engine(tmp_path, emulated):
    leader, follower = pair_buses(emulated)
    path = tmp_path / "pair.toml"
    path.write_text(pair_toml(leader.port, follower.port))
    c = CollectorProcess(CollectOptions(config=path, dataset=tmp_path / "takes.zarr", seconds=0, train=False),
                         log_path=tmp_path / "engine.log")
    try:
        c.open()
        wait_for(c, lambda: c.state == State.READY, 60, "READY")
        yield c, follower
    finally:
        c.close()


def torque(bus) -> list[int]:
    return [bus.servo(i).get("torque_enable") for i in FOLLOWER_IDS]


def test_a_take_through_the_engine_lands_on_disk_and_quit_releases_the_follower(pair_engine, tmp_path):
    c, follower = pair_engine
    assert torque(follower) == [1] * 5
    assert c.toggle() is True
    wait_for(c, lambda: c.recording, 10, "recording")
    time.sleep(1.0)
    c.toggle()
    wait_for(c, lambda: c.state == State.REVIEW, 10, "the take saved")
    assert c.last.index == 0 and c.last.status == "complete"
    assert c.dataset.info(0).stream_counts["joints"] > 30  # the app's own reader sees the take
    assert c.keep() is True and c.keep() is None  # nothing under review any more: refused
    report = c.close()
    assert report == {"follower": "stopped; torque off confirmed on 5 of 5"} and torque(follower) == [0] * 5
    assert c.state == State.CLOSED and c.process.exitcode == 0
    with pytest.raises(EngineError, match="closed"):
        c.drill("unplug", "follower")


def test_fault_drills_need_a_simulated_world(pair_engine):
    c, _ = pair_engine
    with pytest.raises(EngineError, match="need the simulated world"):
        c.drill("unplug", "follower")


def test_when_the_engine_is_killed_the_app_stops_the_followers_itself(pair_engine):
    c, follower = pair_engine
    c.toggle()
    wait_for(c, lambda: c.recording, 10, "recording")
    assert torque(follower) == [1] * 5
    os.kill(c.process.pid, signal.SIGKILL)  # no code of the engine runs: no safe close there
    end = time.monotonic() + 20
    while c.state != State.FAULT and time.monotonic() < end:
        time.sleep(0.1)
    assert c.state == State.FAULT
    assert "exited unexpectedly" in c.message and "follower stopped; torque off confirmed on 5 of 5" in c.message, c.message
    assert torque(follower) == [0] * 5
    assert c.toggle() is None  # keys do nothing now; the app stays up to say what happened


def test_the_collector_interface_is_defined_once_and_the_proxy_is_derived_from_it():
    """The engine's dispatch, the app-side proxy and the view come from rig/tui/interface.py."""
    assert {"toggle", "keep", "discard", "rerecord", "label", "skip", "replay_actions", "run_policy"} <= set(ACTIONS)
    for name in ACTIONS:
        assert callable(getattr(Collector, name)) and getattr(CollectorProcess, name).__doc__ == \
            getattr(Actions, name).__doc__
    for name in VIEW_FIELDS:
        if name != "notices":  # the proxy collects these itself, across replies
            assert isinstance(getattr(CollectorProcess, name), property), name
    assert "trial" in VIEW_FIELDS and CollectorView(State.READY, "").trial is False


def test_a_new_action_reaches_the_engine_through_the_derived_proxy(pair_engine):
    c, _ = pair_engine
    assert c.skip() is None  # nothing recorded yet: no episode to act on
    c.toggle()
    wait_for(c, lambda: c.recording, 10, "recording")
    assert c.trial is False
    time.sleep(0.5)
    c.toggle()
    wait_for(c, lambda: c.state == State.REVIEW, 10, "the take saved")
    assert c.skip() is True  # queued in the engine ...
    wait_for(c, lambda: "is a take, not a trial" in c.message, 10, "refused there")  # ... which said why
    assert c.dataset.info(0).success is None and "outcome" not in c.dataset.episode(0).attrs

"""Arm calibration on emulated servos: round trip, stored files, wrong-arm refusal, homing offsets."""

from __future__ import annotations

import math
import os
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration.apply import verify_connected
from calibration.arm import CalibrationError
from calibration.homing import HOMING_LIMIT, fit_homing_offset
from calibration.procedure import ArmCalibrator, ArmProcedure, JointSlot
from calibration.store import (
    CalibrationMismatch,
    adapter_identity,
    arm_file,
    read_arm_file,
    read_toml,
    write_toml,
)
from drivers.dynamixel.emulator import ServoSpec
from rig.arms import Follower, Leader, arm_calibration
from rig.config import load_config

TPR = 4096 / (2 * math.pi)


@pytest.fixture(autouse=True)
def cal_dir(tmp_path, monkeypatch):
    d = tmp_path / "calibration"
    monkeypatch.setenv("RIG_CALIBRATION_DIR", str(d))
    return d


class ArmModel:
    """A physical arm behind an emulated bus: joint angle -> shaft ticks, per joint.

    ``mount[j]`` is the shaft position at the joint's zero and ``turn[j]`` the shaft direction
    (+1/-1) for a positive joint angle; the servo then reports ``drive_sign * shaft + homing``.
    """

    def __init__(self, bus, joint_ids, mount, turn, gripper_id=None, shadows=None):
        self.bus, self.ids, self.mount, self.turn = bus, joint_ids, mount, turn
        self.gripper_id = gripper_id
        self.shadows = shadows or {}  # primary id -> shadow id (mounted mirrored: shaft 4096 - primary's)
        for s in bus.servos:
            s.external_motion = True  # a hand moves it

    def pose(self, q, gripper_shaft=None):
        with self.bus.lock:  # the emulator thread must not see half a register
            self._pose(q, gripper_shaft)

    def _pose(self, q, gripper_shaft):
        for sid, m, t, a in zip(self.ids, self.mount, self.turn, q, strict=True):
            shaft = m + t * a * TPR
            self.bus.servo(sid).set_present(shaft)
            if sid in self.shadows:
                self.bus.servo(self.shadows[sid]).set_present(4096 - shaft)
        if gripper_shaft is not None:
            self.bus.servo(self.gripper_id).set_present(gripper_shaft)


def read_twice(arm):
    """Two reads that agree: on a loaded machine a late reply can answer the next request."""
    for _ in range(5):
        arm.read()
        first = arm.q.copy()
        arm.read()
        if np.array_equal(first, arm.q):
            return
    raise AssertionError("readings never settled")


def wait_for(pred, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def arm_toml(port, *, role="leader", models=("xm430-w350", "xm430-w350", "xm430-w350"), gripper="xc430-w150",
             extra="", name="arm"):
    lead = 'leader = "src"\n' if role == "follower" else ""
    src = "" if role == "leader" else textwrap.dedent(f"""
        [[arms]]
        name = "src"
        role = "leader"
        port = "{port}"
        allow_uncalibrated = true
        joints = [
          {{ name = "waist", id = 1, model = "{models[0]}" }},
          {{ name = "shoulder", id = 2, model = "{models[1]}", shadow_id = 3 }},
          {{ name = "elbow", id = 4, model = "{models[2]}" }},
          {{ name = "gripper", id = 5, model = "{gripper}", gripper = true }},
        ]
        """)
    return textwrap.dedent(f"""\
        name = "cal-test"
        [[arms]]
        name = "{name}"
        role = "{role}"
        {lead}port = "{port}"
        {extra}
        joints = [
          {{ name = "waist", id = 1, model = "{models[0]}" }},
          {{ name = "shoulder", id = 2, model = "{models[1]}", shadow_id = 3 }},
          {{ name = "elbow", id = 4, model = "{models[2]}" }},
          {{ name = "gripper", id = 5, model = "{gripper}", gripper = true }},
        ]
        """) + src


def load(tmp_path, text, fname="rig.toml"):
    p = tmp_path / fname
    p.write_text(text)
    return load_config(p)


def leader_bus(emulated, **overrides):
    specs = [
        ServoSpec(1, drive_mode=1, homing_offset=1000),  # reversed and offset by another tool
        ServoSpec(2, homing_offset=-300),
        ServoSpec(3, secondary_id=2, drive_mode=1, homing_offset=4096 - 300),  # mirrored shadow of 2
        ServoSpec(4),
        ServoSpec(5, model="xc430-w150"),
    ]
    for s in specs:
        for k, v in overrides.get(s.id, {}).items():
            setattr(s, k, v)
    return emulated(specs, name="leader")


def run_procedure(cal: ArmCalibrator, model: ArmModel, lo, hi, g_open, g_closed, shadows=True):
    proc = cal.procedure
    assert proc.step.key == "zero"
    model.pose([0.0, 0.0, 0.0], g_open)
    assert cal.confirm().key == "direction"
    model.pose([0.5, 0.4, 0.3])
    assert cal.confirm().key == "range"
    for f in np.linspace(0, 1, 9):
        model.pose([a + f * (b - a) for a, b in zip(lo, hi, strict=True)])
        cal.sample()
    for f in np.linspace(1, 0, 9):
        model.pose([a + f * (b - a) for a, b in zip(lo, hi, strict=True)])
        cal.sample()
    assert cal.confirm().key == "gripper_open"
    model.pose([0.0, 0.0, 0.0], g_open)
    assert cal.confirm().key == "gripper_closed"
    model.pose([0.0, 0.0, 0.0], g_closed)
    assert cal.confirm().key == "done"
    return proc


def test_round_trip_recovers_offsets_and_directions_and_is_picked_up(tmp_path, emulated, cal_dir):
    bus = leader_bus(emulated)
    model = ArmModel(bus, [1, 2, 4], mount=[1500, 2600, 900], turn=[1, -1, -1], gripper_id=5, shadows={2: 3})
    cfg = load(tmp_path, arm_toml(bus.port))
    with pytest.raises(CalibrationError, match=r"not calibrated.*rig calibrate arm arm"):
        arm_calibration(cfg.arm("arm"))  # teleop refuses it until calibrated

    with ArmCalibrator(cfg.arm("arm"), bus.port) as cal:
        run_procedure(cal, model, lo=[-1.0, -0.8, -1.2], hi=[1.1, 0.9, 1.3], g_open=2300, g_closed=1700)
        rows = {r.name: r for r in cal.procedure.table()}
        assert rows["waist"].min_deg == pytest.approx(-1.0 * 180 / math.pi, abs=0.2)
        stored = cal.finish()
    # Servo 1 (reversed, offset 1000, shaft 1500) reads -500 at zero, outside 0..4095: recentred.
    # The others stay in the window and are left alone.
    assert [c.id for c in cal.changes] == [1] and bus.servo(1).get("homing_offset") == cal.changes[0].new
    assert stored.path == arm_file("arm") and stored.path.parent == cal_dir
    on_disk = read_toml(stored.path)
    assert on_disk["version"] == 1 and on_disk["identity"]["adapter"] == "pty:arm"
    assert [s["id"] for s in on_disk["identity"]["servos"]] == [1, 2, 3, 4, 5]

    cal_loaded = arm_calibration(load(tmp_path, arm_toml(bus.port)).arm("arm"))
    assert cal_loaded.source.startswith("file:")
    signs = [j.sign for j in cal_loaded.joints]
    assert signs == [-1, -1, -1]  # drive mode reverse x mount direction, per joint
    leader = Leader(cfg.arm("arm"), bus.port, timeout_margin_ms=100)
    assert leader.calibration.source.startswith("file:")
    leader.open()
    try:
        verify_connected(cfg.arm("arm"), leader.calibration, leader.bus)
        rng = np.random.default_rng(3)
        for _ in range(5):
            q = rng.uniform(-0.9, 0.9, 3)
            g = rng.uniform(1700, 2300)
            model.pose(list(q), g)
            read_twice(leader)
            assert np.allclose(leader.q[:3], q, atol=1.5 / TPR)
            assert leader.q[3] == pytest.approx((g - 1700) / (2300 - 1700), abs=2e-3)
    finally:
        leader.close()


def calibrated_leader(tmp_path, emulated):
    """An emulated leader calibrated once through the guided procedure: (bus, config, stored file)."""
    bus = leader_bus(emulated)
    model = ArmModel(bus, [1, 2, 4], mount=[2048, 2048, 2048], turn=[1, 1, 1], gripper_id=5, shadows={2: 3})
    cfg = load(tmp_path, arm_toml(bus.port))
    with ArmCalibrator(cfg.arm("arm"), bus.port) as cal:
        run_procedure(cal, model, [-1, -1, -1], [1, 1, 1], 2300, 1700)
        stored = cal.finish()
    return bus, cfg, stored


def test_wrong_arm_file_is_refused_naming_both(tmp_path, emulated):
    bus, cfg, stored = calibrated_leader(tmp_path, emulated)

    # Another arm under the same name: servo 4 is another model.
    other = load(tmp_path, arm_toml(bus.port, models=("xm430-w350", "xm430-w350", "xm540-w270")), "other.toml")
    with pytest.raises(CalibrationMismatch) as exc:
        arm_calibration(other.arm("arm"))
    msg = str(exc.value)
    assert "servo 4: file xm430-w350, the config xm540-w270" in msg and str(stored.path) in msg

    # Another adapter: the file says it was made on a by-id adapter.
    data = read_toml(stored.path)
    data["identity"]["adapter"] = "usb-FTDI_USB__-__Serial_Converter_FT891KPN-if00-port0"
    write_toml(stored.path, data)
    with pytest.raises(CalibrationMismatch, match=r"file: usb-FTDI.*the config: pty:arm"):
        arm_calibration(cfg.arm("arm"))


def test_connected_arm_checked_after_open(tmp_path, emulated):
    bus, cfg, _ = calibrated_leader(tmp_path, emulated)
    # Someone rewrote a homing offset since (another tool, a factory reset): the zeros no longer hold.
    bus.servo(4).set("homing_offset", 512)
    leader = Leader(cfg.arm("arm"), bus.port, timeout_margin_ms=100).open()
    try:
        with pytest.raises(CalibrationMismatch, match=r"servo 4: Homing Offset/Drive Mode 0/0 when calibrated, 512/0"):
            verify_connected(cfg.arm("arm"), leader.calibration, leader.bus)
    finally:
        leader.close()
    # A different arm on that port (servo 4 answers as another model).
    bus2 = emulated([ServoSpec(1), ServoSpec(2), ServoSpec(3, secondary_id=2), ServoSpec(4, model="xm540-w270"),
                     ServoSpec(5, model="xc430-w150")])
    leader = Leader(cfg.arm("arm"), bus2.port, timeout_margin_ms=100).open()
    try:
        with pytest.raises(CalibrationMismatch, match=r"servo 4: file xm430-w350, the connected arm xm540-w270"):
            verify_connected(cfg.arm("arm"), leader.calibration, leader.bus)
    finally:
        leader.close()


def test_calibrator_refuses_wrong_models_before_anything(tmp_path, emulated):
    bus = leader_bus(emulated)
    cfg = load(tmp_path, arm_toml(bus.port, gripper="xm430-w350"))
    with pytest.raises(CalibrationMismatch, match=r"servo 5 .* is a xc430-w150, but the config says xm430-w350"):
        ArmCalibrator(cfg.arm("arm"), bus.port).open()


def test_follower_out_of_window_is_recentred_and_commands_stay_in_range(tmp_path, emulated):
    specs = [ServoSpec(1, model="xm540-w270"), ServoSpec(2, model="xm540-w270"),
             ServoSpec(3, model="xm540-w270", secondary_id=2, drive_mode=1, homing_offset=4096),
             ServoSpec(4, model="xm540-w270"), ServoSpec(5, model="xm430-w350")]
    bus = emulated(specs, name="follower")
    # Waist mounted so that its zero reads 3900: its range crosses 4095, where position mode refuses goals.
    model = ArmModel(bus, [1, 2, 4], mount=[3900, 2048, 2048], turn=[1, 1, 1], gripper_id=5, shadows={2: 3})
    text = arm_toml(bus.port, role="follower", models=("xm540-w270",) * 3, gripper="xm430-w350")
    cfg = load(tmp_path, text)
    with ArmCalibrator(cfg.arm("arm"), bus.port) as cal:
        run_procedure(cal, model, [-1.0, -1.0, -1.0], [1.2, 1.0, 1.0], 3000, 1650)
        stored = cal.finish()
    assert [c.id for c in cal.changes] == [1]
    change = cal.changes[0]
    assert bus.servo(1).get("homing_offset") == change.new
    waist = stored.calibration.joints[0]
    assert 0 < waist.min_ticks < waist.max_ticks < 4095  # the range now sits inside the window
    assert abs((waist.min_ticks + waist.max_ticks) / 2 - 2048) <= 1
    follower = Follower(cfg.arm("arm"), bus.port, timeout_margin_ms=100).open()
    try:
        model.pose([0.0, 0.0, 0.0], 2000)
        follower.prepare()
        for s in bus.servos:
            s.external_motion = False
        target = np.array([1.1, 0.3, -0.2, 0.5])
        follower.command(target)  # a sync write: no reply, so wait until the servos took it
        assert wait_for(lambda: bus.servo(1).get("goal_position") != bus.servo(1).get("present_position"))
        follower.bus.read(1, "led")
        goals = [bus.servo(i).get("goal_position") for i in (1, 2, 4, 5)]
        assert all(0 <= g <= 4095 for g in goals)
        shaft_goal = bus.servo(1).goal_position  # the physical shaft angle the servo will go to
        assert shaft_goal == pytest.approx(3900 + 1.1 * TPR, abs=1.0)
    finally:
        follower.close()


def test_multi_turn_homing_offset_that_does_not_fit_is_handled(tmp_path, emulated):
    # An extended-position (multi-turn) waist that has spun ~366 turns: its readings are far beyond
    # the goal window and the offset that would centre it (-1.5 M) does not fit the register.
    shaft0 = 1_500_000
    specs = [ServoSpec(1, model="xm540-w270", operating_mode=4), ServoSpec(2, model="xm540-w270"),
             ServoSpec(3, model="xm540-w270", secondary_id=2, drive_mode=1, homing_offset=4096),
             ServoSpec(4, model="xm540-w270"), ServoSpec(5, model="xm430-w350")]
    bus = emulated(specs, name="follower")
    model = ArmModel(bus, [1, 2, 4], mount=[shaft0, 2048, 2048], turn=[-1, 1, 1], gripper_id=5, shadows={2: 3})
    cfg = load(tmp_path, arm_toml(bus.port, role="follower", models=("xm540-w270",) * 3, gripper="xm430-w350"))
    with ArmCalibrator(cfg.arm("arm"), bus.port) as cal:
        proc = cal.procedure
        assert proc.joints[0].multi_turn
        run_procedure(cal, model, [-7.0, -1.0, -1.0], [7.0, 1.0, 1.0], 3000, 1650)  # > 2 turns of travel
        stored = cal.finish()
    (change,) = cal.changes
    assert abs(change.new) <= HOMING_LIMIT and change.leftover != 0 and change.leftover % 4096 == 0
    assert bus.servo(1).get("homing_offset") == change.new
    waist = stored.calibration.joints[0]
    assert waist.multi_turn and not waist.full_turn
    assert waist.max_ticks - waist.min_ticks == pytest.approx(14.0 * TPR, abs=2)
    leader = Leader(cfg.arm("arm"), bus.port, timeout_margin_ms=100).open()
    try:
        for q in (-6.5, 0.0, 3.0, 6.9):
            model.pose([q, 0.2, -0.3], 2000)
            read_twice(leader)
            assert leader.q[0] == pytest.approx(q, abs=1.5 / TPR)
    finally:
        leader.close()


@given(st.integers(-(2**31) + 4096, 2**31 - 4096))
def test_fit_homing_offset_never_overflows(wanted):
    reg, leftover = fit_homing_offset(wanted)
    assert reg + leftover == wanted
    assert -HOMING_LIMIT <= reg <= HOMING_LIMIT
    assert leftover % 4096 == 0


def test_full_turn_joint_wraps_and_has_no_limits():
    proc = ArmProcedure("a", (JointSlot("spin", 1, None, False, False),))
    proc.feed({1: 100})
    proc.confirm()
    proc.feed({1: 600})
    proc.confirm()
    for t in range(0, 4096 * 2, 300):  # position-mode readings wrap at 4095
        proc.feed({1: (100 + t) % 4096})
    proc.confirm()
    cal = proc.calibration()
    j = cal.joints[0]
    assert j.full_turn and j.min_ticks is None
    angles = cal.to_radians(np.array([100.0 + 4000]))  # 4000 ticks past zero = -96 ticks the short way
    assert angles[0] == pytest.approx(-96 / TPR)


def test_direction_step_names_joints_that_did_not_move():
    proc = ArmProcedure("left", (JointSlot("waist", 1, None, False, False), JointSlot("elbow", 2, None, False, False)))
    proc.feed({1: 2048, 2: 2048})
    proc.confirm()
    proc.feed({1: 2600, 2: 2070})
    with pytest.raises(CalibrationError, match=r"elbow \(\+1\.9 deg\) moved less than 10 deg"):
        proc.confirm()
    assert proc.step.key == "direction"  # the step stays; fix the pose and confirm again
    proc.feed({2: 1500})
    assert proc.confirm().key == "range"
    assert proc.sign == {"waist": 1, "elbow": -1}


def test_newer_file_version_is_refused(tmp_path, emulated):
    bus, cfg, stored = calibrated_leader(tmp_path, emulated)
    data = read_toml(stored.path)
    data["version"] = 99
    write_toml(stored.path, data)
    with pytest.raises(CalibrationError, match=r"format version 99; this rig reads up to 1"):
        read_arm_file(stored.path)


def test_inline_calibration_wins_over_a_file(cal_dir):
    cfg = load_config("sim-aloha")
    arm = cfg.arm("left_leader")
    (cal_dir).mkdir(parents=True, exist_ok=True)
    arm_file("left_leader").write_text("not toml at all [")  # never even read
    assert arm_calibration(arm).source == "config"


def test_adapter_identity_from_by_id_links(tmp_path):
    dev = tmp_path / "dev"
    by_id = dev / "serial" / "by-id"
    by_id.mkdir(parents=True)
    tty = dev / "ttyUSB0"
    tty.write_text("")
    (dev / "ttyUSB1").write_text("")
    link = by_id / "usb-FTDI_USB__-__Serial_Converter_FT6Z5XFK-if00-port0"
    os.symlink("../../ttyUSB0", link)
    assert adapter_identity(str(tty), "left", by_id) == link.name
    assert adapter_identity(str(link), "left", by_id) == link.name
    assert adapter_identity(str(dev / "ttyUSB1"), "left", by_id) == f"path:{dev / 'ttyUSB1'}"
    assert adapter_identity("sim:left_leader", "left_leader", by_id) == "pty:left_leader"
    assert adapter_identity("/dev/pts/7", "left", by_id) == "pty:left"


class Script:
    """Stands in for the operator at the keyboard: each poll moves the arm, then answers."""

    def __init__(self, steps):
        self.steps = list(steps)

    def poll(self):
        if not self.steps:
            return None
        move, answer = self.steps.pop(0)
        if move is not None:
            move()
        return answer


def test_cli_guides_through_the_steps_and_saves(tmp_path, emulated, cal_dir):
    import argparse
    import io

    from rig.commands.calibrate import run_arm

    bus = leader_bus(emulated)
    model = ArmModel(bus, [1, 2, 4], mount=[2100, 2000, 1900], turn=[1, 1, -1], gripper_id=5, shadows={2: 3})
    path = tmp_path / "rig.toml"
    path.write_text(arm_toml(bus.port))
    sweep = [(lambda f=f: model.pose([-0.9 + 1.8 * f] * 3), False) for f in np.linspace(0, 1, 8)]
    script = Script([
        (lambda: model.pose([0, 0, 0], 2250), ""),       # zero pose
        (lambda: model.pose([0.01, 0.5, 0.5]), ""),      # waist barely moved: refused, step stays
        (lambda: model.pose([0.5, 0.5, 0.5]), ""),       # direction
        *sweep, (None, ""),                              # range
        (lambda: model.pose([0, 0, 0], 2250), ""),       # gripper open
        (lambda: model.pose([0, 0, 0], 1650), ""),       # gripper closed
    ])
    out = io.StringIO()
    args = argparse.Namespace(name="arm", config=str(path), homing="auto", dir=None)
    assert run_arm(args, waiter=script, out=out) == 0
    text = out.getvalue()
    assert "waist (-0.6 deg) moved less than 10 deg" in text  # servo 1 runs reversed: raw ticks went down
    assert f"saved {cal_dir / 'arm.toml'}" in text and "identity: adapter pty:arm" in text
    cal = arm_calibration(load_config(path).arm("arm"))
    assert [j.sign for j in cal.joints] == [-1, 1, -1]
    assert cal.gripper.open - cal.gripper.closed == pytest.approx(600, abs=1)


def test_cli_quit_writes_nothing(tmp_path, emulated, cal_dir):
    import argparse
    import io

    from rig.commands.calibrate import run_arm

    bus = leader_bus(emulated)
    path = tmp_path / "rig.toml"
    path.write_text(arm_toml(bus.port))
    out = io.StringIO()
    args = argparse.Namespace(name="arm", config=str(path), homing="auto", dir=None)
    assert run_arm(args, waiter=Script([(None, "q")]), out=out) == 1
    assert "nothing was written" in out.getvalue() and not (cal_dir / "arm.toml").exists()

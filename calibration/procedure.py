"""The guided arm calibration: a pure state machine, and a thin driver that feeds it from a bus.

:class:`ArmProcedure` knows the steps, what each asks of the operator, what it reads, and the
result. It never touches a bus: give it readings (servo ID -> Present Position ticks) with
``feed`` and move on with ``confirm``. The CLI (`rig calibrate arm`) and the TUI screen are thin
fronts over :class:`ArmCalibrator`, which owns the bus.

Steps: zero pose -> positive direction -> range sweep -> gripper open -> gripper closed -> done.
Zero and direction give each joint's ``zero`` and ``sign``; the sweep gives its range and tells a
full-turn joint (the sweep covers a whole turn) from a limited one; servos in extended position
mode are multi-turn joints (readings beyond one turn, never wrapped).

Offsets stay in the file (docs/calibration.md says why). The servo's Homing Offset is
written only to *recentre* a follower joint whose readings would leave the goal window of its
operating mode (position mode takes goals 0..4095 only), and then without overflowing the register
(``calibration.homing``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.arm import ArmCalibration, CalibrationError, GripperCalibration, JointCalibration
from calibration.homing import HomingChange, follow, needs_recentre, recentre
from calibration.store import (
    ArmIdentity,
    CalibrationMismatch,
    ServoRegisters,
    StoredArm,
    adapter_identity,
    config_servos,
    now_iso,
    save_arm,
)

TICKS_PER_TURN = 4096
HALF_TURN = TICKS_PER_TURN // 2
MIN_MOVE_DEG = 10.0  # the direction pose must move every joint at least this far
MIN_RANGE_DEG = 10.0  # a sweep that moves a joint less than this did not reach its ends
FULL_TURN_SPAN = 0.95 * TICKS_PER_TURN  # a sweep this wide is a joint that spins all the way round
MIN_GRIPPER_DEG = 5.0
HOMING_POLICIES = ("auto", "never", "always")


def ticks_to_deg(ticks: float) -> float:
    return ticks * 360.0 / TICKS_PER_TURN


def wrap_ticks(delta: float) -> float:
    """A reading difference the short way round: [-2048, 2048)."""
    return (delta + HALF_TURN) % TICKS_PER_TURN - HALF_TURN


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    instruction: str
    sweep: bool = False  # readings accumulate until the step is confirmed


@dataclass(frozen=True)
class ServoState:
    """A servo as found when the procedure starts."""

    id: int
    model: str
    operating_mode: int = 3
    homing_offset: int = 0
    drive_mode: int = 0


@dataclass(frozen=True)
class JointSlot:
    name: str
    id: int
    shadow_id: int | None
    gripper: bool
    multi_turn: bool


@dataclass
class _Sweep:
    last: float | None = None
    value: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, reading: float, multi_turn: bool) -> None:
        if self.last is None:
            self.value = reading
        else:
            d = reading - self.last
            self.value += d if multi_turn else wrap_ticks(d)  # position mode readings may wrap
        self.last = reading
        self.lo, self.hi = min(self.lo, self.value), max(self.hi, self.value)

    @property
    def span(self) -> float:
        return self.hi - self.lo if self.hi >= self.lo else 0.0


@dataclass(frozen=True)
class Row:
    """One line of the live table."""

    name: str
    ids: str
    ticks: int | None
    angle_deg: float | None  # from the zero pose, signed once the direction is known
    min_deg: float | None
    max_deg: float | None
    note: str = ""


@dataclass
class ArmProcedure:
    """The calibration of one arm as a state machine (no I/O)."""

    arm: str
    slots: tuple[JointSlot, ...]
    servos: Mapping[int, ServoState] = field(default_factory=dict)
    follower: bool = False

    def __post_init__(self):
        self.joints = [s for s in self.slots if not s.gripper]
        grippers = [s for s in self.slots if s.gripper]
        self.gripper = grippers[0] if grippers else None
        self.steps = self._steps()
        self.index = 0
        self.latest: dict[int, int] = {}
        self.zero: dict[str, float] = {}
        self.sign: dict[str, int] = {}
        self.sweeps: dict[str, _Sweep] = {}
        self.span: dict[str, tuple[float, float] | None] = {}
        self.full_turn: dict[str, bool] = {}
        self.gripper_open: float | None = None
        self.gripper_closed: float | None = None

    @classmethod
    def for_config(cls, cfg: Any, servos: Mapping[int, ServoState] | None = None) -> ArmProcedure:
        servos = dict(servos or {})

        def slot(j, gripper):
            mode = servos[j.id].operating_mode if j.id in servos else 3
            return JointSlot(j.name, j.id, j.shadow_id, gripper, mode == 4)
        slots = tuple(slot(j, False) for j in cfg.joints) + ((slot(cfg.gripper, True),) if cfg.gripper else ())
        return cls(cfg.name, slots, servos, cfg.role == "follower")

    # ---- steps ---------------------------------------------------------------------------------

    def _steps(self) -> list[Step]:
        names = ", ".join(j.name for j in self.joints)
        steps = [
            Step("zero", "Zero pose",
                 f"Put every joint of {self.arm} ({names}) at its zero angle, as the robot's model defines it "
                 "(for ALOHA arms: the start pose with every joint at 0, upper arm and forearm at right angles). "
                 "Hold it still, then confirm."),
            Step("direction", "Positive direction",
                 f"From the zero pose, turn every joint at least {MIN_MOVE_DEG:.0f} deg (a quarter turn is best) in its "
                 "positive direction (counter-clockwise looking down the joint's axis, as in the robot's model). "
                 "Hold, then confirm."),
            Step("range", "Range",
                 "Move each joint slowly from one end of its travel to the other; the table's min and max grow as you "
                 "go. A joint that spins all the way round: turn it a full turn. Confirm when every joint has "
                 "been to both ends.", sweep=True),
        ]
        if self.gripper is not None:
            steps += [
                Step("gripper_open", "Gripper open", "Open the gripper fully and hold it, then confirm."),
                Step("gripper_closed", "Gripper closed", "Close the gripper fully and hold it, then confirm."),
            ]
        steps.append(Step("done", "Done", "Calibration complete: review the table and save."))
        return steps

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    @property
    def done(self) -> bool:
        return self.step.key == "done"

    @property
    def ids(self) -> list[int]:
        """Every servo to read (shadows too: they must keep agreeing with their primary)."""
        out = []
        for s in self.slots:
            out += [s.id] + ([s.shadow_id] if s.shadow_id is not None else [])
        return out

    def restart(self) -> None:
        self.__post_init__()

    # ---- input ---------------------------------------------------------------------------------

    def feed(self, readings: Mapping[int, int]) -> None:
        """Live readings: servo ID -> Present Position ticks."""
        self.latest.update({int(k): int(v) for k, v in readings.items()})
        if self.step.sweep:
            for j in self.joints:
                if j.id in readings:
                    self.sweeps.setdefault(j.name, _Sweep()).add(float(readings[j.id]), j.multi_turn)

    def _reading(self, slot: JointSlot) -> float:
        if slot.id not in self.latest:
            raise CalibrationError(f"{self.arm}: no reading from servo {slot.id} ({slot.name}) yet; check that it "
                                   "answers (`rig scan PORT`) and try again")
        return float(self.latest[slot.id])

    def _delta(self, j: JointSlot) -> float:
        d = self._reading(j) - self.zero[j.name]
        return d if j.multi_turn else wrap_ticks(d)

    def confirm(self) -> Step:
        """Take the current readings as this step's pose; returns the next step.

        Raises CalibrationError (naming the joint and what to do) when the pose does not do
        what the step asks; the step is then unchanged and can be confirmed again.
        """
        key = self.step.key
        if key == "zero":
            self.zero = {j.name: self._reading(j) for j in self.joints}
        elif key == "direction":
            deltas = {j.name: self._delta(j) for j in self.joints}
            small = [f"{n} ({ticks_to_deg(d):+.1f} deg)" for n, d in deltas.items()
                     if abs(ticks_to_deg(d)) < MIN_MOVE_DEG]
            if small:
                raise CalibrationError(
                    f"{self.arm}: joint(s) {', '.join(small)} moved less than {MIN_MOVE_DEG:.0f} deg from the zero "
                    "pose; turn each of them further in its positive direction and confirm again")
            self.sign = {n: 1 if d > 0 else -1 for n, d in deltas.items()}
        elif key == "range":
            short = []
            for j in self.joints:
                sw = self.sweeps.get(j.name)
                span = sw.span if sw else 0.0
                if ticks_to_deg(span) < MIN_RANGE_DEG:
                    short.append(f"{j.name} ({ticks_to_deg(span):.1f} deg)")
            if short:
                raise CalibrationError(
                    f"{self.arm}: joint(s) {', '.join(short)} barely moved during the sweep; move each through its "
                    "whole range and confirm again")
            for j in self.joints:
                sw = self.sweeps[j.name]
                full = not j.multi_turn and sw.span >= FULL_TURN_SPAN
                self.full_turn[j.name] = full
                # The sweep's ends as readings in the zero pose's turn: the last reading, brought
                # into that turn, anchors the unwrapped sweep.
                anchor = sw.last if j.multi_turn else self.zero[j.name] + wrap_ticks(sw.last - self.zero[j.name])
                self.span[j.name] = None if full else (sw.lo - sw.value + anchor, sw.hi - sw.value + anchor)
        elif key == "gripper_open":
            self.gripper_open = self._reading(self.gripper)
        elif key == "gripper_closed":
            closed = self._reading(self.gripper)
            if abs(ticks_to_deg(closed - self.gripper_open)) < MIN_GRIPPER_DEG:
                raise CalibrationError(
                    f"{self.arm}: the gripper reads {closed:.0f} closed and {self.gripper_open:.0f} open, less than "
                    f"{MIN_GRIPPER_DEG:.0f} deg apart; open it fully, go back a step, or close it fully and confirm")
            self.gripper_closed = closed
        elif key == "done":
            return self.step
        self.index += 1
        return self.step

    def back(self) -> Step:
        if self.index > 0:
            self.index -= 1
            if self.step.sweep:
                self.sweeps.clear()
        return self.step

    # ---- output --------------------------------------------------------------------------------

    def table(self) -> list[Row]:
        rows = []
        for s in self.slots:
            t = self.latest.get(s.id)
            ids = f"{s.id}" + (f"+{s.shadow_id}" if s.shadow_id is not None else "")
            note = ""
            if s.shadow_id is not None and t is not None and s.shadow_id in self.latest:
                gap = self.latest[s.shadow_id] - t
                if abs(wrap_ticks(gap)) > 20:
                    note = f"shadow {s.shadow_id} reads {gap:+d} ticks off"
            if s.gripper:
                ang = None if t is None else ticks_to_deg(t - TICKS_PER_TURN / 2)
                if self.gripper_open is not None:
                    note = note or f"open {self.gripper_open:.0f}"
                rows.append(Row(s.name, ids, t, ang, None, None, note))
                continue
            ang = lo = hi = None
            if t is not None and s.name in self.zero:
                ang = ticks_to_deg(self._delta(s) * self.sign.get(s.name, 1))
            sw = self.sweeps.get(s.name)
            if sw is not None and s.name in self.zero and sw.last is not None:
                off = sw.last - self.zero[s.name]
                if not s.multi_turn:
                    off = wrap_ticks(off)
                lo_t, hi_t = sw.lo - sw.value + off, sw.hi - sw.value + off
                sg = self.sign.get(s.name, 1)
                lo, hi = sorted((ticks_to_deg(lo_t * sg), ticks_to_deg(hi_t * sg)))
                if sw.span >= FULL_TURN_SPAN and not s.multi_turn:
                    note = note or "full turn"
            rows.append(Row(s.name, ids, t, ang, lo, hi, note))
        return rows

    def calibration(self, shifts: Mapping[int, int] | None = None) -> ArmCalibration:
        """The result; ``shifts`` (servo ID -> reading shift) after Homing Offsets were rewritten."""
        if not self.done:
            raise CalibrationError(f"{self.arm}: the calibration is not finished (step: {self.step.title})")
        shifts = shifts or {}
        joints = []
        for j in self.joints:
            sh = shifts.get(j.id, 0)
            span = self.span.get(j.name)
            lo = hi = None
            if span is not None:
                lo, hi = span[0] + sh, span[1] + sh
            joints.append(JointCalibration(self.zero[j.name] + sh, self.sign[j.name], lo, hi,
                                           self.full_turn.get(j.name, False), j.multi_turn))
        gripper = None
        if self.gripper is not None:
            sh = shifts.get(self.gripper.id, 0)
            gripper = GripperCalibration(self.gripper_open + sh, self.gripper_closed + sh)
        return ArmCalibration(tuple(joints), gripper, source="procedure")

    def homing_changes(self, policy: str = "auto") -> list[HomingChange]:
        """Homing Offset rewrites that bring joints back inside their mode's goal window.

        ``auto``: only joints whose range leaves the window (a follower could not be sent there;
        a servo's turn count resets at power-up, so a range across the window's edge would read a
        turn off after a restart); ``always``: every joint (mid-range reads 2048, as LeRobot
        does); ``never``: none.
        """
        if policy not in HOMING_POLICIES:
            raise CalibrationError(f"homing policy {policy!r}: use one of {', '.join(HOMING_POLICIES)}")
        if policy == "never":
            return []
        cal = self.calibration()
        changes = []
        for j, jc in zip(self.joints, cal.joints, strict=True):
            if jc.full_turn:
                continue  # its readings wrap within the window by themselves
            lo, hi = (jc.min_ticks, jc.max_ticks) if jc.min_ticks is not None else (jc.zero, jc.zero)
            changes += self._recentre(j, lo, hi, policy)
        if self.gripper is not None and cal.gripper is not None:
            lo, hi = sorted((cal.gripper.open, cal.gripper.closed))
            changes += self._recentre(self.gripper, lo, hi, policy)
        return changes

    def _recentre(self, slot: JointSlot, lo: float, hi: float, policy: str) -> list[HomingChange]:
        st = self.servos.get(slot.id, ServoState(slot.id, ""))
        if policy == "auto" and not needs_recentre(lo, hi, st.operating_mode):
            return []
        primary = recentre(slot.id, st.homing_offset, (lo + hi) / 2)
        out = [primary]
        if slot.shadow_id is not None:
            sh = self.servos.get(slot.shadow_id, ServoState(slot.shadow_id, ""))
            out.append(follow(primary, slot.shadow_id, sh.homing_offset))
        return out


# ---- the bus-side driver ---------------------------------------------------------------------------

class ArmCalibrator:
    """Runs an :class:`ArmProcedure` on a live bus: probe, torque off, sample, write, save."""

    def __init__(self, cfg: Any, port: str, *, homing: str = "auto", directory: Path | None = None,
                 bus: Any = None):
        if homing not in HOMING_POLICIES:
            raise CalibrationError(f"--homing {homing!r}: use one of {', '.join(HOMING_POLICIES)}")
        self.cfg = cfg
        self.port = port
        self.homing = homing
        self.directory = directory
        self._bus = bus
        self.bus = None
        self.servos: dict[int, ServoState] = {}
        self.procedure: ArmProcedure | None = None
        self.changes: list[HomingChange] = []

    def open(self) -> ArmCalibrator:
        from drivers.dynamixel.bus import DynamixelBus

        # Not time-critical: generous timeouts ride out a busy machine.
        self.bus = self._bus or DynamixelBus(self.port, self.cfg.baud, retries=4, timeout_margin_ms=100).open()
        self.servos = probe_servos(self.bus, self.cfg, self.port)
        self.bus.set_torque(list(self.servos), False)  # moved by hand; EEPROM writable
        self.bus.read(next(iter(self.servos)), "torque_enable")  # a reply proves the write went out
        self.procedure = ArmProcedure.for_config(self.cfg, self.servos)
        self._reader = self.bus.reader(self.procedure.ids, "present_position")
        return self

    def close(self) -> None:
        if self.bus is not None and self._bus is None:
            self.bus.close()
        self.bus = None

    def __enter__(self) -> ArmCalibrator:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def sample(self, n: int = 1) -> dict[int, int]:
        """Read every servo (``n`` times, keeping the median: one stray reply never sets a zero)."""
        rows = np.array([self._reader.read()[:, 0] for _ in range(n)])
        med = np.median(rows, axis=0)
        readings = {sid: int(round(v)) for sid, v in zip(self.procedure.ids, med, strict=True)}
        self.procedure.feed(readings)
        return readings

    def confirm(self) -> Step:
        if not self.procedure.step.sweep:
            self.sample(3)
        return self.procedure.confirm()

    def finish(self, save: bool = True) -> StoredArm:
        """Write any Homing Offset changes (torque is off), read them back, build and save the file."""
        proc = self.procedure
        self.changes = proc.homing_changes(self.homing)
        for ch in self.changes:
            self.bus.write(ch.id, "homing_offset", ch.new)
        now = read_registers(self.bus, sorted(self.servos))
        for ch in self.changes:
            if now[ch.id]["homing_offset"] != ch.new:
                raise CalibrationError(f"{self.port}, servo {ch.id}: wrote Homing Offset {ch.new} but it reads "
                                       f"{now[ch.id]['homing_offset']}; check that torque is off and try again")
        shifts = {ch.id: ch.shift for ch in self.changes}
        cal = proc.calibration(shifts)
        regs = tuple(ServoRegisters(sid, r["homing_offset"], r["drive_mode"], r["operating_mode"])
                     for sid, r in now.items())
        identity = ArmIdentity.of(adapter_identity(self.cfg.port, self.cfg.name),
                                  [(s.id, s.model) for s in self.servos.values()])
        names = tuple(j.name for j in self.cfg.joints)
        stored = StoredArm(self.cfg.name, identity, cal, names, regs, now_iso())
        if save:
            path = save_arm(stored, self.directory)
            stored = StoredArm(stored.arm, identity, ArmCalibration(cal.joints, cal.gripper, source=f"file:{path}",
                                                                   origin=stored), names, regs, stored.created, path)
        return stored


def probe_servos(bus: Any, cfg: Any, port: str) -> dict[int, ServoState]:
    """Ping every servo the config lists; refuse a missing one or a model other than the config's."""
    from drivers.dynamixel.errors import DynamixelError

    found = {}
    for sid, model in config_servos(cfg):
        try:
            info = bus.ping(sid)
        except DynamixelError as exc:
            raise CalibrationError(f"{cfg.name}: servo {sid} does not answer on {port} ({exc})") from None
        if info.model_name != model:
            raise CalibrationMismatch(
                f"{cfg.name}: servo {sid} on {port} is a {info.model_name}, but the config says {model}; is this the "
                "right arm on this port? Fix the config or plug in the arm it describes")
        found[sid] = model
    regs = read_registers(bus, list(found))
    return {sid: ServoState(sid, m, regs[sid]["operating_mode"], regs[sid]["homing_offset"], regs[sid]["drive_mode"])
            for sid, m in found.items()}


def read_registers(bus: Any, ids: list[int]) -> dict[int, dict[str, int]]:
    """Drive Mode .. Homing Offset of each servo in one sync read, read until two reads agree
    (a reply that arrives late on a loaded machine must not pass for a register value)."""
    last = None
    for _ in range(6):
        now = bus.sync_read(ids, "drive_mode", "homing_offset")
        if now == last:
            return now
        last = now
    raise CalibrationError(f"{bus.port_name}: servo registers read differently each time; check the cable "
                           "and that nothing else uses this port")

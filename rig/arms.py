"""Arms: the interface the control loop talks to, and its kinds. A Dynamixel arm (leader or
follower) is a servo bus plus the calibration that turns ticks into joint values; a handheld
leader is a gripper's jaw.

An arm reads its state into preallocated arrays and (for a follower) writes goal ticks; neither
allocates per tick. Units on the rig side: arm joints in radians, the gripper normalized
(0 closed .. 1 open), velocities per second, currents in mA.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from calibration.arm import ArmCalibration, CalibrationError
from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.control_table import OPERATING_MODES, STATE_BLOCK, model_by_name, velocity_to_rad_s
from drivers.dynamixel.errors import (
    CorruptReply,
    DynamixelError,
    HardwareAlert,
    NoStatusPacket,
    decode_hardware_error,
)
from drivers.errors import RigError
from rig.config import ArmConfig
from rig.shaping import joint_limits


def arm_calibration(cfg: ArmConfig) -> ArmCalibration:
    """The arm's calibration: inline in the config, else its stored file, else raw (if allowed).

    A stored file is checked against the config here (adapter identity from the port, servo IDs
    and models); ``calibration.apply.verify_connected`` checks it against the servos once the bus
    is open. A file that belongs to another arm is refused, never applied.
    """
    if cfg.calibration is not None:
        return cfg.calibration
    from calibration.store import arm_file, load_for_config

    stored = load_for_config(cfg)
    if stored is not None:
        return stored.calibration
    if cfg.allow_uncalibrated:
        return ArmCalibration.identity(len(cfg.joints), _raw_gripper() if cfg.gripper else None)
    raise CalibrationError(
        f"arm {cfg.name!r} is not calibrated, so its joints could move the wrong way: the config has no "
        f"[arms.calibration] and there is no file {arm_file(cfg.name)}. Run `rig calibrate arm {cfg.name}`, "
        "or set `allow_uncalibrated = true` for it in the config to mirror raw ticks")


def _raw_gripper():
    from calibration.arm import GripperCalibration
    return GripperCalibration(open=3072.0, closed=2048.0)


@dataclass
class ArmHealth:
    """Slow-changing state, polled about once a second per arm (never on every tick)."""

    torque_on: bool | None = None  # all servos on (None: not read yet)
    min_voltage_v: float | None = None
    max_temperature_c: int | None = None
    hardware_errors: dict[int, list[str]] = field(default_factory=dict)
    last_error: str | None = None
    t_ns: int = 0


class Arm(ABC):
    """What the control loop knows of an arm, whatever moves or measures it (model: LeRobot's
    robot interface, a device that declares its features).

    The loop reads every arm each tick into its preallocated ``q``, ``dq`` and ``current``; it
    never touches the device behind it. Counters and alerts live here: :meth:`read` counts reads
    and misses, :meth:`alert` says whether the device raised a hardware alert.
    """

    cfg: ArmConfig
    name: str
    n_joints: int  # arm joints; a gripper value (if any) follows them in q
    q: np.ndarray  # joint values, rig units
    dq: np.ndarray
    current: np.ndarray
    health: ArmHealth

    def __init__(self, cfg: ArmConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.health = ArmHealth()
        self.reads = 0
        self.misses = 0
        self.consecutive_misses = 0

    @property
    def features(self) -> dict[str, str]:
        """Each value this arm contributes to a state vector, in order: name -> unit."""
        out = {j.name: "rad" for j in self.cfg.joints}
        if self.cfg.gripper is not None:
            out[self.cfg.gripper.name] = "normalized (0 closed .. 1 open)"
        return out

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    def read(self) -> None:
        """Read the arm's state into q, dq and current; raises RigError on failure (counted)."""
        try:
            self._read()
        except BaseException:
            self.misses += 1
            self.consecutive_misses += 1
            raise
        self.reads += 1
        self.consecutive_misses = 0

    @abstractmethod
    def _read(self) -> None: ...

    def alert(self) -> RigError | None:
        """A hardware alert the device raised (e.g. an overheating servo), else None."""
        return None

    @abstractmethod
    def read_health(self) -> ArmHealth: ...

    def open(self) -> Arm:
        return self

    def close(self) -> None:
        return None

    def prepare(self) -> None:
        """Ready for the loop (modes, torque); called once before the first tick."""
        return None

    def go_hot(self) -> None:
        """Enter the control loop: waits drop to what fits in a tick."""
        return None

    def go_cold(self) -> None:
        """Leave the control loop: setup's patient waits again."""
        return None

    def torque_off(self) -> None:
        """Leave the arm limp (a leader at the end); nothing to do for an arm without motors."""
        return None


class DynamixelArm(Arm):
    """An arm of Dynamixel servos on one bus, with the calibration that maps ticks to joints."""

    SETUP_RETRIES = 4  # setup is not time-critical: ride out a busy machine

    def __init__(self, cfg: ArmConfig, port: str, *, retries: int = 0, timeout_margin_ms: float | None = None):
        super().__init__(cfg)
        self.calibration = arm_calibration(cfg)
        # Tight timeouts: two tries of a 9-servo read must fit in a 20 ms tick. The simulated world
        # shares this machine's cores with the rig, so its replies get a little more slack.
        if timeout_margin_ms is None:
            timeout_margin_ms = 6.0 if cfg.is_sim else 3.0
        self.hot_retries = retries
        self.bus = DynamixelBus(port, cfg.baud, retries=self.SETUP_RETRIES, timeout_margin_ms=timeout_margin_ms)
        self.read_ids = cfg.servo_ids  # every servo, shadows included: all of them must answer
        self.value_ids = [j.id for j in cfg.joints] + ([cfg.gripper.id] if cfg.gripper else [])
        self._rows = [self.read_ids.index(i) for i in self.value_ids]
        n = cfg.n_values
        self.n_joints = len(cfg.joints)
        self.ticks = np.zeros(n)
        self.q = np.zeros(n)  # joint values, rig units
        self.dq = np.zeros(n)
        self.current = np.zeros(n)
        models = [model_by_name(j.model) for j in (*cfg.joints, *([cfg.gripper] if cfg.gripper else []))]
        self._current_unit = np.array([m.current_unit_ma or 0.1 for m in models])
        self._reader = None
        self.notes: list[str] = []  # what setup did that a person should know (e.g. a reboot)

    def open(self) -> DynamixelArm:
        self.bus.open()
        self.bus.learn_return_delays(self.read_ids)  # read timeouts follow each servo's return delay
        self._reader = self.bus.reader(self.read_ids, *STATE_BLOCK[::2])
        self._torque = self.bus.reader(self.read_ids, "torque_enable", "hardware_error_status")
        self._thermal = self.bus.reader(self.read_ids, "present_input_voltage", "present_temperature")
        return self

    @property
    def connected(self) -> bool:
        return self.bus.is_open

    def read_health(self) -> ArmHealth:
        """Torque, hardware errors, voltage and temperature of every servo: two small sync reads."""
        h = self.health
        try:
            t = self._torque.read()  # torque_enable, led, status_return_level, registered, hw error
            v = self._thermal.read()  # input voltage (0.1 V), temperature (deg C)
        except DynamixelError as exc:
            h.last_error = str(exc)
            return h
        h.torque_on = bool(np.all(t[:, 0] == 1))
        h.hardware_errors = {sid: decode_hardware_error(int(b)) for sid, b in zip(self.read_ids, t[:, -1])
                             if b}
        h.min_voltage_v = float(v[:, 0].min()) / 10
        h.max_temperature_c = int(v[:, -1].max())
        h.t_ns = time.monotonic_ns()
        return h

    def alert(self) -> RigError | None:
        """A servo whose status packet carried the alert bit: its decoded hardware error."""
        alerts = self.bus.alerts
        if not alerts:
            return None
        sid = next(iter(alerts))
        try:
            bits = self.bus.hardware_error(sid)
        except DynamixelError:
            bits = 0
        return HardwareAlert(bits, port=self.bus.port_name, servo_id=sid)

    def close(self) -> None:
        self.bus.close()

    def go_hot(self) -> None:
        self.bus.retries = self.hot_retries

    def go_cold(self) -> None:
        self.bus.retries = self.SETUP_RETRIES

    def _read(self) -> None:
        """One sync read of current, velocity and position; raises DynamixelError on failure."""
        raw = self._reader.read()
        rows = self._rows
        self.ticks[:] = raw[rows, 2]
        nj = self.n_joints
        cal = self.calibration
        cal.to_radians(self.ticks[:nj], out=self.q[:nj])
        self.dq[:] = velocity_to_rad_s(raw[rows, 1])
        self.dq[:nj] *= cal.signs
        self.current[:] = raw[rows, 0] * self._current_unit
        if cal.gripper is not None:
            self.q[nj] = cal.gripper_to_normalized(self.ticks[nj])
            self.dq[nj] *= 4096 / (2 * np.pi) / (cal.gripper.open - cal.gripper.closed)

    def torque_off(self) -> None:
        self.bus.set_torque(self.read_ids, False)

    def reboot_faulted(self) -> list[str]:
        """Reboot every servo whose Hardware Error Status is set; returns what was done."""
        notes = []
        errors = self._torque.read()[:, -1]  # one sync read: torque enable .. hardware error status
        for sid, bits in zip(self.read_ids, map(int, errors), strict=True):
            if bits:
                self.bus.reboot(sid)
                what = ", ".join(decode_hardware_error(bits)) or f"bits {bits:#04x}"
                notes.append(f"arm {self.name}: servo {sid} was in hardware error ({what}); rebooted it")
        return notes


class Follower(DynamixelArm):
    def __init__(self, cfg: ArmConfig, port: str, **kw):
        super().__init__(cfg, port, **kw)
        self.goal_ticks = np.zeros(cfg.n_values)
        self._writer = None
        self.lower, self.upper = joint_limits(cfg)
        self.watchdog_ms = 0.0  # as armed by the loop; 0: not armed
        self.watchdog_armed = False
        self.tripped: list[int] = []  # servos the health poll found stopped by their watchdog

    def open(self) -> Follower:
        super().open()
        self._writer = self.bus.writer(self.value_ids, "goal_position")
        self._watchdog = self.bus.reader(self.read_ids, "bus_watchdog")
        return self

    def read_health(self) -> ArmHealth:
        h = super().read_health()
        if self.watchdog_armed:
            with contextlib.suppress(DynamixelError):
                fired = self._watchdog.read()[:, 0]
                self.tripped = [sid for sid, v in zip(self.read_ids, fired, strict=True) if v == -1]
        return h

    def alert(self) -> RigError | None:
        """A servo's hardware error, or servos the health poll found stopped by their bus watchdog."""
        if self.tripped:
            return RigError(
                f"servo(s) {', '.join(map(str, self.tripped))} stopped on their bus watchdog: no instruction "
                f"reached them for {self.watchdog_ms:g} ms (the machine stalled?). Restart; if it repeats, raise "
                "[safety] watchdog_ms")
        return super().alert()

    def prepare(self) -> None:
        """Torque off, operating modes, then torque on holding the present pose.

        A servo left in hardware error (a reconnect after a fault) is rebooted here, and said so
        in ``notes``; a Bus Watchdog left fired by a killed process is cleared (it would refuse
        every goal)."""
        bus = self.bus
        bus.set_torque(self.read_ids, False)
        bus.read(self.read_ids[0], "led")  # a reply proves the reply-less writes were processed
        self.notes = self.reboot_faulted()
        bus.sync_write("bus_watchdog", dict.fromkeys(self.read_ids, 0))  # one left fired would refuse goals
        cfg = self.cfg
        for j in cfg.joints:
            for sid in (j.id, j.shadow_id):
                if sid is not None and bus.read(sid, "operating_mode") != OPERATING_MODES["position"]:
                    bus.write(sid, "operating_mode", OPERATING_MODES["position"])
        if cfg.gripper is not None:
            g = cfg.gripper
            model = model_by_name(g.model)
            cbp = OPERATING_MODES["current_based_position"]
            mode = cbp if cfg.gripper_current_limit and model.supports(cbp) else OPERATING_MODES["position"]
            if bus.read(g.id, "operating_mode") != mode:
                bus.write(g.id, "operating_mode", mode)
            if mode == cbp:
                bus.write(g.id, "current_limit", cfg.gripper_current_limit)
        bus.set_torque(self.read_ids, True)

    def arm_watchdog(self, ms: float) -> None:
        """The loop starts driving: each servo stops on its own if no instruction comes for
        ``ms`` ([safety] watchdog_ms): a killed process, an unplugged adapter. 0: not armed."""
        if ms:
            try:
                self.bus.set_watchdog(self.read_ids, ms)
            except (NoStatusPacket, CorruptReply):
                pass  # the writes went out; a servo that does not answer is the loop's missed-read fault
            self.watchdog_ms, self.watchdog_armed = ms, True

    def command(self, target: np.ndarray) -> None:
        """Send targets (rig units) as goal positions to every joint and the gripper."""
        nj = self.n_joints
        cal = self.calibration
        cal.to_ticks(target[:nj], out=self.goal_ticks[:nj])
        if cal.gripper is not None:
            self.goal_ticks[nj] = cal.gripper_to_ticks(target[nj])
        np.rint(self.goal_ticks, out=self.goal_ticks)
        self._writer.write(self.goal_ticks.astype(np.int64))

    def make_safe(self, hold: bool) -> str:
        """Stop where it is; torque off (confirmed servo by servo) unless holding. Never raises:
        the bus may be gone. Returns what actually happened, for the operator."""
        bus, ids = self.bus, self.read_ids
        try:
            self.read()
            self.command(self.q)  # freeze at the present pose before letting go
        except DynamixelError as exc:
            if bus.port.lost or not bus.is_open:
                with contextlib.suppress(Exception):
                    bus.torque_off_everywhere()
                after = (f"; their bus watchdog stops them within {self.watchdog_ms:g} ms"
                         if self.watchdog_armed else "")
                return f"unreachable ({exc}){after}"
        if hold:
            failed = bus.clear_watchdog(ids)  # holding after rig exits is what was asked for
            self.watchdog_armed = bool(failed)
            if failed:
                return (f"holding; servo(s) {', '.join(map(str, failed))} did not confirm the watchdog cleared: "
                        "they stop on their own")
            return "holding"
        failed = bus.torque_off_confirmed(ids)
        if not failed:
            bus.clear_watchdog(ids)  # torque is off: leave 98 at 0 for the next start
            self.watchdog_armed = False
            return f"stopped; torque off confirmed on {len(ids)} of {len(ids)}"
        with contextlib.suppress(Exception):
            bus.torque_off_everywhere()  # one more try on every servo at once
        after = f"; its bus watchdog stops it within {self.watchdog_ms:g} ms" if self.watchdog_armed else ""
        names = ", ".join(map(str, failed))
        return (f"servo {names} did not confirm torque off ({len(ids) - len(failed)} of {len(ids)} confirmed)"
                f"{after}; switch the arm's power off")


class Leader(DynamixelArm):
    def prepare(self) -> None:
        """Leaders are moved by hand: torque off so they are limp."""
        self.bus.set_torque(self.read_ids, False)
        self.notes = self.reboot_faulted()


class HandheldLeader(Arm):
    """A handheld gripper as a leader: its jaw (0 closed .. 1 open) drives a follower's gripper.

    No motors and no servo bus: prepare, torque and retries have nothing to do; its alerts are
    none (the driver reports device errors in its own stats)."""

    def __init__(self, cfg: ArmConfig, gripper):
        super().__init__(cfg)
        self.gripper = gripper  # drivers.gripper.HandheldGripper, owned by the session
        self.n_joints = 0
        self.q = np.zeros(1)
        self.dq = np.zeros(1)
        self.current = np.zeros(1)

    @property
    def features(self) -> dict[str, str]:
        return {"jaw": "normalized (0 closed .. 1 open)"}

    @property
    def connected(self) -> bool:
        return self.gripper.connected

    def _read(self) -> None:
        sample = self.gripper.latest
        if sample is None or not self.gripper.connected:
            from drivers.gripper.driver import GripperError
            raise GripperError(f"{self.name}: the handheld gripper is not streaming (unplugged?); "
                               "it reconnects on its own when plugged back in")
        self.q[0] = sample.jaw_normalized

    def read_health(self) -> ArmHealth:
        self.health.torque_on = False
        self.health.t_ns = time.monotonic_ns()
        return self.health

"""A chain of Dynamixel X-series servos emulated byte for byte on a pseudo-terminal.

The host talks to the pty's slave end exactly as it would to a U2D2 adapter: through
dynamixel-sdk, pyserial, or ``rig scan``. One thread per bus reads instruction packets from the
master end and answers with status packets, timed as the real wire would deliver them: the
instruction's own transmission time at the host's baud, each servo's Return Delay Time, then
the reply's transmission time.

Positions: a servo keeps a *physical* shaft angle in ticks. What it reports is
``sign * physical + homing_offset`` (sign -1 when Drive Mode bit 0 is set), as X-series do.
A simulator that owns the physics sets ``external_motion`` and feeds the physical state through
:meth:`EmulatedServo.set_present`, reading the physical goal from :attr:`goal_position`.

Bus Watchdog (98): with torque on and 98 = 1..127, a servo that hears no valid instruction packet
(any ID, at its baud) for 98 x 20 ms stops where it is (Goal Position := present), keeps torque,
reads 98 as -1 and answers goal writes with an access error until 0 is written to 98. It runs on
after the host closes the port or :meth:`EmulatedBus.unplug`, as powered servos do.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
import tty
from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.dynamixel import protocol as p
from drivers.dynamixel.control_table import (
    BAUD_CODES,
    BAUD_TABLE,
    EEPROM_END,
    OPERATING_MODES,
    REGISTERS,
    TABLE_SIZE,
    Model,
    Register,
    fits,
    model_by_name,
    to_signed,
    to_unsigned,
)
from drivers.dynamixel.termios_baud import pty_baud

_BY_ADDRESS: dict[int, Register] = {r.address: r for r in REGISTERS.values()}
_POSITION_MODES = {OPERATING_MODES["position"], OPERATING_MODES["extended_position"],
                   OPERATING_MODES["current_based_position"]}
_EXTENDED_LIMIT = 1_048_575
_HOMING_LIMIT = 1_044_479
_MOTION_TAU_S = 0.04  # first-order time constant of the built-in motion model
_SHUTDOWN_DEFAULT = 0b0011_0100  # overheating, electrical shock, overload
_WATCHDOG_UNIT_S = 0.02  # Bus Watchdog register unit
_WATCHDOG_FIRED = -1  # what Bus Watchdog reads after it fired
_GOAL_REGISTERS = {"goal_pwm", "goal_current", "goal_velocity", "goal_position"}


@dataclass
class ServoSpec:
    id: int
    model: str = "xm430-w350"
    baud: int | None = None  # bits/s; None = the bus's baud
    firmware: int = 52
    secondary_id: int | None = None
    drive_mode: int = 0
    homing_offset: int = 0
    return_delay: int = 0  # register units of 2 µs; factory default is 250, rigs set 0
    operating_mode: int = 3
    position: float = 2048.0  # physical shaft angle at power-up, ticks
    fast_sync_read: bool = True  # older firmware answers FAST_SYNC_READ with an instruction error
    extra: dict[str, int] = field(default_factory=dict)  # other register values at power-up


class EmulatedServo:
    """One servo: its control-table memory and a first-order motion model."""

    def __init__(self, spec: ServoSpec, bus_baud: int):
        self.spec = spec
        self.model: Model = model_by_name(spec.model)
        self.mem = bytearray(TABLE_SIZE)
        self.external_motion = False
        self.registered: tuple[int, bytes] | None = None
        self._pending: dict[str, int] = {}
        self._baud = spec.baud or bus_baud
        self._physical = float(spec.position)
        self._velocity = 0.0  # ticks/s
        self._current = 0.0  # raw current units
        self._last_motion = time.monotonic()
        self.last_instruction = time.monotonic()  # when this servo last heard an instruction packet
        self.watchdog_fired_at: float | None = None  # monotonic time the Bus Watchdog stopped it
        self._power_on(keep_id=False, keep_baud=False)

    # ---- memory ---------------------------------------------------------------------------

    def _power_on(self, keep_id: bool, keep_baud: bool) -> None:
        """Factory EEPROM from the spec plus RAM defaults (also what REBOOT restores in RAM)."""
        old_id, old_baud = self.get("id"), self.get("baud_rate")
        s, m = self.spec, self.model
        self.mem[:] = bytes(TABLE_SIZE)
        values = {
            "model_number": m.number,
            "firmware_version": s.firmware,
            "id": s.id,
            "baud_rate": BAUD_CODES.get(self._baud, 3),
            "return_delay_time": s.return_delay,
            "drive_mode": s.drive_mode,
            "operating_mode": s.operating_mode,
            "secondary_id": 255 if s.secondary_id is None else s.secondary_id,
            "protocol_type": 2,
            "homing_offset": s.homing_offset,
            "moving_threshold": 10,
            "temperature_limit": 80,
            "max_voltage_limit": 160,
            "min_voltage_limit": 95,
            "pwm_limit": 885,
            "current_limit": m.default_current_limit,
            "velocity_limit": m.default_velocity_limit,
            "max_position_limit": 4095,
            "min_position_limit": 0,
            "shutdown": _SHUTDOWN_DEFAULT,
            "status_return_level": 2,
            "velocity_i_gain": 1920,
            "velocity_p_gain": 100,
            "position_p_gain": 800,
            "profile_velocity": 0,
            "present_input_voltage": 121,
            "present_temperature": 34,
            **s.extra,
        }
        for name, value in values.items():
            self.set(name, value)
        if keep_id:
            self.set("id", old_id)
        if keep_baud:
            self.set("baud_rate", old_baud)
        self._refresh_present()
        self.set("goal_position", self.get("present_position"))

    def get(self, name: str) -> int:
        r = REGISTERS[name]
        raw = int.from_bytes(self.mem[r.address:r.end], "little")
        return to_signed(raw, r.size) if r.signed else raw

    def set(self, name: str, value: int) -> None:
        r = REGISTERS[name]
        self.mem[r.address:r.end] = to_unsigned(int(value), r.size).to_bytes(r.size, "little")

    # ---- identity ------------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.mem[7]

    @property
    def secondary_id(self) -> int | None:
        sid = self.mem[12]
        return sid if sid <= p.MAX_ID else None

    @property
    def baud(self) -> int:
        return BAUD_TABLE.get(self.mem[8], 0)

    @property
    def return_delay_s(self) -> float:
        return self.mem[9] * 2e-6

    @property
    def status_return_level(self) -> int:
        return self.mem[68]

    @property
    def torque_enabled(self) -> bool:
        return self.mem[64] == 1

    @property
    def hardware_error(self) -> int:
        return self.mem[70]

    @property
    def _sign(self) -> int:
        return -1 if self.mem[10] & 1 else 1

    # ---- physics interface -----------------------------------------------------------------

    @property
    def goal_position(self) -> float:
        """The goal as a physical shaft angle in ticks (Drive Mode and Homing Offset undone)."""
        return (self.get("goal_position") - self.get("homing_offset")) * self._sign

    @property
    def physical_position(self) -> float:
        return self._physical

    def set_present(self, position: float, velocity: float = 0.0, current: float = 0.0) -> None:
        """Physical state from an external simulator: ticks, ticks/s, raw current units."""
        self._physical = float(position)
        self._velocity = float(velocity)
        self._current = float(current)
        self._refresh_present()

    def set_hardware_error(self, bits: int) -> None:
        """Raise Hardware Error Status bits (see control_table.HARDWARE_ERROR_BITS).

        As on real servos, a bit covered by the Shutdown register drops torque.
        """
        self.mem[70] |= bits
        if bits & self.mem[63]:
            self.mem[64] = 0

    # ---- Bus Watchdog ------------------------------------------------------------------------

    @property
    def watchdog_deadline(self) -> float | None:
        """When the Bus Watchdog fires if no instruction arrives first; None while it cannot."""
        units = self.get("bus_watchdog")
        if units <= 0 or not self.torque_enabled:
            return None
        return self.last_instruction + units * _WATCHDOG_UNIT_S

    @property
    def watchdog_fired(self) -> bool:
        return self.get("bus_watchdog") == _WATCHDOG_FIRED

    def heard(self, now: float) -> None:
        """An instruction packet reached this servo: the watchdog's interval starts again.

        The bus checks for a missed deadline only while no packet is waiting, so a packet that
        sat in the pty while the emulator thread was descheduled still counts as on time."""
        self.last_instruction = now

    def check_watchdog(self, now: float) -> bool:
        """Fire the watchdog if its interval has passed: stop where it is, torque stays on, 98
        reads -1 and goal writes are refused until 0 is written to 98. True if it fired now."""
        deadline = self.watchdog_deadline
        if deadline is None or now < deadline:
            return False
        self._step_motion(now)
        self._refresh_present()
        self.set("goal_position", self.get("present_position"))
        self.set("bus_watchdog", _WATCHDOG_FIRED)
        self.watchdog_fired_at = now
        return True

    def _step_motion(self, now: float) -> None:
        dt = now - self._last_motion
        self._last_motion = now
        if self.external_motion or dt <= 0:
            return
        if not (self.torque_enabled and self.mem[11] in _POSITION_MODES):
            self._velocity = 0.0
            self._current = 0.0
            return
        target = self.goal_position
        before = self._physical
        self._physical = target + (before - target) * math.exp(-dt / _MOTION_TAU_S)
        self._velocity = (self._physical - before) / dt
        limit = self.get("current_limit") or 1000
        self._current = max(-limit, min(limit, (target - self._physical) * 2.0))

    def _refresh_present(self) -> None:
        reported = self._sign * self._physical + self.get("homing_offset")
        self.set("present_position", int(round(reported)))
        # Present Velocity unit: 0.229 rpm; 1 tick/s = 60/4096 rpm.
        self.set("present_velocity", int(round(self._sign * self._velocity * 60.0 / 4096 / 0.229)))
        self.set("present_current", int(round(self._sign * self._current)))
        moving = abs(self._velocity) * 60.0 / 4096 / 0.229 > self.get("moving_threshold")
        self.mem[122] = 1 if moving else 0

    # ---- instruction semantics -------------------------------------------------------------

    def status_error(self, code: int = 0) -> int:
        return code | (p.ERR_ALERT if self.mem[70] else 0)

    def read(self, address: int, length: int, now: float) -> tuple[int, bytes]:
        if address + length > TABLE_SIZE or length == 0:
            return p.ERR_DATA_RANGE, b""
        self._step_motion(now)
        self._refresh_present()
        self.set("realtime_tick", int(now * 1000) % 32768)
        return 0, bytes(self.mem[address:address + length])

    def write(self, address: int, data: bytes) -> int:
        """Apply a write atomically; returns the status error code (0 on success)."""
        end = address + len(data)
        if not data or end > TABLE_SIZE:
            return p.ERR_DATA_RANGE
        updates: list[tuple[Register, int]] = []
        a = address
        while a < end:
            reg = _BY_ADDRESS.get(a)
            if reg is None:
                if any(r.address < a < r.end for r in REGISTERS.values()):
                    return p.ERR_DATA_LENGTH  # write starts inside a register
                a += 1  # reserved byte: accepted and ignored, as the firmware does
                continue
            if reg.end > end:
                return p.ERR_DATA_LENGTH
            raw = int.from_bytes(data[a - address:reg.end - address], "little")
            updates.append((reg, to_signed(raw, reg.size) if reg.signed else raw))
            a = reg.end
        for reg, value in updates:
            code = self._check(reg, value)
            if code:
                return code
        for reg, value in updates:
            self._apply(reg, value)
        return 0

    def _check(self, reg: Register, value: int) -> int:
        if not reg.writable:
            return p.ERR_ACCESS
        if reg.address < EEPROM_END and self.torque_enabled:
            return p.ERR_ACCESS  # EEPROM is locked while torque is on
        if reg.name == "current_limit" and not self.model.has_current_limit:
            return p.ERR_ACCESS
        if reg.name in _GOAL_REGISTERS and self.watchdog_fired:
            return p.ERR_ACCESS  # a fired Bus Watchdog locks the goals until 98 is cleared
        if reg.name == "bus_watchdog":
            if not 0 <= value <= 127:
                return p.ERR_DATA_RANGE
            if value and self.watchdog_fired:
                return p.ERR_ACCESS  # clear it (write 0) before arming it again
        ranges = {
            "id": (0, p.MAX_ID),
            "return_delay_time": (0, 254),
            "drive_mode": (0, 13),
            "secondary_id": (0, 255),
            "homing_offset": (-_HOMING_LIMIT, _HOMING_LIMIT),
            "torque_enable": (0, 1),
            "led": (0, 1),
            "status_return_level": (0, 2),
            "max_position_limit": (0, 4095),
            "min_position_limit": (0, 4095),
        }
        if reg.name in ranges:
            lo, hi = ranges[reg.name]
            if not lo <= value <= hi:
                return p.ERR_DATA_RANGE
        if reg.name == "baud_rate" and value not in BAUD_TABLE:
            return p.ERR_DATA_RANGE
        if reg.name == "operating_mode" and not self.model.supports(value):
            return p.ERR_DATA_RANGE
        if reg.name == "goal_position":
            mode = self.mem[11]
            if mode == OPERATING_MODES["position"]:
                if not self.get("min_position_limit") <= value <= self.get("max_position_limit"):
                    return p.ERR_DATA_LIMIT
            elif abs(value) > _EXTENDED_LIMIT:
                return p.ERR_DATA_LIMIT
        if reg.name == "goal_current" and abs(value) > (self.get("current_limit") or 0):
            return p.ERR_DATA_LIMIT
        if not fits(reg, value):
            return p.ERR_DATA_RANGE
        return 0

    def _apply(self, reg: Register, value: int) -> None:
        if reg.name == "torque_enable" and value == 1:
            if self.mem[70] & self.mem[63]:
                return  # a shutdown error keeps torque off until REBOOT
            if not self.torque_enabled:
                self._step_motion(time.monotonic())
                self._refresh_present()
                # Enabling torque holds the present position instead of jumping to a stale goal.
                self.set("goal_position", self.get("present_position"))
        if reg.name == "bus_watchdog" and value == 0:
            self.watchdog_fired_at = None
        if reg.name in ("id", "baud_rate"):
            # A new ID or baud applies once this instruction's status packet is on its way.
            self._pending[reg.name] = value
            return
        self.set(reg.name, value)

    def finish_instruction(self) -> None:
        for name, value in self._pending.items():
            self.set(name, value)
        self._pending.clear()

    def reboot(self) -> None:
        """RAM back to defaults, Hardware Error Status cleared; EEPROM survives."""
        eeprom = bytes(self.mem[:EEPROM_END])
        self._power_on(keep_id=True, keep_baud=True)
        self.mem[:EEPROM_END] = eeprom
        self._refresh_present()
        self.set("goal_position", self.get("present_position"))
        self.watchdog_fired_at = None

    def factory_reset(self, option: int) -> None:
        keep_id = option in (0x01, 0x02)
        keep_baud = option == 0x02
        self._power_on(keep_id=keep_id, keep_baud=keep_baud)


class EmulatedBus:
    """A chain of emulated servos served on one pty, with wire timing and fault injection."""

    def __init__(self, servos: Iterable[ServoSpec], baud: int = 1_000_000, *, wire_timing: bool = True,
                 name: str = "bus"):
        self.name = name
        self.baud = baud
        self.wire_timing = wire_timing
        self.servos = [EmulatedServo(s, baud) for s in servos]
        self.lock = threading.RLock()
        self.packets_received = 0
        self.replies_sent = 0
        self.instructions: list[int] = []  # recent instruction codes, newest last (bounded)
        self._drop: list[tuple[int | None, int]] = []
        self._corrupt: list[tuple[int | None, int]] = []
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wire_free = 0.0  # when the half-duplex line is next idle (monotonic s)
        self._unplugged = False
        self.port: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        if self._thread is not None:  # plugged back in after unplug(): one serving thread only
            self.stop()
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        self._stop.clear()
        self._unplugged = False
        self._thread = threading.Thread(target=self._serve, name=f"emulated-bus-{self.name}", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._close_fds()

    def unplug(self) -> None:
        """Simulate pulling the USB cable: the port goes away under the host. The servos keep
        their power, so their Bus Watchdogs still run until :meth:`stop`."""
        with self.lock:
            self._unplugged = True
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def __enter__(self) -> EmulatedBus:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- access ----------------------------------------------------------------------------

    def servo(self, servo_id: int) -> EmulatedServo:
        for s in self.servos:
            if s.id == servo_id:
                return s
        raise KeyError(f"no emulated servo with ID {servo_id} on {self.name}")

    # ---- fault injection -------------------------------------------------------------------

    def drop_replies(self, count: int = 1, servo_id: int | None = None) -> None:
        """The next ``count`` status packets (from ``servo_id``, or any) are never sent."""
        with self.lock:
            self._drop.append((servo_id, count))

    def corrupt_replies(self, count: int = 1, servo_id: int | None = None) -> None:
        """The next ``count`` status packets go out with a wrong CRC."""
        with self.lock:
            self._corrupt.append((servo_id, count))

    @staticmethod
    def _take(faults: list[tuple[int | None, int]], servo_id: int) -> bool:
        for i, (target, count) in enumerate(faults):
            if target is None or target == servo_id:
                if count <= 1:
                    faults.pop(i)
                else:
                    faults[i] = (target, count - 1)
                return True
        return False

    # ---- serving ---------------------------------------------------------------------------

    def check_watchdogs(self, fire: bool = True) -> float:
        """Fire every Bus Watchdog that is due; returns seconds until the next one could fire."""
        now = time.monotonic()
        wait = 0.05
        with self.lock:
            for s in self.servos:
                if fire:
                    s.check_watchdog(now)
                deadline = s.watchdog_deadline
                if deadline is not None:
                    wait = min(wait, deadline - now)
        return max(wait, 0.001)

    def _serve(self) -> None:
        buf = bytearray()
        master = self._master
        assert master is not None  # opened by start()
        wait = 0.05
        while not self._stop.is_set():
            if self._unplugged:
                self._stop.wait(self.check_watchdogs())
                continue
            try:
                ready, _, _ = select.select([master], [], [], wait)
                if not ready:
                    # Checked only when no packet is waiting: one that arrived while this thread
                    # was descheduled reached the servo in time and must be heard first.
                    wait = self.check_watchdogs()
                    continue
                chunk = os.read(master, 4096)
            except (OSError, ValueError):
                # EIO while no host has the slave open (it exited, or was killed): the servos
                # hear nothing, so their watchdogs run on.
                wait = self.check_watchdogs()
                time.sleep(min(wait, 0.005))
                continue
            t_rx = time.monotonic()
            buf += chunk
            host_baud = pty_baud(master)
            while (pkt := p.parse_stream(buf)) is not None:
                with self.lock:
                    self.packets_received += 1
                    self.instructions.append(pkt.instruction)
                    del self.instructions[:-64]
                    if pkt.crc_ok:
                        for s in self._listening(host_baud):
                            s.heard(t_rx)
                    replies = self._handle(pkt, host_baud, t_rx)
                self._send(replies, pkt.wire_length, host_baud, t_rx)
            wait = self.check_watchdogs(fire=False)  # a write may have armed one

    def _listening(self, host_baud: int | None) -> list[EmulatedServo]:
        # A servo decodes only bytes sent at its own baud; the rest is noise to it.
        return [s for s in self.servos if host_baud is not None and s.baud == host_baud]

    def _send(self, replies: list[tuple[float, bytes]], instr_len: int, host_baud: int | None,
              t_rx: float) -> None:
        """Write each reply when its last byte would arrive over a real wire.

        The line is half duplex: an instruction that follows a reply-less one (a sync write)
        queues behind its bytes, as it would behind the adapter's transmit buffer.
        """
        byte_s = 10.0 / (host_baud or self.baud)
        t = max(t_rx, self._wire_free) + instr_len * byte_s
        self._wire_free = t
        for delay, data in replies:
            t += delay + len(data) * byte_s
            if self.wire_timing:
                wait = t - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            try:
                os.write(self._master, data)  # type: ignore[arg-type]  # None only after stop()
            except (OSError, TypeError):  # TypeError: unplugged meanwhile (no master fd)
                return
            self.replies_sent += 1
            self._wire_free = t

    def _reply(self, servo: EmulatedServo, error: int, params: bytes = b"") -> tuple[float, bytes] | None:
        if self._take(self._drop, servo.id):
            return None
        pkt = p.build_status(servo.id, servo.status_error(error), params)
        if self._take(self._corrupt, servo.id):
            pkt = pkt[:-1] + bytes([pkt[-1] ^ 0xFF])
        return servo.return_delay_s, pkt

    def _replies_from(self, servos: list[EmulatedServo], make) -> list[tuple[float, bytes]]:
        """Replies for servos answering under one ID; two servos on one ID garble each other."""
        out = [r for s in servos if (r := make(s)) is not None]
        if len(out) > 1:
            width = max(len(d) for _, d in out)
            mixed = bytearray(b"\xff" * width)
            for _, d in out:
                for i, b in enumerate(d):
                    mixed[i] &= b  # open-drain style collision on a half-duplex line
            return [(out[0][0], bytes(mixed))]
        return out

    def _handle(self, pkt: p.Packet, host_baud: int | None, t_rx: float) -> list[tuple[float, bytes]]:
        servos = self._listening(host_baud)
        if not servos:
            return []
        target = pkt.servo_id
        primary = [s for s in servos if s.id == target]
        if not pkt.crc_ok:
            return self._replies_from(primary, lambda s: self._reply(s, p.ERR_CRC))
        handler = _HANDLERS.get(pkt.instruction)
        if handler is None:
            return self._replies_from(primary, lambda s: self._reply(s, p.ERR_INSTRUCTION))
        replies = handler(self, pkt, servos, primary, t_rx)
        for s in servos:
            s.finish_instruction()
        return replies

    # ---- instruction handlers ----------------------------------------------------------------

    def _addressed(self, servos: list[EmulatedServo], target: int) -> list[EmulatedServo]:
        """Servos that act on an instruction for ``target``: its ID, secondary ID, or broadcast."""
        if target == p.BROADCAST_ID:
            return servos
        return [s for s in servos if s.id == target or s.secondary_id == target]

    def _answers(self, s: EmulatedServo, level: int) -> bool:
        return s.status_return_level >= level

    def _on_ping(self, pkt, servos, primary, t_rx):
        def pong(s):
            m = s.model
            return self._reply(s, 0, bytes([m.number & 0xFF, m.number >> 8, s.mem[6]]))
        if pkt.servo_id == p.BROADCAST_ID:
            out = []
            for sid in sorted({s.id for s in servos}):
                out += self._replies_from([s for s in servos if s.id == sid], pong)
            return out
        return self._replies_from(primary, pong)

    def _on_read(self, pkt, servos, primary, t_rx):
        if len(pkt.params) != 4:
            return self._replies_from(primary, lambda s: self._reply(s, p.ERR_DATA_LENGTH))
        addr = int.from_bytes(pkt.params[0:2], "little")
        length = int.from_bytes(pkt.params[2:4], "little")

        def answer(s):
            if not self._answers(s, 1):
                return None
            err, data = s.read(addr, length, t_rx)
            return self._reply(s, err, data)
        return self._replies_from(primary, answer)

    def _write_reply(self, primary, code_of):
        return self._replies_from(
            primary, lambda s: self._reply(s, code_of(s)) if self._answers(s, 2) else None)

    def _on_write(self, pkt, servos, primary, t_rx):
        if len(pkt.params) < 3:
            return self._replies_from(primary, lambda s: self._reply(s, p.ERR_DATA_LENGTH))
        addr = int.from_bytes(pkt.params[0:2], "little")
        data = pkt.params[2:]
        codes = {id(s): s.write(addr, data) for s in self._addressed(servos, pkt.servo_id)}
        return self._write_reply(primary, lambda s: codes.get(id(s), 0))

    def _on_reg_write(self, pkt, servos, primary, t_rx):
        if len(pkt.params) < 3:
            return self._replies_from(primary, lambda s: self._reply(s, p.ERR_DATA_LENGTH))
        addr = int.from_bytes(pkt.params[0:2], "little")
        for s in self._addressed(servos, pkt.servo_id):
            s.registered = (addr, pkt.params[2:])
            s.mem[69] = 1
        return self._write_reply(primary, lambda s: 0)

    def _on_action(self, pkt, servos, primary, t_rx):
        codes = {}
        for s in self._addressed(servos, pkt.servo_id):
            if s.registered is None:
                codes[id(s)] = p.ERR_RESULT_FAIL
                continue
            codes[id(s)] = s.write(*s.registered)
            s.registered, s.mem[69] = None, 0
        return self._write_reply(primary, lambda s: codes.get(id(s), 0))

    def _on_reboot(self, pkt, servos, primary, t_rx):
        replies = self._write_reply(primary, lambda s: 0)
        for s in self._addressed(servos, pkt.servo_id):
            s.reboot()
        return replies

    def _on_factory_reset(self, pkt, servos, primary, t_rx):
        option = pkt.params[0] if pkt.params else 0xFF
        if any(s.torque_enabled for s in primary):
            return self._write_reply(primary, lambda s: p.ERR_ACCESS)
        replies = self._write_reply(primary, lambda s: 0)
        for s in self._addressed(servos, pkt.servo_id):
            s.factory_reset(option)
        return replies

    def _on_clear(self, pkt, servos, primary, t_rx):
        return self._write_reply(primary, lambda s: 0)

    def _sync_header(self, pkt) -> tuple[int, int, bytes]:
        addr = int.from_bytes(pkt.params[0:2], "little")
        length = int.from_bytes(pkt.params[2:4], "little")
        return addr, length, pkt.params[4:]

    def _on_sync_read(self, pkt, servos, primary, t_rx):
        addr, length, ids = self._sync_header(pkt)
        out = []
        for sid in ids:
            def answer(s):
                if not self._answers(s, 1):
                    return None
                err, data = s.read(addr, length, t_rx)
                return self._reply(s, err, data)
            out += self._replies_from([s for s in servos if s.id == sid], answer)
        return out

    def _on_fast_sync_read(self, pkt, servos, primary, t_rx):
        addr, length, ids = self._sync_header(pkt)
        chain = []
        for sid in ids:
            found = [s for s in servos if s.id == sid]
            if not found:
                break  # the chain stops at a missing servo: the host sees a truncated packet
            s = found[0]
            if not s.spec.fast_sync_read:
                # Firmware without Fast Sync Read answers on its own with an instruction error.
                return [r for r in [self._reply(s, p.ERR_INSTRUCTION)] if r]
            chain.append(s)
        if not chain:
            return []
        if any(self._take(self._drop, s.id) for s in chain):
            return []
        # One packet: FF FF FD 00 FE LEN 55 | ERR ID DATA CRC | ... | ERR ID DATA CRC(packet)
        length_field = 1 + len(ids) * (length + 4)
        packet = bytearray(p.HEADER + bytes([p.BROADCAST_ID, length_field & 0xFF, length_field >> 8,
                                             p.STATUS]))
        delay = 0.0
        for i, s in enumerate(chain):
            err, data = s.read(addr, length, t_rx)
            packet += bytes([s.status_error(err), s.id]) + data
            delay += s.return_delay_s
            if i < len(ids) - 1:
                c = p.crc(packet)  # each servo closes its part with the running CRC
                packet += bytes([c & 0xFF, c >> 8])
        if len(chain) == len(ids):
            c = p.crc(packet)
            packet += bytes([c & 0xFF, c >> 8])
            if any(self._take(self._corrupt, s.id) for s in chain):
                packet[-1] ^= 0xFF
        return [(delay, bytes(packet))]

    def _on_sync_write(self, pkt, servos, primary, t_rx):
        addr, length, body = self._sync_header(pkt)
        step = 1 + length
        for i in range(0, len(body) - step + 1, step):
            sid, data = body[i], body[i + 1:i + step]
            for s in servos:
                if s.id == sid or s.secondary_id == sid:
                    s.write(addr, data)
        return []

    def _on_bulk_read(self, pkt, servos, primary, t_rx):
        out = []
        body = pkt.params
        for i in range(0, len(body) - 4, 5):
            sid = body[i]
            addr = int.from_bytes(body[i + 1:i + 3], "little")
            length = int.from_bytes(body[i + 3:i + 5], "little")

            def answer(s, addr=addr, length=length):
                if not self._answers(s, 1):
                    return None
                err, data = s.read(addr, length, t_rx)
                return self._reply(s, err, data)
            out += self._replies_from([s for s in servos if s.id == sid], answer)
        return out

    def _on_bulk_write(self, pkt, servos, primary, t_rx):
        body = pkt.params
        i = 0
        while i + 5 <= len(body):
            sid = body[i]
            addr = int.from_bytes(body[i + 1:i + 3], "little")
            length = int.from_bytes(body[i + 3:i + 5], "little")
            data = body[i + 5:i + 5 + length]
            for s in servos:
                if s.id == sid or s.secondary_id == sid:
                    s.write(addr, data)
            i += 5 + length
        return []


_HANDLERS = {
    p.PING: EmulatedBus._on_ping,
    p.READ: EmulatedBus._on_read,
    p.WRITE: EmulatedBus._on_write,
    p.REG_WRITE: EmulatedBus._on_reg_write,
    p.ACTION: EmulatedBus._on_action,
    p.REBOOT: EmulatedBus._on_reboot,
    p.FACTORY_RESET: EmulatedBus._on_factory_reset,
    p.CLEAR: EmulatedBus._on_clear,
    p.SYNC_READ: EmulatedBus._on_sync_read,
    p.FAST_SYNC_READ: EmulatedBus._on_fast_sync_read,
    p.SYNC_WRITE: EmulatedBus._on_sync_write,
    p.BULK_READ: EmulatedBus._on_bulk_read,
    p.BULK_WRITE: EmulatedBus._on_bulk_write,
}


def arm_specs(models: Iterable[str], *, first_id: int = 1, **common) -> list[ServoSpec]:
    """Specs for a chain of servos with consecutive IDs."""
    return [ServoSpec(id=first_id + i, model=m, **common) for i, m in enumerate(models)]

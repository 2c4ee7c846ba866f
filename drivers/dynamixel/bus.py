"""One Dynamixel Protocol 2.0 bus (one USB adapter), built on dynamixel-sdk.

Everything the rig does with servos goes through :class:`DynamixelBus`. The hot path is a
:class:`SyncReader` (one contiguous register block from many servos in one transaction, Fast
Sync Read when the servos support it) and a :class:`SyncWriter` (goal positions).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
)

from drivers.dynamixel import protocol as p
from drivers.dynamixel.control_table import (
    BAUD_TABLE,
    OPERATING_MODE_NAMES,
    OPERATING_MODES,
    Model,
    block,
    fits,
    model_by_number,
    register,
    to_signed,
    to_unsigned,
)
from drivers.dynamixel.errors import (
    CorruptReply,
    DynamixelError,
    HardwareAlert,
    NoStatusPacket,
    PortLost,
    PortUnavailable,
    ServoError,
)
from drivers.dynamixel.port import BlockingPortHandler, latency_timer_advice, read_latency_timer

_STATUS_ERROR = 8  # index of the ERR byte in a status packet
_STATUS_ID = 4
FACTORY_RETURN_DELAY = 250  # Return Delay Time register units (x2 µs): what an unknown servo may have
WATCHDOG_UNIT_MS = 20  # Bus Watchdog register unit
WATCHDOG_MAX_UNITS = 127


@dataclass(frozen=True, slots=True)
class ServoInfo:
    id: int
    model_number: int
    firmware: int
    baud: int

    @property
    def model(self) -> Model | None:
        try:
            return model_by_number(self.model_number)
        except DynamixelError:
            return None
        except Exception:
            return None

    @property
    def model_name(self) -> str:
        m = self.model
        return m.name if m else f"unknown ({self.model_number})"


class DynamixelBus:
    """A servo bus on one port. Not thread-safe: one owner thread per bus."""

    def __init__(self, port: str, baud: int = 1_000_000, *, retries: int = 2, latency_timer_ms: float = 1.0,
                 timeout_margin_ms: float = 8.0, fast_sync_read: bool = True):
        if baud not in BAUD_TABLE.values():
            raise PortUnavailable(
                f"baud {baud} is not a Dynamixel X-series rate; use one of "
                f"{', '.join(str(b) for b in BAUD_TABLE.values())}", port=port)
        self.port_name = port
        self.baud = baud
        self.retries = retries
        self.fast_sync_read = fast_sync_read
        self.port = BlockingPortHandler(port, latency_timer_ms=latency_timer_ms,
                                        timeout_margin_ms=timeout_margin_ms)
        self.ph = PacketHandler(2.0)
        self.warnings: list[str] = []
        self.alerts: dict[int, int] = {}  # servo id -> ERR byte seen with the alert bit
        self.retry_count = 0
        # Return Delay Time (register units) per servo, as read or written; a servo not in here is
        # waited for as if it had the factory 500 µs, so a fresh chain never times out.
        self.return_delays: dict[int, int] = {}

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> DynamixelBus:
        if not os.path.exists(self.port_name):
            raise PortUnavailable(
                "no such port. Check the USB cable; list adapters with `ls /dev/serial/by-id/` "
                "or run `rig doctor`", port=self.port_name)
        try:
            self.port.setBaudRate(self.baud)
        except Exception as exc:  # pyserial raises SerialException/OSError with errno text
            reason = str(exc)
            fix = "close the other program using it" if "lock" in reason.lower() or "busy" in reason.lower() \
                else "add yourself to the dialout group: sudo usermod -aG dialout $USER (then log in again)" \
                if "ermission" in reason else "check the adapter"
            raise PortUnavailable(f"cannot open port ({reason}); {fix}", port=self.port_name) from None
        latency = read_latency_timer(self.port_name)
        if latency is not None and latency > 1:
            self.warnings.append(latency_timer_advice(self.port_name, latency))
        return self

    def close(self) -> None:
        if self.port.is_open:
            self.port.closePort()

    def __enter__(self) -> DynamixelBus:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self.port.is_open and not self.port.lost

    # ---- error plumbing ----------------------------------------------------------------------

    def _comm_error(self, result: int, servo_id: int | None, reg: str | None) -> DynamixelError:
        where: dict[str, Any] = dict(port=self.port_name, servo_id=servo_id, register=reg)
        if self.port.lost:
            return PortLost("the port vanished (unplugged?). Reconnect the adapter and restart; "
                            "followers stop on their own once their bus watchdog runs out (if rig armed it), "
                            "else they hold their last goal", **where)
        if result == COMM_RX_TIMEOUT:
            sid = "the servo" if servo_id is None else f"servo {servo_id}"
            return NoStatusPacket(
                f"no status packet after {self.retries + 1} tries. Check that {sid} is powered and "
                f"wired, that it runs at {self.baud} baud (find it with `rig scan {self.port_name}`), "
                "and that no two servos share an ID", **where)
        if result == COMM_RX_CORRUPT:
            return CorruptReply(
                f"corrupt reply after {self.retries + 1} tries. Two servos may share this ID "
                f"(run `rig doctor`), or the cable is noisy: check it or lower the baud", **where)
        return DynamixelError(f"communication failed: {self.ph.getTxRxResult(result)}", **where)

    def _check_status(self, error: int, servo_id: int, reg: str | None, *, alerts_ok: bool = False) -> None:
        if error & p.ERR_ALERT:
            self.alerts[servo_id] = error
        code = error & 0x7F
        if code:
            raise ServoError(code, port=self.port_name, servo_id=servo_id, register=reg)
        if error & p.ERR_ALERT and not alerts_ok:
            raise HardwareAlert(self._hardware_error_bits(servo_id), port=self.port_name,
                                servo_id=servo_id, register=reg)

    def _hardware_error_bits(self, servo_id: int) -> int:
        r = register("hardware_error_status")
        data, result, _ = self.ph.readTxRx(self.port, servo_id, r.address, 1)
        return data[0] if result == COMM_SUCCESS and data else 0

    def reply_delay_ms(self, ids: Iterable[int]) -> float:
        """What the replies of ``ids`` spend in their servos' Return Delay Time, in ms."""
        known = self.return_delays
        return sum(known.get(sid, FACTORY_RETURN_DELAY) for sid in ids) * 2e-3

    def learn_return_delays(self, ids: Iterable[int]) -> dict[int, int]:
        """Read every servo's Return Delay Time once, so read timeouts can follow it. Best effort:
        a servo that does not answer keeps the factory assumption (whoever needs it says so)."""
        ids = list(ids)
        try:
            got = self.sync_read(ids, "return_delay_time")  # one transaction for the chain
            self.return_delays.update({sid: row["return_delay_time"] for sid, row in got.items()})
        except DynamixelError:
            for sid in ids:  # someone is missing: learn the others one by one
                try:
                    self.read(sid, "return_delay_time", alerts_ok=True)  # read() records it
                except DynamixelError:
                    continue
        return dict(self.return_delays)

    def _retry(self, attempt, servo_id: int | None, reg: str | None):
        """Run ``attempt() -> (result, payload)`` until success or retries are spent."""
        result = COMM_RX_TIMEOUT
        self.port.reply_delay_ms = self.reply_delay_ms([] if servo_id is None else [servo_id])
        for i in range(self.retries + 1):
            if self.port.lost:
                break
            result, payload = attempt()
            if result == COMM_SUCCESS:
                self.retry_count += i
                return payload
        raise self._comm_error(result, servo_id, reg)

    # ---- single-servo instructions ------------------------------------------------------------

    def ping(self, servo_id: int) -> ServoInfo:
        packet = [0] * 10
        packet[_STATUS_ID], packet[5], packet[7] = servo_id, 3, p.PING

        def attempt():
            rx, result, error = self.ph.txRxPacket(self.port, packet)
            return result, (rx, error)
        rx, error = self._retry(attempt, servo_id, None)
        self._check_status(error, servo_id, None, alerts_ok=True)
        # Status params after ERR: model number (u16), firmware version (u8).
        return ServoInfo(servo_id, rx[9] | rx[10] << 8, rx[11], self.baud)

    def broadcast_ping(self) -> list[ServoInfo]:
        """Every servo answering at this baud. Takes the SDK's full listening window (~1 s)."""
        found, result = self.ph.broadcastPing(self.port)
        if self.port.lost:
            raise self._comm_error(result, None, None)
        return [ServoInfo(i, v[0], v[1], self.baud) for i, v in sorted(found.items())]

    def read(self, servo_id: int, name: str, *, alerts_ok: bool = False) -> int:
        reg = register(name)

        def attempt():
            result = self.ph.readTx(self.port, servo_id, reg.address, reg.size)
            while result == COMM_SUCCESS:
                rx, result = self.ph.rxPacket(self.port, False)
                if result == COMM_SUCCESS and rx[_STATUS_ID] == servo_id:
                    if len(rx) != 11 + reg.size:  # a late reply to an earlier read of another register
                        return COMM_RX_CORRUPT, None
                    return result, (rx[9:9 + reg.size], rx[_STATUS_ERROR])
            return result, None
        data, error = self._retry(attempt, servo_id, name)
        self._check_status(error, servo_id, name, alerts_ok=alerts_ok)
        raw = int.from_bytes(bytes(data), "little")
        if name == "return_delay_time":
            self.return_delays[servo_id] = raw
        return to_signed(raw, reg.size) if reg.signed else raw

    def write(self, servo_id: int, name: str, value: int, *, alerts_ok: bool = True) -> None:
        reg = register(name)
        if not fits(reg, int(value)):
            raise DynamixelError(f"value {value} does not fit the {reg.size}-byte register",
                                 port=self.port_name, servo_id=servo_id, register=name)
        data = list(to_unsigned(int(value), reg.size).to_bytes(reg.size, "little"))

        def attempt():
            result, error = self.ph.writeTxRx(self.port, servo_id, reg.address, reg.size, data)
            return result, error
        error = self._retry(attempt, servo_id, name)
        if name == "return_delay_time":  # applies from this write's own reply on
            self.return_delays[servo_id] = int(value)
        self._check_status(error, servo_id, name, alerts_ok=alerts_ok)

    def reboot(self, servo_id: int) -> None:
        def attempt():
            result, error = self.ph.reboot(self.port, servo_id)
            return result, error
        error = self._retry(attempt, servo_id, None)
        self._check_status(error, servo_id, None, alerts_ok=True)
        self.alerts.pop(servo_id, None)

    def hardware_error(self, servo_id: int) -> int:
        """Hardware Error Status. Read on a fault path, so with a few tries even from a hot loop:
        the message must name the error, not "unknown"."""
        retries, self.retries = self.retries, max(self.retries, 2)
        try:
            return self.read(servo_id, "hardware_error_status", alerts_ok=True)
        finally:
            self.retries = retries

    # ---- group instructions --------------------------------------------------------------------

    def reader(self, ids: Sequence[int], first: str, last: str | None = None) -> SyncReader:
        return SyncReader(self, ids, first, last or first)

    def writer(self, ids: Sequence[int], name: str) -> SyncWriter:
        return SyncWriter(self, ids, name)

    def sync_read(self, ids: Sequence[int], first: str, last: str | None = None) -> dict[int, dict[str, int]]:
        """Convenience: one sync read, decoded per servo and register (not for the hot path)."""
        rd = self.reader(ids, first, last)
        values = rd.read()
        return {sid: dict(zip(rd.names, map(int, row), strict=True)) for sid, row in zip(ids, values, strict=True)}

    def sync_write(self, name: str, values: Mapping[int, int]) -> None:
        ids = list(values)
        self.writer(ids, name).write([values[i] for i in ids])

    def set_torque(self, ids: Iterable[int], enabled: bool) -> None:
        self.sync_write("torque_enable", dict.fromkeys(ids, 1 if enabled else 0))

    def torque_off_everywhere(self) -> None:
        """Broadcast Torque Enable = 0: reaches every servo, known or not, without waiting."""
        r = register("torque_enable")
        self.ph.write1ByteTxOnly(self.port, p.BROADCAST_ID, r.address, 0)

    def torque_off_confirmed(self, ids: Iterable[int], tries: int = 3) -> list[int]:
        """Torque off servo by servo, each confirmed by reading Torque Enable back; every servo is
        retried up to ``tries`` times. Returns the IDs that did not confirm (empty: all off)."""
        failed = []
        for sid in ids:
            off = False
            for _ in range(tries):
                if self.port.lost:
                    break
                try:
                    self.write(sid, "torque_enable", 0)
                    off = self.read(sid, "torque_enable", alerts_ok=True) == 0
                except DynamixelError:
                    continue
                if off:
                    break
            if not off:
                failed.append(sid)
        return failed

    # ---- Bus Watchdog (address 98) --------------------------------------------------------------

    @staticmethod
    def watchdog_units(ms: float) -> int:
        """Milliseconds -> Bus Watchdog units (20 ms each), rounded up; 1..127 (20 ms..2.54 s)."""
        units = -(-int(round(ms)) // WATCHDOG_UNIT_MS)
        if not 1 <= units <= WATCHDOG_MAX_UNITS:
            raise DynamixelError(
                f"a bus watchdog of {ms:g} ms is outside what servos support "
                f"({WATCHDOG_UNIT_MS}-{WATCHDOG_UNIT_MS * WATCHDOG_MAX_UNITS} ms)", port="(config)")
        return units

    def set_watchdog(self, ids: Sequence[int], ms: float) -> int:
        """Arm each servo's Bus Watchdog: with torque on, a servo that hears no instruction for
        ``ms`` (rounded up to 20 ms units) stops where it is. Two sync writes (0 first: a fired
        watchdog refuses a new value) and one sync read to confirm; returns the units set."""
        units = self.watchdog_units(ms)
        ids = list(ids)
        self.sync_write("bus_watchdog", dict.fromkeys(ids, 0))
        self.sync_write("bus_watchdog", dict.fromkeys(ids, units))
        got = self.sync_read(ids, "bus_watchdog")
        bad = [sid for sid in ids if got[sid]["bus_watchdog"] != units]
        if bad:
            raise DynamixelError(f"servo(s) {', '.join(map(str, bad))} did not take a bus watchdog of {ms:g} ms; "
                                 "check their firmware supports it (address 98)", port=self.port_name)
        return units

    def clear_watchdog(self, ids: Iterable[int]) -> list[int]:
        """Bus Watchdog off (0, which also clears a fired one); returns IDs that did not confirm."""
        failed = []
        for sid in ids:
            try:
                self.write(sid, "bus_watchdog", 0)
            except DynamixelError:
                failed.append(sid)
        return failed

    def watchdog_fired(self, ids: Iterable[int]) -> list[int]:
        """IDs whose Bus Watchdog has fired (98 reads -1): their goals are locked until cleared."""
        return [sid for sid in ids if self.read(sid, "bus_watchdog", alerts_ok=True) == -1]

    def set_operating_mode(self, ids: Iterable[int], mode: int | str) -> None:
        code = OPERATING_MODES[mode] if isinstance(mode, str) else mode
        if code not in OPERATING_MODE_NAMES:
            raise DynamixelError(f"unknown operating mode {mode!r}; use one of {', '.join(OPERATING_MODES)}",
                                 port=self.port_name)
        for sid in ids:
            self.write(sid, "operating_mode", code)

    def set_return_delay(self, ids: Iterable[int], value: int = 0) -> None:
        """Return Delay Time (x2 µs) on each servo. EEPROM: torque goes off first, and comes back
        on afterwards on the servos that had it."""
        for sid in ids:
            torque = self.read(sid, "torque_enable", alerts_ok=True)
            if torque:
                self.write(sid, "torque_enable", 0)
            self.write(sid, "return_delay_time", value)
            if torque:
                self.write(sid, "torque_enable", 1)

    def health_warnings(self, ids: Iterable[int]) -> list[str]:
        """Configuration that slows the bus down: return delay above 0."""
        delays = {sid: self.read(sid, "return_delay_time", alerts_ok=True) for sid in ids}
        return [return_delay_advice(self.port_name, sid, rdt) for sid, rdt in delays.items() if rdt > 0]


def return_delay_advice(port: str, servo_id: int, value: int) -> str:
    return (f"{port}, servo {servo_id}: return delay time is {value * 2} µs per reply; set it to 0 "
            f"with `rig doctor --fix {port}` (every servo on the chain)")


class SyncReader:
    """Reads registers ``first``..``last`` from many servos in one transaction.

    ``read()`` returns an (n_servos, n_registers) int64 array, signed per register, in the order
    of ``ids`` and ``names``. Servo status errors with the alert bit are recorded in
    ``bus.alerts`` rather than raised, so a hot loop keeps its data and decides what to do.
    """

    def __init__(self, bus: DynamixelBus, ids: Sequence[int], first: str, last: str):
        self.bus = bus
        self.ids = list(ids)
        self.start, self.length = block(first, last)
        regs = [register(n) for n in _names_between(first, last)]
        self.names = [r.name for r in regs]
        self._offsets = [(r.address - self.start, r.size, r.signed) for r in regs]
        self.group = GroupSyncRead(bus.port, bus.ph, self.start, self.length)
        for sid in self.ids:
            self.group.addParam(sid)
        self.use_fast = bus.fast_sync_read
        self._out = np.zeros((len(self.ids), len(regs)), dtype=np.int64)

    def read(self) -> np.ndarray:
        bus = self.bus
        result, bad_id = COMM_RX_TIMEOUT, None
        bus.port.reply_delay_ms = bus.reply_delay_ms(self.ids)  # N replies, each after its delay
        for i in range(bus.retries + 1):
            if bus.port.lost:
                break
            result, bad_id = self._fast_once() if self.use_fast else self._once()
            if result == COMM_SUCCESS:
                bus.retry_count += i
                return self._out
        if bad_id is None and self.use_fast and not bus.port.lost:
            # A failed Fast Sync Read cannot say whose reply was missing; one plain Sync Read can.
            diag_result, bad_id = self._once()
            if diag_result == COMM_SUCCESS:
                return self._out
        raise bus._comm_error(result, bad_id, f"sync read of {self.names[0]}..{self.names[-1]}")

    def _decode(self, row: int, data: bytes | bytearray | list[int], servo_id: int, error: int) -> None:
        if error:
            self.bus._check_status(error, servo_id, None, alerts_ok=True)
        for j, (off, size, signed) in enumerate(self._offsets):
            raw = int.from_bytes(bytes(data[off:off + size]), "little")
            self._out[row, j] = to_signed(raw, size) if signed else raw

    def _once(self) -> tuple[int, int | None]:
        bus = self.bus
        result = self.group.txPacket()
        if result != COMM_SUCCESS:
            return result, None
        for row, sid in enumerate(self.ids):
            data, result, error = bus.ph.readRx(bus.port, sid, self.length)
            if result != COMM_SUCCESS:
                return result, sid
            if len(data) != self.length:  # a late reply to another read (another block) from this ID
                return COMM_RX_CORRUPT, sid
            self._decode(row, data, sid, error)
        return COMM_SUCCESS, None

    def _fast_once(self) -> tuple[int, int | None]:
        bus = self.bus
        result = self.group.fastSyncReadTxPacket()
        if result != COMM_SUCCESS:
            return result, None
        rx, result = bus.ph.rxPacket(bus.port, True)
        if result != COMM_SUCCESS:
            return result, None
        if rx[_STATUS_ID] != p.BROADCAST_ID:
            if rx[_STATUS_ERROR] & 0x7F == p.ERR_INSTRUCTION:
                # This servo's firmware predates Fast Sync Read: fall back for good.
                bus.warnings.append(f"{bus.port_name}, servo {rx[_STATUS_ID]}: no Fast Sync Read support "
                                    "(firmware too old); using Sync Read")
                self.use_fast = False
                return self._once()
            return COMM_RX_CORRUPT, rx[_STATUS_ID]
        idx = _STATUS_ERROR
        step = self.length + 4  # ERR, ID, data, CRC
        if len(rx) != idx + step * len(self.ids):  # exactly this block from exactly these servos
            return COMM_RX_CORRUPT, None
        for row, sid in enumerate(self.ids):
            if rx[idx + 1] != sid:
                return COMM_RX_CORRUPT, sid
            self._decode(row, rx[idx + 2: idx + 2 + self.length], sid, rx[idx])
            idx += step
        return COMM_SUCCESS, None


class SyncWriter:
    """Writes one register to many servos in one Sync Write (no reply, so no retry)."""

    def __init__(self, bus: DynamixelBus, ids: Sequence[int], name: str):
        self.bus = bus
        self.ids = list(ids)
        self.reg = register(name)
        self.group = GroupSyncWrite(bus.port, bus.ph, self.reg.address, self.reg.size)
        for sid in self.ids:
            self.group.addParam(sid, [0] * self.reg.size)

    def write(self, values: Sequence[int] | np.ndarray) -> None:
        size = self.reg.size
        for sid, v in zip(self.ids, values, strict=True):
            self.group.changeParam(sid, list(to_unsigned(int(v), size).to_bytes(size, "little")))
        result = self.group.txPacket()
        if result != COMM_SUCCESS:
            raise self.bus._comm_error(result, None, f"sync write of {self.reg.name}")


def _names_between(first: str, last: str) -> list[str]:
    from drivers.dynamixel.control_table import REGISTERS
    a, b = register(first).address, register(last).address
    return [r.name for r in sorted(REGISTERS.values(), key=lambda r: r.address) if a <= r.address <= b]

"""Finding servos on a port and giving them their IDs and baud rates."""

from __future__ import annotations

import glob
import grp
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.dynamixel.bus import DynamixelBus, ServoInfo, return_delay_advice
from drivers.dynamixel.control_table import BAUD_CODES, BAUD_TABLE
from drivers.dynamixel.errors import (
    CorruptReply,
    DynamixelError,
    HardwareAlert,
    NoStatusPacket,
    PortLost,
    PortUnavailable,
    decode_hardware_error,
)
from drivers.dynamixel.port import latency_timer_advice, read_latency_timer
from drivers.errors import RigError

# Most likely first: rigs run at 1M or 4M; factory default is 57600.
SCAN_ORDER = [1_000_000, 57_600, 4_000_000, 2_000_000, 3_000_000, 115_200, 4_500_000, 9_600]


class SetupError(RigError):
    pass


def scan(port: str, bauds: Iterable[int] | None = None, **bus_options) -> list[ServoInfo]:
    """Every servo answering a broadcast ping on ``port``, at each baud in ``bauds``."""
    bad = [b for b in bauds or () if b not in BAUD_CODES]
    if bad:
        raise SetupError(f"{port}: baud {bad[0]} is not a Dynamixel X-series rate; use one of "
                         f"{', '.join(str(b) for b in BAUD_TABLE.values())}")
    found: list[ServoInfo] = []
    for baud in bauds or SCAN_ORDER:
        try:
            with DynamixelBus(port, baud, **bus_options) as bus:
                found += bus.broadcast_ping()
        except NoStatusPacket:
            continue
        except (PortUnavailable, PortLost):
            if not os.path.exists(port):
                raise
            continue  # this adapter cannot run at that baud (e.g. 4.5M on a pty): no servo there either
    return found


def assign(port: str, new_id: int, new_baud: int, *, bauds: Iterable[int] | None = None) -> ServoInfo:
    """Give the single servo connected to ``port`` a new ID and baud; return it as found after.

    Also sets Return Delay Time to 0: the factory 500 µs per reply costs a 9-servo arm 4.5 ms a
    tick. Refuses when more or fewer than one servo answers, so a chain is never renumbered by
    accident.
    """
    if new_baud not in BAUD_CODES:
        raise SetupError(f"baud {new_baud} is not a Dynamixel rate; use one of {sorted(BAUD_CODES)}")
    if not 0 <= new_id <= 252:
        raise SetupError(f"ID {new_id} is out of range; use 0-252")
    servos = scan(port, bauds)
    if not servos:
        raise SetupError(f"{port}: no servo answered at any baud. Check power (the servo's LED blinks once at "
                         "power-up) and the cable, and connect exactly one servo")
    if len(servos) > 1:
        listing = ", ".join(f"ID {s.id} at {s.baud}" for s in servos)
        raise SetupError(f"{port}: {len(servos)} servos answered ({listing}). Connect one servo at a time")
    servo = servos[0]
    with DynamixelBus(port, servo.baud) as bus:
        bus.write(servo.id, "torque_enable", 0)
        bus.write(servo.id, "return_delay_time", 0)
        if servo.id != new_id:
            bus.write(servo.id, "id", new_id)
        if servo.baud != new_baud:
            bus.write(new_id, "baud_rate", BAUD_CODES[new_baud])
    with DynamixelBus(port, new_baud) as bus:
        return bus.ping(new_id)


@dataclass
class PortReport:
    port: str
    resolved: str
    readable: bool
    writable: bool
    latency_timer_ms: int | None
    servos: list[ServoInfo] = field(default_factory=list)
    duplicate_ids: list[int] = field(default_factory=list)
    return_delays: dict[int, int] = field(default_factory=dict)
    hardware_errors: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def candidate_ports() -> list[str]:
    """USB-serial adapters, preferring their stable /dev/serial/by-id names."""
    by_id = sorted(glob.glob("/dev/serial/by-id/*"))
    seen = {os.path.realpath(p) for p in by_id}
    raw = [p for p in sorted(glob.glob("/dev/ttyUSB*") + glob.glob("/dev/ttyACM*")) if p not in seen]
    return by_id + raw


def in_dialout() -> bool:
    try:
        gid = grp.getgrnam("dialout").gr_gid
    except KeyError:
        return True  # no such group on this system: nothing to join
    return os.geteuid() == 0 or gid in os.getgroups()


def find_duplicate_ids(bus: DynamixelBus, ids: Iterable[int]) -> list[int]:
    """IDs whose unicast ping comes back garbled: two servos answering at once."""
    dups = []
    for sid in ids:
        try:
            bus.ping(sid)
        except CorruptReply:
            dups.append(sid)
        except DynamixelError:
            continue
    return dups


def inspect_port(port: str, baud: int, *, probe_ids: Iterable[int] = range(0, 253)) -> PortReport:
    """What `rig doctor` reports for one port."""
    rep = PortReport(port, os.path.realpath(port), os.access(port, os.R_OK), os.access(port, os.W_OK),
                     read_latency_timer(port))
    if not (rep.readable and rep.writable):
        rep.problems.append(f"{port}: no read/write permission; run: sudo usermod -aG dialout $USER, then log in again")
        return rep
    if rep.latency_timer_ms is not None and rep.latency_timer_ms > 1:
        rep.problems.append(latency_timer_advice(port, rep.latency_timer_ms))
    with DynamixelBus(port, baud, retries=0) as bus:
        rep.servos = bus.broadcast_ping()
        garbled_ids = find_duplicate_ids(bus, probe_ids)
        rep.duplicate_ids = garbled_ids
        bus.retries = 4  # the probe above was quick; what follows must not fail on a lost reply
        for sid in garbled_ids:
            rep.problems.append(f"{port}: two or more servos share ID {sid}; connect them one at a time and "
                                f"give each its own ID with `rig setup-motors {port}`")
        for s in rep.servos:
            if s.id in garbled_ids:
                continue
            try:
                rep.return_delays[s.id] = bus.read(s.id, "return_delay_time", alerts_ok=True)
                bits = bus.hardware_error(s.id)
            except DynamixelError as exc:
                rep.problems.append(str(exc))
                continue
            if bits:
                rep.hardware_errors[s.id] = bits
                rep.problems.append(str(HardwareAlert(bits, port=port, servo_id=s.id)))
        rep.problems += [return_delay_advice(port, sid, v) for sid, v in rep.return_delays.items() if v > 0]
    return rep


def fix_return_delays(port: str, baud: int) -> list[str]:
    """Return Delay Time 0 on every servo of an assembled chain (what `rig doctor --fix` does).

    EEPROM is written with torque off; a servo that had torque gets it back."""
    done = []
    with DynamixelBus(port, baud) as bus:
        for s in bus.broadcast_ping():
            value = bus.read(s.id, "return_delay_time", alerts_ok=True)
            if value:
                bus.set_return_delay([s.id], 0)
                if bus.read(s.id, "return_delay_time", alerts_ok=True) != 0:
                    raise SetupError(f"{port}, servo {s.id}: return delay did not change; "
                                     "check that it is not locked (e.g. by another program)")
                done.append(f"{port}, servo {s.id}: return delay {value * 2} µs -> 0")
    return done


def reboot_faulted(port: str, baud: int) -> list[str]:
    """REBOOT every servo whose Hardware Error Status is set (what `rig doctor --reboot` does)."""
    done = []
    with DynamixelBus(port, baud) as bus:
        for s in bus.broadcast_ping():
            bits = bus.hardware_error(s.id)
            if bits:
                bus.reboot(s.id)
                after = bus.hardware_error(s.id)
                what = ", ".join(decode_hardware_error(bits))
                state = "cleared" if not after else f"still set ({', '.join(decode_hardware_error(after))})"
                done.append(f"{port}, servo {s.id}: rebooted out of hardware error ({what}); {state}")
    return done


def baud_names() -> str:
    return ", ".join(str(b) for b in BAUD_TABLE.values())

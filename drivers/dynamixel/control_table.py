"""X-series control tables (Protocol 2.0): registers, models, units.

One register map serves every supported model: the X-series share addresses. What differs per
model (number, operating modes, current unit, whether Current Limit exists, defaults) lives in
:class:`Model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from drivers.errors import RigError

TICKS_PER_TURN = 4096
CENTER_TICK = 2048
VELOCITY_UNIT_RPM = 0.229
VOLTAGE_UNIT_V = 0.1

# Baud Rate register (addr 8) value -> bits per second.
BAUD_TABLE: dict[int, int] = {
    0: 9_600,
    1: 57_600,
    2: 115_200,
    3: 1_000_000,
    4: 2_000_000,
    5: 3_000_000,
    6: 4_000_000,
    7: 4_500_000,
}
BAUD_CODES: dict[int, int] = {bps: code for code, bps in BAUD_TABLE.items()}

OPERATING_MODES: dict[str, int] = {
    "current": 0,
    "velocity": 1,
    "position": 3,
    "extended_position": 4,
    "current_based_position": 5,
    "pwm": 16,
}
OPERATING_MODE_NAMES: dict[int, str] = {v: k for k, v in OPERATING_MODES.items()}


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    address: int
    size: int
    eeprom: bool = False
    writable: bool = True
    signed: bool = False

    @property
    def end(self) -> int:
        return self.address + self.size


def _regs(*rows: tuple) -> dict[str, Register]:
    table = {}
    for name, addr, size, *flags in rows:
        opts = dict.fromkeys(flags, True)
        writable = not opts.pop("ro", False)
        table[name] = Register(name, addr, size, writable=writable, **opts)
    return table


# Address, size and flags per the X-series e-manual (see shared REFERENCE.md).
REGISTERS: dict[str, Register] = _regs(
    ("model_number", 0, 2, "eeprom", "ro"),
    ("model_information", 2, 4, "eeprom", "ro"),
    ("firmware_version", 6, 1, "eeprom", "ro"),
    ("id", 7, 1, "eeprom"),
    ("baud_rate", 8, 1, "eeprom"),
    ("return_delay_time", 9, 1, "eeprom"),
    ("drive_mode", 10, 1, "eeprom"),
    ("operating_mode", 11, 1, "eeprom"),
    ("secondary_id", 12, 1, "eeprom"),
    ("protocol_type", 13, 1, "eeprom"),
    ("homing_offset", 20, 4, "eeprom", "signed"),
    ("moving_threshold", 24, 4, "eeprom"),
    ("temperature_limit", 31, 1, "eeprom"),
    ("max_voltage_limit", 32, 2, "eeprom"),
    ("min_voltage_limit", 34, 2, "eeprom"),
    ("pwm_limit", 36, 2, "eeprom"),
    ("current_limit", 38, 2, "eeprom"),
    ("velocity_limit", 44, 4, "eeprom"),
    ("max_position_limit", 48, 4, "eeprom"),
    ("min_position_limit", 52, 4, "eeprom"),
    ("shutdown", 63, 1, "eeprom"),
    ("torque_enable", 64, 1),
    ("led", 65, 1),
    ("status_return_level", 68, 1),
    ("registered_instruction", 69, 1, "ro"),
    ("hardware_error_status", 70, 1, "ro"),
    ("velocity_i_gain", 76, 2),
    ("velocity_p_gain", 78, 2),
    ("position_d_gain", 80, 2),
    ("position_i_gain", 82, 2),
    ("position_p_gain", 84, 2),
    ("bus_watchdog", 98, 1, "signed"),
    ("goal_pwm", 100, 2, "signed"),
    ("goal_current", 102, 2, "signed"),
    ("goal_velocity", 104, 4, "signed"),
    ("profile_acceleration", 108, 4),
    ("profile_velocity", 112, 4),
    ("goal_position", 116, 4, "signed"),
    ("realtime_tick", 120, 2, "ro"),
    ("moving", 122, 1, "ro"),
    ("moving_status", 123, 1, "ro"),
    ("present_pwm", 124, 2, "ro", "signed"),
    ("present_current", 126, 2, "ro", "signed"),
    ("present_velocity", 128, 4, "ro", "signed"),
    ("present_position", 132, 4, "ro", "signed"),
    ("velocity_trajectory", 136, 4, "ro", "signed"),
    ("position_trajectory", 140, 4, "ro", "signed"),
    ("present_input_voltage", 144, 2, "ro"),
    ("present_temperature", 146, 1, "ro"),
)
EEPROM_END = 64  # addresses below this are EEPROM: writable only with torque off
TABLE_SIZE = 147 + 1  # one past the last register we emulate

# The block the teleop reads each tick: current, velocity, position in one contiguous sync read.
STATE_BLOCK = ("present_current", "present_velocity", "present_position")

# Hardware Error Status (addr 70) bits.
HARDWARE_ERROR_BITS: dict[int, str] = {
    0: "input voltage error",
    2: "overheating",
    3: "motor encoder error",
    4: "electrical shock",
    5: "overload",
}
HARDWARE_ERROR_ADVICE: dict[int, str] = {
    0: "check the power supply voltage against the servo's rating",
    2: "let the servo cool down and reduce its load or duty cycle",
    3: "the encoder may be damaged; contact the vendor if a reboot does not clear it",
    4: "check the wiring and power for shorts",
    5: "the joint is blocked or overloaded; free it and reduce the load",
}


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    number: int
    modes: frozenset[int]
    current_unit_ma: float | None  # None: the servo reports load (0.1 %) instead of current
    has_current_limit: bool
    default_current_limit: int = 0
    default_velocity_limit: int = 200
    stall_torque_nm: float = 1.0
    defaults: dict[str, int] = field(default_factory=dict)

    @property
    def reports_load(self) -> bool:
        return self.current_unit_ma is None

    def supports(self, mode: int) -> bool:
        return mode in self.modes


_FULL = frozenset({0, 1, 3, 4, 5, 16})
_NO_CURRENT = frozenset({1, 3, 4, 16})

MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model("xl330-m077", 1190, _FULL, 1.0, True, 1750, 1023, 0.215),
        Model("xl330-m288", 1200, _FULL, 1.0, True, 1750, 445, 0.52),
        Model("xl430-w250", 1060, _NO_CURRENT, None, False, 0, 265, 1.5),
        Model("xc430-w150", 1070, _NO_CURRENT, None, False, 0, 460, 1.4),
        Model("xm430-w350", 1020, _FULL, 2.69, True, 1193, 200, 4.1),
        Model("xm540-w270", 1120, _FULL, 2.69, True, 2047, 128, 10.6),
    )
}
MODELS_BY_NUMBER: dict[int, Model] = {m.number: m for m in MODELS.values()}


class UnknownModel(RigError):
    pass


def model_by_name(name: str) -> Model:
    try:
        return MODELS[name.lower()]
    except KeyError:
        known = ", ".join(MODELS)
        raise UnknownModel(f"unknown servo model {name!r}; supported models: {known}") from None


def model_by_number(number: int) -> Model:
    try:
        return MODELS_BY_NUMBER[number]
    except KeyError:
        known = ", ".join(f"{m.name} ({m.number})" for m in MODELS.values())
        raise UnknownModel(
            f"servo reports model number {number}, which rig does not know; supported: {known}. "
            "If it is an X-series servo, add it to drivers/dynamixel/control_table.py."
        ) from None


def register(name: str) -> Register:
    try:
        return REGISTERS[name]
    except KeyError:
        raise RigError(f"unknown control-table register {name!r}") from None


def block(first: str, last: str) -> tuple[int, int]:
    """(start address, length) of the contiguous span from register ``first`` to ``last``."""
    a, b = register(first), register(last)
    if b.end <= a.address:
        raise ValueError(f"register {last} comes before {first}")
    return a.address, b.end - a.address


# ---- unit conversions -------------------------------------------------------------------------

def ticks_to_rad(ticks, center: int = CENTER_TICK):
    """Position ticks -> radians, 0 rad at ``center``. Works on scalars and numpy arrays."""
    return (ticks - center) * (2.0 * math.pi / TICKS_PER_TURN)


def rad_to_ticks(rad, center: int = CENTER_TICK):
    return rad * (TICKS_PER_TURN / (2.0 * math.pi)) + center


def velocity_to_rad_s(raw):
    return raw * (VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0)


def rad_s_to_velocity(rad_s):
    return rad_s / (VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0)


def current_to_ma(model: Model, raw):
    """Present Current -> mA; for load-reporting models this is a percent of max load (×0.1)."""
    if model.current_unit_ma is None:
        return raw * 0.1
    return raw * model.current_unit_ma


def to_signed(value: int, size: int) -> int:
    bits = 8 * size
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def to_unsigned(value: int, size: int) -> int:
    return value & ((1 << (8 * size)) - 1)


def fits(reg: Register, value: int) -> bool:
    bits = 8 * reg.size
    if reg.signed:
        return -(1 << (bits - 1)) <= value < (1 << (bits - 1))
    return 0 <= value < (1 << bits)

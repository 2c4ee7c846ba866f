"""Typed failures of a Dynamixel bus, each with a message a person can act on."""

from __future__ import annotations

from drivers.dynamixel.control_table import HARDWARE_ERROR_ADVICE, HARDWARE_ERROR_BITS
from drivers.dynamixel.protocol import ERROR_NAMES
from drivers.errors import RigError


class DynamixelError(RigError):
    """Base of bus failures. Carries where it happened for callers that react per servo."""

    def __init__(self, message: str, *, port: str, servo_id: int | None = None, register: str | None = None):
        where = port
        if servo_id is not None:
            where += f", servo {servo_id}"
        if register is not None:
            where += f", {register}"
        super().__init__(f"{where}: {message}")
        self.port = port
        self.servo_id = servo_id
        self.register = register


class PortUnavailable(DynamixelError):
    """The port cannot be opened (missing, busy, no permission)."""


class PortLost(DynamixelError):
    """The port vanished mid-run (USB unplugged)."""


class NoStatusPacket(DynamixelError):
    """The servo did not answer within the timeout (the SDK's 'There is no status packet')."""


class CorruptReply(DynamixelError):
    """A reply arrived but failed its CRC or framing."""


class ServoError(DynamixelError):
    """The servo answered with an error code in its status packet."""

    ADVICE = {
        1: "the servo could not process the instruction; retry, and reboot the servo if it persists",
        2: "the servo does not support this instruction (older firmware?); update it with Dynamixel Wizard",
        3: "the servo received a corrupt packet; check the cable and reduce the baud rate if it repeats",
        4: "the value is outside the register's range; check the value written",
        5: "the write does not cover whole registers; write the register's full size",
        6: "the value is outside the servo's configured limits (e.g. position limits); check the limits",
        7: "the register is read-only, or EEPROM while torque is on: disable torque first",
    }

    def __init__(self, code: int, **where):
        name = ERROR_NAMES.get(code, f"error {code}")
        super().__init__(f"servo reported {name}: {self.ADVICE.get(code, 'see the e-manual')}", **where)
        self.code = code


class HardwareAlert(DynamixelError):
    """The servo's alert bit is set: Hardware Error Status names what is wrong."""

    def __init__(self, bits: int, **where):
        self.bits = bits
        self.names = decode_hardware_error(bits)
        advice = "; ".join(HARDWARE_ERROR_ADVICE[b] for b in HARDWARE_ERROR_BITS if bits & (1 << b))
        what = ", ".join(self.names) or "unknown hardware error"
        super().__init__(
            f"hardware error: {what}. {advice}. Then clear it with a reboot: `rig doctor --reboot {where['port']}`, "
            "or start rig again (it reboots a servo in hardware error when it connects)", **where)


def decode_hardware_error(bits: int) -> list[str]:
    return [name for b, name in HARDWARE_ERROR_BITS.items() if bits & (1 << b)]

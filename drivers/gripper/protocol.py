"""Wire protocol of the handheld gripper firmware (firmware/PROTOCOL.md).

Frame = COBS(payload + crc16_le(payload)) + b"\\x00"; payload = version u8, type u8, body.
Every body is a fixed little-endian layout; one table below describes each, mirroring the
firmware's field tables, and the shared golden vectors keep the two in step.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from cobs import cobs
from fastcrc import crc16

from drivers.errors import RigError

PROTOCOL_VERSION = 1
MAX_PAYLOAD = 48  # firmware/core/protocol.h GP_MAX_PAYLOAD: the two must agree
# The longest COBS encoding of payload + CRC (delimiter excluded), as the C core's GP_COBS_MAX:
# anything longer cannot be ours, so it is dropped while resyncing.
MAX_FRAME = (MAX_PAYLOAD + 2) + (MAX_PAYLOAD + 2) // 254 + 1
_HELLO_HEAD = 6  # version, type, fw_major, fw_minor, fw_patch, proto: stable across versions


class MsgType(IntEnum):
    IDENTIFY = 0x01
    PING = 0x02
    SET_RATE = 0x03
    SET_LED = 0x04
    STREAM = 0x05
    SET_FILTER = 0x06
    HELLO = 0x81
    SAMPLE = 0x82
    PONG = 0x83
    ACK = 0x84
    ERROR = 0x85


class LedMode(IntEnum):
    OFF = 0
    ON = 1
    BLINK_SLOW = 2
    BLINK_FAST = 3


class AckStatus(IntEnum):
    OK = 0
    BAD_ARG = 1
    UNKNOWN_CMD = 2


class DeviceErrorCode(IntEnum):
    CRC = 1
    FRAMING = 2
    UNKNOWN_TYPE = 3
    LENGTH = 4
    SENSOR = 5
    VERSION = 6
    OVERRUN = 7


SAMPLE_FLAG_ENCODER_FAULT = 0x01
SAMPLE_FLAG_IMU_FAULT = 0x02
SAMPLE_FLAG_LATE = 0x04

# (field names, struct format without the "<") per message type, in wire order.
LAYOUTS: dict[MsgType, tuple[tuple[str, ...], str]] = {
    MsgType.IDENTIFY: ((), ""),
    MsgType.PING: (("id", "host_ns"), "IQ"),
    MsgType.SET_RATE: (("rate_hz",), "H"),
    MsgType.SET_LED: (("mode",), "B"),
    MsgType.STREAM: (("enable",), "B"),
    MsgType.SET_FILTER: (("cutoff_dhz",), "H"),
    MsgType.HELLO: (
        (
            "fw_major", "fw_minor", "fw_patch", "proto", "serial", "rate_hz", "streaming", "sensors",
            "enc_counts", "jaw_closed_raw", "jaw_open_urad", "accel_fs_g", "gyro_fs_dps", "cutoff_dhz",
            "device_us",
        ),
        "BBBBIHBBHHiBHHQ",
    ),
    MsgType.SAMPLE: (
        ("seq", "t_us", "jaw_raw", "jaw_urad", "trigger", "buttons", "ax", "ay", "az", "gx", "gy", "gz", "flags"),
        "IQHiBBhhhhhhB",
    ),
    MsgType.PONG: (("id", "host_ns", "rx_us", "tx_us"), "IQQQ"),
    MsgType.ACK: (("cmd", "status"), "BB"),
    MsgType.ERROR: (("code", "detail"), "BI"),
}
_STRUCTS = {t: struct.Struct("<" + fmt) for t, (_, fmt) in LAYOUTS.items()}


class ProtocolError(RigError):
    """A frame or payload that does not follow the protocol."""


class ProtocolVersionError(RigError):
    """The device speaks a protocol version this driver does not."""


@dataclass(frozen=True)
class Message:
    """One decoded payload: its type, the version byte it carried and its fields by name."""

    type: MsgType
    fields: dict[str, int] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def __getitem__(self, name: str) -> int:
        return self.fields[name]


def crc(data: bytes) -> int:
    """CRC-16/XMODEM (same as binascii.crc_hqx(data, 0))."""
    return crc16.xmodem(data)


def encode_payload(msg_type: MsgType, version: int = PROTOCOL_VERSION, **values: int) -> bytes:
    names, _ = LAYOUTS[msg_type]
    missing = set(names) - set(values)
    extra = set(values) - set(names)
    if missing or extra:
        raise ValueError(f"{msg_type.name}: missing fields {sorted(missing)}, unknown fields {sorted(extra)}")
    body = _STRUCTS[msg_type].pack(*(values[n] for n in names))
    return bytes((version, msg_type)) + body


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    return cobs.encode(payload + crc(payload).to_bytes(2, "little")) + b"\x00"


def encode(msg_type: MsgType, version: int = PROTOCOL_VERSION, **values: int) -> bytes:
    """Fields -> complete wire frame, delimiter included."""
    return frame(encode_payload(msg_type, version, **values))


def decode_payload(payload: bytes) -> Message:
    """Checked payload -> Message. A foreign version is decoded only as far as HELLO's stable head
    (firmware version + protocol), which is all a driver needs to explain the mismatch."""
    if len(payload) < 2:
        raise ProtocolError(f"payload of {len(payload)} bytes is shorter than its 2-byte header")
    version, type_byte = payload[0], payload[1]
    try:
        msg_type = MsgType(type_byte)
    except ValueError:
        raise ProtocolError(f"unknown message type 0x{type_byte:02x}") from None
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    st = _STRUCTS[msg_type]
    if version != PROTOCOL_VERSION:
        # Another version's layouts are unknown, so what can be checked is: a HELLO's stable head
        # names the same protocol as its version byte; any other type keeps this version's length.
        if msg_type is MsgType.HELLO:
            if len(payload) < _HELLO_HEAD or payload[5] != version:
                raise ProtocolError(f"v{version} HELLO of {len(payload)} bytes does not carry its own version")
            head = dict(zip(("fw_major", "fw_minor", "fw_patch", "proto"), payload[2:6], strict=True))
            return Message(msg_type, head, version)
        if len(payload) != 2 + st.size:
            raise ProtocolError(f"v{version} {msg_type.name} body is {len(payload) - 2} bytes, expected {st.size}")
        return Message(msg_type, {}, version)
    if len(payload) != 2 + st.size:
        raise ProtocolError(f"{msg_type.name} body is {len(payload) - 2} bytes, expected {st.size}")
    names, _ = LAYOUTS[msg_type]
    return Message(msg_type, dict(zip(names, st.unpack_from(payload, 2))), version)


class FrameDecoder:
    """Byte stream -> checked payloads. Resyncs on the next 0x00 after any corruption."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.crc_errors = 0
        self.framing_errors = 0
        self.bad_payloads = 0

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return out
            self._append(data[start:end])
            msg = self._finish()
            if msg is not None:
                out.append(msg)
            start = end + 1

    def _append(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buf += chunk
        if len(self._buf) > MAX_FRAME:
            self._buf.clear()
            self._overflow = True

    def _finish(self) -> Message | None:
        raw = bytes(self._buf)
        self._buf.clear()
        if self._overflow:
            self._overflow = False
            self.framing_errors += 1
            return None
        if not raw:
            return None  # back-to-back delimiters are padding
        try:
            data = cobs.decode(raw)
        except cobs.DecodeError:
            self.framing_errors += 1
            return None
        if not 4 <= len(data) <= MAX_PAYLOAD + 2:  # header + CRC at least, the C core's limit at most
            self.framing_errors += 1
            return None
        payload, check = data[:-2], int.from_bytes(data[-2:], "little")
        if crc(payload) != check:
            self.crc_errors += 1
            return None
        try:
            return decode_payload(payload)
        except ProtocolError:
            self.bad_payloads += 1
            return None

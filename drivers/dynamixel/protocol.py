"""Protocol 2.0 packet framing for the servo side (the emulator).

The host side uses dynamixel-sdk's PacketHandler; this module is what a servo does with the
bytes: find the header, unstuff, check the CRC, and build status packets.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastcrc import crc16

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC

PING = 0x01
READ = 0x02
WRITE = 0x03
REG_WRITE = 0x04
ACTION = 0x05
FACTORY_RESET = 0x06
REBOOT = 0x08
CLEAR = 0x10
STATUS = 0x55
SYNC_READ = 0x82
SYNC_WRITE = 0x83
FAST_SYNC_READ = 0x8A
BULK_READ = 0x92
BULK_WRITE = 0x93

# Low 7 bits of a status packet's ERR byte.
ERR_RESULT_FAIL = 1
ERR_INSTRUCTION = 2
ERR_CRC = 3
ERR_DATA_RANGE = 4
ERR_DATA_LENGTH = 5
ERR_DATA_LIMIT = 6
ERR_ACCESS = 7
ERR_ALERT = 0x80

ERROR_NAMES: dict[int, str] = {
    ERR_RESULT_FAIL: "result fail",
    ERR_INSTRUCTION: "instruction error",
    ERR_CRC: "CRC error",
    ERR_DATA_RANGE: "data range error",
    ERR_DATA_LENGTH: "data length error",
    ERR_DATA_LIMIT: "data limit error",
    ERR_ACCESS: "access error",
}


def crc(data: bytes | bytearray) -> int:
    """CRC-16 of Protocol 2.0: polynomial 0x8005, init 0, not reflected (CRC-16/UMTS)."""
    return crc16.umts(bytes(data))


def stuff(payload: bytes) -> bytes:
    """Insert 0xFD after every FF FF FD in the payload so it cannot be read as a header."""
    return payload.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")


def unstuff(payload: bytes) -> bytes:
    return payload.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")


def build_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet: header, ID, LEN, INST, stuffed params, CRC."""
    body = stuff(bytes([instruction]) + bytes(params))
    length = len(body) + 2
    head = HEADER + bytes([servo_id, length & 0xFF, length >> 8])
    pkt = head + body
    c = crc(pkt)
    return pkt + bytes([c & 0xFF, c >> 8])


def build_status(servo_id: int, error: int, params: bytes = b"") -> bytes:
    return build_packet(servo_id, STATUS, bytes([error]) + bytes(params))


@dataclass(frozen=True, slots=True)
class Packet:
    servo_id: int
    instruction: int
    params: bytes  # unstuffed
    crc_ok: bool
    wire_length: int  # bytes on the wire, header to CRC


def parse_stream(buf: bytearray) -> Packet | None:
    """Take the first complete packet off the front of ``buf``; drop garbage before a header.

    Returns None when more bytes are needed. Packets with a bad CRC are returned with
    ``crc_ok=False`` so the servo can answer with a CRC error, as real servos do.
    """
    while True:
        start = buf.find(b"\xff\xff\xfd")
        if start < 0:
            # keep a possible partial header at the tail
            keep = 2 if buf.endswith(b"\xff\xff") else 1 if buf.endswith(b"\xff") else 0
            del buf[: len(buf) - keep]
            return None
        if start:
            del buf[:start]
        if len(buf) < 7:
            return None
        if buf[3] != 0x00:  # FF FF FD FD is a stuffed payload, not a header
            del buf[:3]
            continue
        length = buf[5] | (buf[6] << 8)
        if length < 3 or length > 1024:
            del buf[:3]
            continue
        total = 7 + length
        if len(buf) < total:
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        got = raw[-2] | (raw[-1] << 8)
        body = unstuff(raw[7:-2])
        return Packet(raw[4], body[0], body[1:], crc(raw[:-2]) == got, total)

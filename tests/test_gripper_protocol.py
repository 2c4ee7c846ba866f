"""Gripper wire protocol: golden vectors shared with the C tests, framing, resync, fuzzing."""

from __future__ import annotations

import binascii
import random
from pathlib import Path

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.gripper import protocol as p

GOLDEN = Path(__file__).resolve().parents[1] / "firmware" / "vectors" / "golden.txt"


def golden_vectors() -> list[tuple[str, p.MsgType, int, dict[str, int], bytes]]:
    out = []
    for line in GOLDEN.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, kv, hexframe = (part.strip() for part in line.split("|"))
        fields = dict(item.split("=", 1) for item in kv.split())
        msg_type = p.MsgType(int(fields.pop("type"), 16))
        version = int(fields.pop("version"))
        out.append((name, msg_type, version, {k: int(v) for k, v in fields.items()}, bytes.fromhex(hexframe)))
    return out


VECTORS = golden_vectors()


def test_golden_file_covers_every_message_type():
    assert {v[1] for v in VECTORS} == set(p.MsgType)


@pytest.mark.parametrize("name,msg_type,version,fields,frame", VECTORS, ids=[v[0] for v in VECTORS])
def test_golden_vector_encodes_and_decodes_identically(name, msg_type, version, fields, frame):
    assert p.encode(msg_type, version, **fields) == frame
    dec = p.FrameDecoder()
    msgs = dec.feed(frame)
    assert len(msgs) == 1
    assert msgs[0].type is msg_type and msgs[0].version == version
    assert msgs[0].fields == fields


def test_crc_is_xmodem():
    assert p.crc(b"123456789") == 0x31C3 == binascii.crc_hqx(b"123456789", 0)


def test_sample_frame_size_and_no_zero_inside():
    frame = p.encode(p.MsgType.SAMPLE, **dict.fromkeys(p.LAYOUTS[p.MsgType.SAMPLE][0], 0))
    assert len(frame) == 2 + 33 + 2 + 1 + 1  # header, body, crc, cobs overhead, delimiter
    assert frame.index(0) == len(frame) - 1


def test_decoder_resyncs_after_garbage_split_reads_and_bad_crc():
    payload = p.encode_payload(p.MsgType.PING, id=5, host_ns=10**12)
    good = p.frame(payload)
    bad = cobs.encode(payload + ((p.crc(payload) ^ 0x0100).to_bytes(2, "little"))) + b"\x00"
    stream = b"\x13\x37\xff\x00" + bad + good + good
    dec = p.FrameDecoder()
    msgs = []
    for i in range(0, len(stream), 3):  # arbitrary read boundaries
        msgs += dec.feed(stream[i : i + 3])
    assert [m.fields for m in msgs] == [{"id": 5, "host_ns": 10**12}] * 2
    assert dec.crc_errors == 1
    assert dec.framing_errors + dec.crc_errors + dec.bad_payloads >= 2


def test_decoder_drops_oversized_frame_then_recovers():
    dec = p.FrameDecoder()
    assert dec.feed(b"\x41" * 5000 + b"\x00") == []
    assert dec.framing_errors == 1
    assert dec.feed(p.encode(p.MsgType.ACK, cmd=3, status=0))[0].fields == {"cmd": 3, "status": 0}


def test_wrong_length_payload_rejected():
    payload = p.encode_payload(p.MsgType.SET_RATE, rate_hz=200)[:-1]
    with pytest.raises(p.ProtocolError, match="SET_RATE body is 1 bytes, expected 2"):
        p.decode_payload(payload)
    dec = p.FrameDecoder()
    assert dec.feed(p.frame(payload)) == []
    assert dec.bad_payloads == 1


def test_foreign_version_hello_keeps_its_stable_head():
    payload = bytearray(p.encode_payload(p.MsgType.HELLO, **{
        n: 0 for n in p.LAYOUTS[p.MsgType.HELLO][0]} | {"fw_major": 2, "proto": 2}))
    payload[0] = 2
    msg = p.FrameDecoder().feed(p.frame(bytes(payload)))[0]
    assert msg.version == 2 and msg.fields == {"fw_major": 2, "fw_minor": 0, "fw_patch": 0, "proto": 2}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_or_yield_a_sample(data):
    dec = p.FrameDecoder()
    msgs = dec.feed(data) + dec.feed(b"\x00")
    # A random frame must pass COBS, a 16-bit CRC, the version byte, a known type and the exact
    # length; a SAMPLE slipping through all of that would take ~2^40 tries.
    assert all(m.type is not p.MsgType.SAMPLE for m in msgs)


def _sample_fields(rng: random.Random, seq: int) -> dict[str, int]:
    return {
        "seq": seq, "t_us": rng.randrange(2**40), "jaw_raw": rng.randrange(4096),
        "jaw_urad": rng.randrange(-2_000_000, 2_000_000), "trigger": rng.randrange(2),
        "buttons": rng.randrange(8), "ax": rng.randrange(-32768, 32768), "ay": rng.randrange(-32768, 32768),
        "az": rng.randrange(-32768, 32768), "gx": rng.randrange(-32768, 32768),
        "gy": rng.randrange(-32768, 32768), "gz": rng.randrange(-32768, 32768), "flags": 0,
    }


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_corrupted_stream_yields_only_samples_that_were_sent(seed, flips, cuts):
    rng = random.Random(seed)
    sent = {i: _sample_fields(rng, i) for i in range(40)}
    stream = bytearray(b"".join(p.encode(p.MsgType.SAMPLE, **f) for f in sent.values()))
    for pos, mask in flips:
        stream[pos % len(stream)] ^= mask
    for pos in sorted(cuts, reverse=True):
        del stream[pos % len(stream) : pos % len(stream) + 7]
    dec = p.FrameDecoder()
    got = []
    for i in range(0, len(stream), 64):
        got += dec.feed(bytes(stream[i : i + 64]))
    for m in got:
        assert m.type is p.MsgType.SAMPLE
        assert m.fields == sent[m.fields["seq"]]
    if not flips and not cuts:
        assert len(got) == 40


# ---- length and version before the CRC is trusted; one maximum payload with the C core ------------

def _crc_valid_frame(payload: bytes) -> bytes:
    """Any payload framed with a correct CRC: what garbage that happens to pass CRC looks like."""
    return cobs.encode(payload + p.crc(payload).to_bytes(2, "little")) + b"\x00"


def test_python_and_the_c_core_agree_on_the_maximum_payload():
    header = (Path(__file__).resolve().parents[1] / "firmware" / "core" / "protocol.h").read_text()
    c_max = int(next(line.split()[2].rstrip("u") for line in header.splitlines()
                     if line.startswith("#define GP_MAX_PAYLOAD")))
    assert p.MAX_PAYLOAD == c_max == 48
    dec = p.FrameDecoder()
    assert dec.feed(_crc_valid_frame(bytes([1, 0x82]) + bytes(47))) == []  # 49 bytes: the C core drops it
    assert dec.framing_errors == 1
    with pytest.raises(ValueError, match="exceeds the 48-byte limit"):
        p.frame(bytes(49))


def test_a_foreign_version_does_not_skip_the_length_check():
    dec = p.FrameDecoder()
    sample = p.encode_payload(p.MsgType.SAMPLE, **_sample_fields(random.Random(1), 7))
    assert dec.feed(_crc_valid_frame(bytes([9]) + sample[1:10])) == []  # v9 SAMPLE of the wrong length
    hello = bytearray(p.encode_payload(p.MsgType.HELLO, **{n: 0 for n in p.LAYOUTS[p.MsgType.HELLO][0]}
                                       | {"proto": 1}))
    hello[0] = 3  # its version byte says v3, its own head says v1: garbage
    assert dec.feed(_crc_valid_frame(bytes(hello))) == []
    assert dec.bad_payloads == 2
    foreign = dec.feed(_crc_valid_frame(bytes([2]) + sample[1:]))  # right length, other version
    assert [(m.type, m.version, m.fields) for m in foreign] == [(p.MsgType.SAMPLE, 2, {})]


def _acceptable(m: p.Message, payload: bytes) -> bool:
    size = 2 + p._STRUCTS[m.type].size
    if len(payload) > p.MAX_PAYLOAD:
        return False
    if m.version == p.PROTOCOL_VERSION:
        return len(payload) == size and payload[0] == m.version
    if m.type is p.MsgType.HELLO:
        return payload[5] == m.version and m.fields["proto"] == m.version
    return len(payload) == size


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.binary(min_size=0, max_size=60), min_size=1, max_size=8), st.integers(0, 255))
def test_crc_valid_garbage_becomes_a_message_only_with_the_right_length_and_version(payloads, junk):
    """The fuzz that found garbage turned into Messages: every frame here has a correct CRC, so
    only the length and version checks stand between it and the driver."""
    dec = p.FrameDecoder()
    stream = bytes([junk]) + b"".join(_crc_valid_frame(pl) for pl in payloads)
    msgs = []
    for i in range(0, len(stream), 17):  # split reads
        msgs += dec.feed(stream[i:i + 17])
    accepted = [pl for pl in payloads if len(pl) >= 2 and pl[1] in p.MsgType._value2member_map_]
    for m in msgs:
        assert any(pl[1] == m.type and _acceptable(m, pl) for pl in accepted), m

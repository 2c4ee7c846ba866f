import numpy as np
import pytest

from drivers.dynamixel import control_table as ct
from drivers.dynamixel import protocol as p


def test_crc_matches_the_e_manual_example():
    # Read Present Position of ID 1, from the Protocol 2.0 e-manual: CRC bytes 1D 15.
    pkt = bytes([0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x07, 0x00, 0x02, 0x84, 0x00, 0x04, 0x00])
    assert p.crc(pkt) == 0x151D
    assert p.build_packet(1, p.READ, bytes([0x84, 0x00, 0x04, 0x00])) == pkt + bytes([0x1D, 0x15])


def test_stuffing_round_trip_and_length_counts_stuffed_bytes():
    params = bytes([0xFF, 0xFF, 0xFD, 0x01])
    pkt = p.build_packet(3, p.WRITE, params)
    assert b"\xff\xff\xfd\xfd" in pkt[7:]
    assert pkt[5] | pkt[6] << 8 == len(pkt) - 7
    buf = bytearray(pkt)
    got = p.parse_stream(buf)
    assert got.crc_ok and got.params == params and got.instruction == p.WRITE and not buf


def test_parser_skips_garbage_and_reports_bad_crc():
    good = p.build_packet(1, p.PING)
    bad = bytearray(good)
    bad[-1] ^= 0x55
    buf = bytearray(b"\x00\x13\xff\xfd" + bytes(bad) + b"\xff" + good)
    first = p.parse_stream(buf)
    assert first.servo_id == 1 and not first.crc_ok
    second = p.parse_stream(buf)
    assert second.crc_ok and second.instruction == p.PING
    assert p.parse_stream(buf) is None


def test_model_table_matches_reference():
    expected = {"xl330-m077": 1190, "xl330-m288": 1200, "xl430-w250": 1060, "xc430-w150": 1070,
                "xm430-w350": 1020, "xm540-w270": 1120}
    assert {m.name: m.number for m in ct.MODELS.values()} == expected
    assert not ct.MODELS["xl430-w250"].supports(0) and ct.MODELS["xm430-w350"].supports(5)
    assert ct.MODELS["xc430-w150"].reports_load
    assert ct.block("present_current", "present_position") == (126, 10)


def test_unit_conversions_round_trip():
    ticks = np.array([0, 1024, 2048, 3072, 4096])
    rad = ct.ticks_to_rad(ticks)
    assert rad[2] == 0 and rad[3] == pytest.approx(np.pi / 2)
    assert ct.rad_to_ticks(rad) == pytest.approx(ticks)
    assert ct.velocity_to_rad_s(100) == pytest.approx(100 * 0.229 * 2 * np.pi / 60)
    assert ct.current_to_ma(ct.MODELS["xm430-w350"], 100) == pytest.approx(269.0)
    assert ct.current_to_ma(ct.MODELS["xl430-w250"], 100) == pytest.approx(10.0)  # percent load


def test_unknown_model_number_names_the_supported_ones():
    with pytest.raises(ct.UnknownModel, match=r"model number 9999.*xm430-w350 \(1020\)"):
        ct.model_by_number(9999)

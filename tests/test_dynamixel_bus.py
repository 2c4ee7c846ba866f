"""The bus driver against the byte-exact emulator, through the real dynamixel-sdk."""

from __future__ import annotations

import threading
import time

import pytest
from dynamixel_sdk import COMM_SUCCESS, GroupBulkRead

from drivers.dynamixel import protocol as p
from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.emulator import ServoSpec, arm_specs
from drivers.dynamixel.errors import (
    CorruptReply,
    HardwareAlert,
    NoStatusPacket,
    PortLost,
    PortUnavailable,
    ServoError,
)

FOLLOWER = ["xm540-w270"] * 7 + ["xm430-w350"] * 2


def settle(bus: DynamixelBus, servo_id: int = 1) -> None:
    """Sync writes get no reply; a read behind them proves the servos have processed them."""
    bus.read(servo_id, "led")


@pytest.fixture
def arm(emulated):
    emu = emulated(arm_specs(FOLLOWER))
    bus = DynamixelBus(emu.port).open()
    yield emu, bus
    bus.close()


def test_ping_and_broadcast_ping(arm):
    emu, bus = arm
    info = bus.ping(8)
    assert (info.id, info.model_name, info.firmware, info.baud) == (8, "xm430-w350", 52, 1_000_000)
    found = bus.broadcast_ping()
    assert [s.id for s in found] == list(range(1, 10))
    assert {s.model_name for s in found} == {"xm540-w270", "xm430-w350"}


def test_read_write_registers_of_each_size(arm):
    emu, bus = arm
    bus.write(2, "led", 1)
    bus.write(2, "position_p_gain", 640)
    bus.write(2, "profile_velocity", 123_456)
    bus.write(2, "homing_offset", -1000)
    s = emu.servo(2)
    assert (s.get("led"), s.get("position_p_gain"), s.get("profile_velocity")) == (1, 640, 123_456)
    assert bus.read(2, "homing_offset") == -1000
    assert bus.read(2, "present_position") == 2048 - 1000


def test_sync_read_block_uses_fast_sync_read_and_decodes_signed_values(arm):
    emu, bus = arm
    for i, s in enumerate(emu.servos):
        s.external_motion = True
        s.set_present(position=1000 + i, velocity=-5 * i * 4096 * 0.229 / 60, current=-3 * i)
    reader = bus.reader(list(range(1, 10)), "present_current", "present_position")
    values = reader.read()
    assert reader.names == ["present_current", "present_velocity", "present_position"]
    assert list(values[:, 2]) == [1000 + i for i in range(9)]
    assert list(values[:, 0]) == [-3 * i for i in range(9)]
    assert list(values[:, 1]) == [-5 * i for i in range(9)]
    assert p.FAST_SYNC_READ in emu.instructions and p.SYNC_READ not in emu.instructions


def test_fast_sync_read_falls_back_when_a_servo_lacks_it(emulated):
    specs = arm_specs(["xm430-w350"] * 3)
    specs[1].fast_sync_read = False
    emu = emulated(specs)
    with DynamixelBus(emu.port) as bus:
        reader = bus.reader([1, 2, 3], "present_position")
        assert list(reader.read()[:, 0]) == [2048] * 3
        assert not reader.use_fast
        assert any("Fast Sync Read" in w for w in bus.warnings)
        reader.read()
        assert emu.instructions[-1] == p.SYNC_READ


def test_sync_write_goal_positions_moves_the_servos(arm):
    emu, bus = arm
    ids = list(range(1, 10))
    bus.set_torque(ids, True)
    settle(bus)
    assert all(emu.servo(i).torque_enabled for i in ids)
    goals = [1500 + 100 * i for i in ids]
    bus.writer(ids, "goal_position").write(goals)
    settle(bus)
    assert [emu.servo(i).get("goal_position") for i in ids] == goals
    time.sleep(0.3)  # several time constants of the emulated motion
    now = bus.reader(ids, "present_position").read()[:, 0]
    assert max(abs(now - goals)) <= 2


def test_torque_off_then_operating_mode_and_return_delay(arm):
    emu, bus = arm
    bus.set_torque([1], False)
    settle(bus)
    bus.set_operating_mode([1], "extended_position")
    bus.set_return_delay([1], 0)
    assert emu.servo(1).get("operating_mode") == 4
    bus.write(1, "return_delay_time", 5)
    assert bus.health_warnings([1, 2]) == [
        f"{emu.port}, servo 1: return delay time is 10 µs per reply; set it to 0 "
        f"with `rig doctor --fix {emu.port}` (every servo on the chain)"]


def test_reg_write_action_and_bulk_read_through_the_sdk(arm):
    emu, bus = arm
    result, error = bus.ph.regWriteTxRx(bus.port, 3, 65, 1, [1])
    assert (result, error) == (COMM_SUCCESS, 0) and emu.servo(3).get("led") == 0
    bus.ph.action(bus.port, p.BROADCAST_ID)
    time.sleep(0.02)
    assert emu.servo(3).get("led") == 1
    bulk = GroupBulkRead(bus.port, bus.ph)
    assert bulk.addParam(1, 0, 2) and bulk.addParam(9, 132, 4)
    assert bulk.txRxPacket() == COMM_SUCCESS
    assert bulk.getData(1, 0, 2) == 1120 and bulk.getData(9, 132, 4) == 2048


def test_reboot_clears_hardware_error_and_keeps_eeprom(arm):
    emu, bus = arm
    bus.write(4, "homing_offset", 77)
    bus.write(4, "torque_enable", 1)
    emu.servo(4).set_hardware_error(1 << 5)  # overload: covered by Shutdown, drops torque
    with pytest.raises(HardwareAlert) as err:
        bus.read(4, "present_position")
    assert err.value.names == ["overload"] and err.value.servo_id == 4
    assert "overload" in str(err.value) and "servo 4" in str(err.value) and "reboot" in str(err.value)
    assert not emu.servo(4).torque_enabled
    bus.write(4, "torque_enable", 1)  # refused silently by the servo while the error stands
    assert not emu.servo(4).torque_enabled
    bus.reboot(4)
    time.sleep(0.01)
    assert bus.hardware_error(4) == 0 and bus.read(4, "homing_offset") == 77


@pytest.mark.parametrize("name,value,code", [
    ("operating_mode", 16, None),  # PWM: supported on xm540
    ("id", 253, p.ERR_DATA_RANGE),
    ("goal_position", 5000, p.ERR_DATA_LIMIT),  # beyond Max Position Limit in position mode
])
def test_servo_range_and_limit_errors(arm, name, value, code):
    emu, bus = arm
    if code is None:
        bus.write(5, name, value)
        assert emu.servo(5).get(name) == value
        return
    with pytest.raises(ServoError) as err:
        bus.write(5, name, value)
    assert err.value.code == code and err.value.register == name
    assert f"servo 5, {name}" in str(err.value)


def test_eeprom_locked_while_torque_on_gives_access_error(arm):
    emu, bus = arm
    bus.write(6, "torque_enable", 1)
    with pytest.raises(ServoError, match="access error.*disable torque first") as err:
        bus.write(6, "homing_offset", 10)
    assert err.value.code == p.ERR_ACCESS
    assert emu.servo(6).get("homing_offset") == 0


def test_unsupported_mode_and_partial_register_write(emulated):
    emu = emulated([ServoSpec(id=1, model="xl430-w250")])
    with DynamixelBus(emu.port) as bus:
        with pytest.raises(ServoError, match="data range error"):
            bus.write(1, "operating_mode", 0)  # current mode: the xl430 has no current sensor
        result, error = bus.ph.writeTxRx(bus.port, 1, 116, 2, [0, 8])  # half of Goal Position
        assert result == COMM_SUCCESS and error == p.ERR_DATA_LENGTH


def test_crc_and_instruction_errors_reported_by_the_servo(arm):
    emu, bus = arm
    bad = bytearray(p.build_packet(2, p.PING))
    bad[-2] ^= 0x01
    bus.port.clearPort()
    bus.port.writePort(bytes(bad))
    bus.port.setPacketTimeout(14)
    rx, result = bus.ph.rxPacket(bus.port, False)
    assert result == COMM_SUCCESS and rx[8] == p.ERR_CRC
    txpacket = [0] * 10
    txpacket[4], txpacket[5], txpacket[7] = 2, 3, 0x77  # an instruction no servo knows
    rx, result, error = bus.ph.txRxPacket(bus.port, txpacket)
    assert result == COMM_SUCCESS and error == p.ERR_INSTRUCTION


def test_missing_servo_times_out_with_an_actionable_message(arm):
    emu, bus = arm
    t0 = time.monotonic()
    with pytest.raises(NoStatusPacket) as err:
        bus.read(42, "present_position")
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert msg.startswith(f"{emu.port}, servo 42, present_position: no status packet after 3 tries")
    assert f"rig scan {emu.port}" in msg
    assert elapsed < 3.0  # never a hang: 3 tries of the 50 ms timeout (a loaded machine stretches them)


def test_missing_servo_in_a_sync_read_is_named(arm):
    emu, bus = arm
    reader = bus.reader([1, 2, 33], "present_position")
    reader.use_fast = False
    with pytest.raises(NoStatusPacket) as err:
        reader.read()
    assert err.value.servo_id == 33


def test_dropped_reply_is_retried(arm):
    emu, bus = arm
    emu.drop_replies(1, servo_id=3)
    assert bus.read(3, "present_position") == 2048
    assert bus.retry_count == 1
    emu.drop_replies(10)
    bus.retries = 2
    with pytest.raises(NoStatusPacket):
        bus.read(3, "present_position")


def test_corrupt_crc_is_retried_then_reported(arm):
    emu, bus = arm
    emu.corrupt_replies(1)
    reader = bus.reader(list(range(1, 10)), "present_position")
    assert list(reader.read()[:, 0]) == [2048] * 9
    emu.corrupt_replies(100, servo_id=2)
    with pytest.raises(CorruptReply, match="corrupt reply after 3 tries"):
        bus.read(2, "present_position")


def test_status_return_level_zero_answers_ping_only(arm):
    emu, bus = arm
    # The servo applies Status Return Level 0 before it would reply, so send without waiting.
    bus.ph.write1ByteTxOnly(bus.port, 7, 68, 0)
    assert bus.ping(7).firmware == 52
    with pytest.raises(NoStatusPacket):
        bus.read(7, "present_position")
    bus.ph.write1ByteTxOnly(bus.port, 7, 68, 1)
    assert bus.ping(7).id == 7
    assert bus.read(7, "present_position") == 2048


def test_id_and_baud_changes_take_effect(emulated):
    emu = emulated([ServoSpec(id=1, model="xl330-m288")], baud=57_600)
    with DynamixelBus(emu.port, 57_600) as bus:
        bus.write(1, "id", 12)
        assert bus.ping(12).id == 12
        bus.write(12, "baud_rate", 4)  # 2 Mbaud, applied after the reply
        with pytest.raises(NoStatusPacket):
            bus.ping(12)  # still talking at 57600: the servo no longer hears us
    with DynamixelBus(emu.port, 2_000_000) as bus:
        assert bus.ping(12).model_name == "xl330-m288"


def test_servo_answers_only_at_its_own_baud(emulated):
    emu = emulated(arm_specs(["xm430-w350"]), baud=1_000_000)
    with DynamixelBus(emu.port, 57_600, retries=0) as bus, pytest.raises(NoStatusPacket):
        bus.ping(1)


def test_duplicate_ids_garble_replies(emulated):
    emu = emulated([ServoSpec(id=1, model="xm430-w350"), ServoSpec(id=1, model="xl430-w250"),
                    ServoSpec(id=2)])
    with DynamixelBus(emu.port) as bus:
        with pytest.raises(CorruptReply, match="share this ID"):
            bus.ping(1)
        assert bus.ping(2).id == 2


def test_drive_mode_reverse_and_homing_offset(emulated):
    emu = emulated([ServoSpec(id=1, drive_mode=1, homing_offset=4096, position=1000)])
    with DynamixelBus(emu.port) as bus:
        assert bus.read(1, "present_position") == -1000 + 4096
        bus.write(1, "torque_enable", 1)
        bus.write(1, "goal_position", 4096 - 1500)
        assert emu.servo(1).goal_position == pytest.approx(1500)


def test_secondary_id_follows_its_primary(emulated):
    # ALOHA's paired shoulder: the shadow servo has Secondary ID = primary and reversed direction.
    emu = emulated([ServoSpec(id=2), ServoSpec(id=3, secondary_id=2, drive_mode=1, homing_offset=4096,
                                                position=-2048)])
    with DynamixelBus(emu.port) as bus:
        bus.set_torque([2, 3], True)
        bus.sync_write("goal_position", {2: 2300})
        settle(bus, 2)
        assert emu.servo(3).get("goal_position") == 2300
        time.sleep(0.3)
        state = bus.sync_read([2, 3], "present_position")
        assert abs(state[2]["present_position"] - 2300) <= 2
        # The shadow turns the other way physically (it is mounted mirrored), by the same angle.
        assert emu.servo(3).goal_position == pytest.approx(-(2300 - 4096))
        assert abs(emu.servo(3).physical_position - 1796) <= 5


def test_unplugged_port_raises_port_lost_without_hanging(arm):
    emu, bus = arm
    reader = bus.reader(list(range(1, 10)), "present_position")
    reader.read()
    emu.unplug()
    t0 = time.monotonic()
    with pytest.raises(PortLost, match="vanished"):
        for _ in range(5):
            reader.read()
    assert time.monotonic() - t0 < 3.0  # raised, not a hang (the time itself is the machine's load)
    assert not bus.is_open


def test_missing_port_and_bad_baud_are_clear(tmp_path):
    with pytest.raises(PortUnavailable, match="no such port"):
        DynamixelBus(str(tmp_path / "ttyUSB9")).open()
    with pytest.raises(PortUnavailable, match="not a Dynamixel X-series rate"):
        DynamixelBus("/dev/null", 12345)


def test_port_is_exclusive(arm):
    emu, bus = arm
    with pytest.raises(PortUnavailable, match="cannot open port"):
        DynamixelBus(emu.port).open()


def test_waiting_for_a_reply_does_not_spin(emulated):
    emu = emulated(arm_specs(["xm430-w350"]))
    with DynamixelBus(emu.port, retries=0, timeout_margin_ms=300) as bus:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        with pytest.raises(NoStatusPacket):
            bus.read(99, "present_position")
        cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    assert wall >= 0.3
    assert cpu < 0.2 * wall  # the SDK's own port would burn ~100% here


def test_emulated_wire_time_is_a_floor_on_the_round_trip(emulated):
    emu = emulated(arm_specs(FOLLOWER), baud=57_600)
    with DynamixelBus(emu.port, 57_600) as bus:
        reader = bus.reader(list(range(1, 10)), "present_current", "present_position")
        t0 = time.monotonic()
        reader.read()
        elapsed = time.monotonic() - t0
    wire = (14 + 9 + 8 + 9 * 14) * 10 / 57_600  # fast sync read: instruction + one combined reply
    assert elapsed >= wire


def test_bus_can_be_used_from_another_thread(arm):
    emu, bus = arm
    out = []
    t = threading.Thread(target=lambda: out.append(bus.read(1, "model_number")))
    t.start()
    t.join()
    assert out == [1120]


def test_a_late_reply_to_another_read_is_never_decoded_as_this_one(emulated):
    # At 57600 baud the reply to a READ of voltage+temperature is still on the wire when the
    # sync read goes out: its 3 bytes must not be taken for current+velocity+position.
    emu = emulated(arm_specs(["xm430-w350"] * 2), baud=57_600)
    for s in emu.servos:
        s.external_motion = True
        s.set_present(position=3000)
    with DynamixelBus(emu.port, 57_600, timeout_margin_ms=30) as bus:
        reader = bus.reader([1, 2], "present_current", "present_position")
        reader.use_fast = False
        bus.ph.readTx(bus.port, 1, 144, 3)  # send, and never wait for its reply
        bus.port.is_using = False
        values = reader.read()
    assert list(values[:, 2]) == [3000, 3000]
    assert bus.retry_count >= 1


def test_a_late_reply_never_answers_a_single_register_read(emulated):
    emu = emulated([ServoSpec(id=1, homing_offset=3580)], baud=57_600)
    with DynamixelBus(emu.port, 57_600, timeout_margin_ms=30) as bus:
        bus.ph.readTx(bus.port, 1, 20, 4)  # Homing Offset, never waited for
        bus.port.is_using = False
        assert bus.read(1, "drive_mode") == 0  # not 252, the low byte of 3580
        assert bus.read(1, "homing_offset") == 3580

"""The Bus Watchdog (address 98), torque-off confirmation, reboot and return-delay timing,
through the real dynamixel-sdk against the emulator."""

from __future__ import annotations

import time

import pytest

from drivers.dynamixel import protocol as p
from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.emulator import ServoSpec, arm_specs
from drivers.dynamixel.errors import DynamixelError, ServoError
from rig.session import wait_until


def wait_for(predicate, timeout: float = 5.0) -> bool:
    return wait_until(predicate, timeout, interval=0.005)


@pytest.fixture
def chain(emulated):
    emu = emulated(arm_specs(["xm430-w350"] * 3))
    bus = DynamixelBus(emu.port).open()
    yield emu, bus
    bus.close()


def test_watchdog_stops_a_moving_servo_where_it_is_and_locks_its_goal(chain):
    emu, bus = chain
    s = emu.servo(1)
    s.external_motion = True  # the test moves the shaft, as a simulator would: no race with a motion model
    bus.set_torque([1, 2, 3], True)
    assert bus.set_watchdog([1, 2, 3], 100) == 5  # 5 x 20 ms
    assert [emu.servo(i).get("bus_watchdog") for i in (1, 2, 3)] == [5, 5, 5]
    bus.write(1, "goal_position", 3500)  # a long move, still under way when the host goes quiet
    t_last = s.last_instruction
    with emu.lock:
        s.set_present(2600.0, velocity=3000.0)
    assert wait_for(lambda: s.watchdog_fired)
    assert s.watchdog_fired_at - t_last >= 0.1  # not before the interval
    assert s.torque_enabled  # it stops, holding, with torque on
    assert s.get("goal_position") == 2600  # where it was, not the goal it was heading for
    assert bus.read(1, "present_position") == 2600
    assert bus.read(1, "bus_watchdog") == -1
    assert bus.watchdog_fired([1, 2, 3]) == [1, 2, 3]
    # Goal writes are refused with an access error until 0 is written to 98.
    with pytest.raises(ServoError) as err:
        bus.write(1, "goal_position", 3000)
    assert err.value.code == p.ERR_ACCESS
    with pytest.raises(ServoError):
        bus.write(1, "bus_watchdog", 5)  # re-arming needs the clear first
    assert bus.clear_watchdog([1]) == []
    assert bus.read(1, "bus_watchdog") == 0
    bus.write(1, "goal_position", 3000)
    assert s.get("goal_position") == 3000


def test_watchdog_does_not_fire_while_the_host_keeps_talking(chain):
    emu, bus = chain
    bus.set_torque([1, 2, 3], True)
    bus.set_watchdog([1, 2, 3], 400)  # generous: a loaded test machine may stall this thread
    writer = bus.writer([1, 2, 3], "goal_position")
    end = time.monotonic() + 1.5
    while time.monotonic() < end:  # 50 Hz sync writes, as the control loop sends them
        writer.write([2100, 2100, 2100])
        time.sleep(0.02)
    assert bus.watchdog_fired([1, 2, 3]) == []
    assert bus.clear_watchdog([1, 2, 3]) == []
    time.sleep(0.2)
    assert not any(emu.servo(i).watchdog_fired for i in (1, 2, 3))


def test_watchdog_is_inactive_with_torque_off_and_cleared_by_reboot(chain):
    emu, bus = chain
    bus.set_watchdog([1], 40)
    time.sleep(0.15)
    assert not emu.servo(1).watchdog_fired  # torque off: nothing to stop
    bus.set_torque([1], True)
    assert wait_for(lambda: emu.servo(1).watchdog_fired)
    bus.reboot(1)  # RAM back to defaults
    assert bus.read(1, "bus_watchdog") == 0


def test_watchdog_fires_after_the_adapter_is_unplugged(chain):
    emu, bus = chain
    bus.set_torque([1, 2, 3], True)
    bus.set_watchdog([1, 2, 3], 60)
    emu.unplug()
    assert wait_for(lambda: all(emu.servo(i).watchdog_fired for i in (1, 2, 3)))
    with pytest.raises(DynamixelError):
        bus.read(1, "led")


def test_watchdog_range_is_checked_before_anything_is_written(chain):
    emu, bus = chain
    with pytest.raises(DynamixelError, match="outside what servos support"):
        bus.set_watchdog([1], 5000)
    assert DynamixelBus.watchdog_units(100) == 5
    assert DynamixelBus.watchdog_units(101) == 6  # rounded up: never shorter than asked
    assert emu.servo(1).get("bus_watchdog") == 0


def test_torque_off_is_confirmed_per_servo_and_retried(chain):
    emu, bus = chain
    bus.set_torque([1, 2, 3], True)
    bus.read(1, "led")
    emu.drop_replies(2, servo_id=2)  # two lost replies: the retries ride them out
    assert bus.torque_off_confirmed([1, 2, 3]) == []
    assert not any(emu.servo(i).torque_enabled for i in (1, 2, 3))


def test_torque_off_names_the_servo_that_never_confirms(emulated):
    emu = emulated(arm_specs(["xm430-w350"] * 2))
    bus = DynamixelBus(emu.port).open()
    try:
        bus.set_torque([1, 2], True)
        bus.read(1, "led")
        emu.drop_replies(100, servo_id=2)  # servo 2 has gone silent (a cut cable between 1 and 2)
        assert bus.torque_off_confirmed([1, 2]) == [2]
        assert not emu.servo(1).torque_enabled
    finally:
        bus.close()


def test_read_timeout_follows_the_factory_return_delay(emulated):
    """Nine servos at the factory 500 µs return delay: a sync read waits 4.5 ms in delays alone,
    more than the margin a tick allows. The bus adds each servo's delay to its timeout."""
    emu = emulated(arm_specs(["xm430-w350"] * 9, return_delay=250))
    bus = DynamixelBus(emu.port, timeout_margin_ms=3.0, fast_sync_read=False).open()
    try:
        ids = list(range(1, 10))
        reader = bus.reader(ids, "present_position")
        assert list(reader.read()[:, 0]) == [2048] * 9
        assert bus.port.reply_delay_ms == pytest.approx(4.5)  # unknown servos: the factory delay
        learned = bus.learn_return_delays(ids)  # best effort: a reply lost to a busy machine stays assumed
        assert learned and set(learned.values()) == {250}
        assert bus.reply_delay_ms(ids) == pytest.approx(4.5)
        bus.set_return_delay(ids, 0)
        assert [emu.servo(i).get("return_delay_time") for i in ids] == [0] * 9
        assert list(reader.read()[:, 0]) == [2048] * 9
        assert bus.port.reply_delay_ms == 0  # known to answer at once: the tight timeout again
    finally:
        bus.close()


def test_set_return_delay_on_an_assembled_chain_with_torque_on(emulated):
    emu = emulated([ServoSpec(1, return_delay=250), ServoSpec(2, return_delay=250)])
    bus = DynamixelBus(emu.port).open()
    try:
        bus.set_torque([1], True)
        bus.read(1, "led")
        bus.set_return_delay([1, 2], 0)
        assert [emu.servo(i).get("return_delay_time") for i in (1, 2)] == [0, 0]
        assert emu.servo(1).torque_enabled and not emu.servo(2).torque_enabled  # as they were
    finally:
        bus.close()


def test_plugged_back_in_the_fired_watchdog_is_still_there_until_cleared(chain):
    emu, bus = chain
    bus.set_torque([1], True)
    bus.set_watchdog([1], 40)
    emu.unplug()
    assert wait_for(lambda: emu.servo(1).watchdog_fired)
    port = emu.start()  # the same powered servos on a new adapter: their RAM is as it was
    with DynamixelBus(port) as again:
        assert again.watchdog_fired([1, 2, 3]) == [1]
        with pytest.raises(ServoError):
            again.write(1, "goal_position", 3000)
        assert again.set_watchdog([1], 100) == 5  # clears first, then arms
        again.write(1, "goal_position", 3000)
        assert again.clear_watchdog([1]) == []

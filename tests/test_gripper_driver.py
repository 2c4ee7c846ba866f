"""HandheldGripper against the host build of the real firmware on a pty."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.gripper import GripperConfig, GripperError, HandheldGripper, LedMode, ProtocolVersionError
from drivers.gripper.standin import HostGripperStandIn
from tests import system


@pytest.fixture
def standin():
    system.require("cc")  # the stand-in is the firmware built for this machine
    started: list[HostGripperStandIn] = []

    def make(**kw) -> HostGripperStandIn:
        s = HostGripperStandIn(**kw).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def gripper(standin):
    sim = standin()
    g = HandheldGripper(GripperConfig(sim.port)).connect()
    yield sim, g
    g.close()


def collect(g: HandheldGripper, seconds: float) -> list:
    g.drain()
    time.sleep(seconds)
    return g.drain()


def wait_for(predicate, g: HandheldGripper, timeout: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = g.read(timeout=0.2)
        if s is not None and predicate(s):
            return s
    return None


def test_handshake_reports_identity(gripper):
    _, g = gripper
    info = g.info
    assert info.protocol == 1 and info.firmware == "1.0.0"
    assert info.serial_number == "47525031"
    assert info.encoder_ok and info.imu_ok
    assert info.encoder_counts == 4096 and info.jaw_open_rad == pytest.approx(np.pi / 2, abs=1e-5)
    assert g.clock.fit is not None and g.connected


def test_streams_at_the_configured_rate_with_mapped_times(gripper):
    sim, g = gripper
    samples = collect(g, 1.0)
    assert len(samples) > 10  # how many arrive in 1 s is the machine's load; the rate is the device clock's
    seqs = np.array([s.seq for s in samples])
    assert np.all(np.diff(seqs) == 1)
    dt = np.diff([s.t_device_us for s in samples])
    assert np.median(dt) == pytest.approx(5000, abs=50)
    assert g.stats.lost == 0
    for s in samples:
        assert 0.0 <= s.jaw_normalized <= 1.0
        assert s.imu.accel[2] == pytest.approx(9.81, abs=0.3)  # resting on the table: gravity on z
        assert abs(s.t_host_ns - sim.true_host_ns(s.t_device_us)) < 500_000
        assert s.t_host_ns <= s.t_received_ns + 200_000
    assert max(s.jaw_normalized for s in samples) - min(s.jaw_normalized for s in samples) > 0.2


def test_set_rate_filter_led_and_bad_arguments(gripper):
    _, g = gripper
    g.set_rate(100)
    samples = collect(g, 0.5)
    assert np.median(np.diff([s.t_device_us for s in samples])) == pytest.approx(10_000, abs=50)
    g.set_led(LedMode.BLINK_FAST)
    g.set_filter(0)
    with pytest.raises(GripperError, match="1..1000 Hz"):
        g.set_rate(5000)
    with pytest.raises(GripperError, match="below half the sample rate"):
        g.set_filter(60.0)  # >= 50 Hz at 100 Hz sampling
    with pytest.raises(GripperError, match=r"refused SET_LED .*modes are 0\.\.3"):
        g.set_led(9)  # the device itself refuses it


def test_stop_and_start_stream(gripper):
    _, g = gripper
    g.stop_stream()
    time.sleep(0.05)
    assert collect(g, 0.3) == []
    g.start_stream()
    resumed = collect(g, 0.3)
    assert resumed and np.all(np.diff([s.seq for s in resumed]) == 1)


def test_jaw_trigger_and_buttons_follow_the_hand(gripper):
    sim, g = gripper
    sim.command("jaw 0.5")
    # 15 Hz low-pass: it settles there (how soon on the host's clock is the machine's load)
    s = wait_for(lambda s: abs(s.jaw_rad - np.pi / 4) <= 0.005, g, timeout=5.0)
    assert s is not None
    assert s.jaw_raw == pytest.approx(1024 + 512, abs=3)
    assert g.normalized_jaw() == pytest.approx(0.5, abs=0.01)
    sim.command("trigger 1")
    assert wait_for(lambda s: s.trigger, g) is not None
    sim.command("press 1 150")
    pressed = wait_for(lambda s: s.button(1), g)
    assert pressed is not None and not pressed.button(0)
    assert wait_for(lambda s: s.buttons == 0, g) is not None  # released after 150 ms
    sim.command("encoder 0")
    faulty = wait_for(lambda s: s.encoder_fault, g)
    assert faulty is not None and faulty.jaw_raw == 0xFFFF


def test_unplug_and_reconnect_keeps_the_session(gripper):
    sim, g = gripper
    before = collect(g, 0.2)
    sim.command("unplug 400")
    assert wait_for(lambda s: s.seq > before[-1].seq + 100, g, timeout=5.0) is not None
    assert g.stats.reconnects == 1 and g.stats.reboots == 0
    assert g.stats.lost >= 40  # ~400 ms of samples at 200 Hz never reached us
    g.set_rate(50)  # commands work on the new link
    samples = collect(g, 0.3)
    assert np.median(np.diff([s.t_device_us for s in samples])) == pytest.approx(20_000, abs=50)
    assert abs(samples[-1].t_host_ns - sim.true_host_ns(samples[-1].t_device_us)) < 500_000


def test_unplug_for_good_raises_on_read(standin):
    sim = standin(extra_args=("--unplug-exit",))
    g = HandheldGripper(GripperConfig(sim.port, reconnect_timeout_s=0.5)).connect()
    try:
        sim.command("unplug")
        with pytest.raises(GripperError, match="unplugged and not back within"):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                g.read(timeout=0.2)
    finally:
        g.close()


def test_protocol_version_mismatch_is_explained(standin):
    sim = standin(protocol_version=2)
    g = HandheldGripper(GripperConfig(sim.port))
    with pytest.raises(ProtocolVersionError, match=r"firmware 1\.0\.0 speaking protocol v2.*driver speaks v1"):
        g.connect()
    assert not g.connected


def test_missing_port_and_silent_port_messages(tmp_path):
    with pytest.raises(GripperError, match="cannot open gripper port .*by-id"):
        HandheldGripper(str(tmp_path / "nope")).connect()
    import os
    import pty

    master, slave = pty.openpty()
    try:
        g = HandheldGripper(GripperConfig(os.ttyname(slave), handshake_timeout_s=0.3))
        with pytest.raises(GripperError, match="no HELLO from a gripper"):
            g.connect()
    finally:
        os.close(master)
        os.close(slave)


def test_garbage_to_device_is_reported_and_survived(gripper):
    _, g = gripper
    g._write(b"\x55" * 30 + b"\x00" + b"\x03\x01\x02\x00")  # junk, then a frame with a bad CRC
    time.sleep(0.2)
    assert g.stats.device_errors >= 2
    assert "FRAMING" in g.stats.last_device_error or "CRC" in g.stats.last_device_error
    g.set_rate(200)
    after = collect(g, 0.2)
    assert after and np.median(np.diff([s.t_device_us for s in after])) == pytest.approx(5000, abs=50)


def test_monitor_command_prints_live_values(standin, capsys):
    import argparse

    from rig.commands.gripper import register

    sim = standin()
    sim.command("jaw 0.25")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["gripper", "monitor", sim.port, "--seconds", "0.6"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "gripper 47525031: firmware 1.0.0, protocol v1, 200 Hz, encoder ok, IMU ok" in out
    assert "jaw 0.25" in out and "lost 0" in out


def test_reboot_on_replug_resets_clock_sync(gripper):
    sim, g = gripper
    time.sleep(1.2)  # long enough for a drift fit, which must not survive the reboot
    sim.command("reboot 300")  # a USB-powered gripper loses power when unplugged
    fresh = wait_for(lambda s: s.seq < 50 and g.stats.reconnects == 1, g, timeout=5.0)
    assert fresh is not None
    assert g.stats.reboots == 1 and fresh.t_device_us < 2_000_000
    samples = collect(g, 0.3)
    assert np.all(np.diff([s.seq for s in samples]) == 1)
    # Mapped onto the host clock from the new epoch: never after its arrival, and not the 1.2 s and
    # more that the old epoch would put it off (arrival itself lags on a loaded machine).
    lag_ms = [(s.t_received_ns - s.t_host_ns) / 1e6 for s in samples]
    assert min(lag_ms) > -0.5 and max(lag_ms) < 1000

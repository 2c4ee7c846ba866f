"""`rig doctor --fix` and `--reboot` on an assembled chain, as doctor's own advice says."""

from __future__ import annotations

from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.emulator import ServoSpec, arm_specs
from rig.cli import main


def test_doctor_advises_fix_and_fix_sets_return_delay_zero_on_the_chain(emulated, capsys):
    emu = emulated(arm_specs(["xm430-w350"] * 3, return_delay=250))  # factory 500 µs, assembled
    with DynamixelBus(emu.port, retries=5) as bus:
        bus.write(1, "torque_enable", 1)  # one servo holding: EEPROM writes need torque off
    assert main(["doctor", emu.port]) == 2
    out = capsys.readouterr().out
    assert (f"{emu.port}, servo 2: return delay time is 500 µs per reply; set it to 0 with "
            f"`rig doctor --fix {emu.port}`") in out
    assert main(["doctor", "--fix", emu.port]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("done:")] == [
        f"done: {emu.port}, servo {i}: return delay 500 µs -> 0" for i in (1, 2, 3)]
    assert "no problems found" in out
    assert [s.get("return_delay_time") for s in emu.servos] == [0, 0, 0]
    assert emu.servo(1).torque_enabled  # given back as it was
    assert main(["setup-motors", emu.port, "--ids", "5", "--yes", "--scan-baud", "1000000"]) == 2  # still refuses


def test_doctor_names_a_hardware_error_and_reboot_clears_it(emulated, capsys):
    emu = emulated([ServoSpec(1), ServoSpec(2)])
    emu.servo(2).set_hardware_error(1 << 5)  # overload
    assert main(["doctor", emu.port]) == 2
    out = capsys.readouterr().out
    assert f"{emu.port}, servo 2: hardware error: overload." in out
    assert f"`rig doctor --reboot {emu.port}`" in out
    assert main(["doctor", "--reboot", emu.port]) == 0
    out = capsys.readouterr().out
    assert f"done: {emu.port}, servo 2: rebooted out of hardware error (overload); cleared" in out
    assert emu.servo(2).hardware_error == 0


def test_a_follower_in_hardware_error_is_rebooted_on_connect(emulated, tmp_path):
    """The hardware-error message says rig reboots such a servo when it connects: it does."""
    from rigs import pair_buses, pair_config

    from rig.session import RigSession

    leader, follower = pair_buses(emulated)
    follower.servo(4).set_hardware_error(1 << 2)  # overheated before this start
    cfg = pair_config(tmp_path, leader, follower)
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}) as s:
        assert "arm follower: servo 4 was in hardware error (overheating); rebooted it" in s.warnings
        assert follower.servo(4).hardware_error == 0 and follower.servo(4).torque_enabled

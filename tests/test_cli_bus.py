"""The bus commands a person types: sim-bus, scan, setup-motors, doctor, and their bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drivers.dynamixel.emulator import ServoSpec
from rig.cli import main

ROOT = Path(__file__).resolve().parents[1]


def rig(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_sim_bus_then_scan_lists_every_servo():
    proc = subprocess.Popen([sys.executable, "-m", "rig", "sim-bus", "--servos", "4", "--model", "xl430-w250",
                             "--baud", "4000000"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        out = rig("scan", port, "--baud", "4000000")
        assert out.returncode == 0, out.stderr
        rows = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
        assert rows == [[str(i), "xl430-w250", "52", "4000000"] for i in range(1, 5)]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_scan_tries_every_baud(emulated, capsys):
    emu = emulated([ServoSpec(7, model="xc430-w150")], baud=57_600)
    assert main(["scan", emu.port]) == 0
    out = capsys.readouterr().out
    assert "   7  xc430-w150           52     57600" in out


def test_setup_motors_assigns_id_baud_and_zero_return_delay(emulated, capsys):
    emu = emulated([ServoSpec(1, model="xm430-w350", return_delay=250)], baud=57_600)
    assert main(["setup-motors", emu.port, "--ids", "5", "--baud", "1000000", "--yes",
                 "--scan-baud", "57600"]) == 0
    assert "ok: xm430-w350 now ID 5 at 1000000 baud, return delay 0" in capsys.readouterr().out
    servo = emu.servos[0]
    assert (servo.id, servo.baud, servo.get("return_delay_time")) == (5, 1_000_000, 0)


def test_setup_motors_refuses_a_chain(emulated, capsys):
    emu = emulated([ServoSpec(1), ServoSpec(2)], baud=1_000_000)
    assert main(["setup-motors", emu.port, "--ids", "3", "--yes", "--scan-baud", "1000000"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"rig: {emu.port}: 2 servos answered (ID 1 at 1000000, ID 2 at 1000000). "
                           "Connect one servo at a time")


def test_doctor_finds_duplicate_ids_and_slow_return_delay(emulated, capsys):
    emu = emulated([ServoSpec(1), ServoSpec(1, model="xl430-w250"), ServoSpec(2, return_delay=250)])
    assert main(["doctor", emu.port]) == 2
    out = capsys.readouterr().out
    assert f"{emu.port}: two or more servos share ID 1" in out
    assert f"{emu.port}, servo 2: return delay time is 500 µs per reply; set it to 0" in out
    assert "latency timer n/a" in out  # a pty has no FTDI latency timer


def test_latency_timer_above_one_ms_is_reported_with_the_fix(tmp_path):
    from drivers.dynamixel.port import latency_timer_advice, read_latency_timer

    dev = tmp_path / "sys/bus/usb-serial/devices/ttyUSB0"
    dev.mkdir(parents=True)
    (dev / "latency_timer").write_text("16\n")
    port = tmp_path / "ttyUSB0"
    port.touch()
    assert read_latency_timer(str(port), sysfs=tmp_path / "sys") == 16
    advice = latency_timer_advice(str(port), 16)
    assert "echo 1 | sudo tee /sys/bus/usb-serial/devices/ttyUSB0/latency_timer" in advice
    assert 'ATTR{latency_timer}="1"' in advice


@pytest.mark.parametrize("args,message", [
    (["scan", "/dev/ttyUSB-missing", "--baud", "1000000"],
     "rig: /dev/ttyUSB-missing: no such port. Check the USB cable; list adapters with `ls /dev/serial/by-id/` "
     "or run `rig doctor`"),
    (["teleop", "--config", "nosuch"],
     "rig: nosuch: (name): no built-in config by that name; use one of aloha, handheld, koch-pair, sim-aloha, "
     "sim-handheld, or a path to a .toml file"),
    (["scan", "/dev/null", "--baud", "12345"],
     "rig: /dev/null: baud 12345 is not a Dynamixel X-series rate; use one of 9600, 57600, 115200, 1000000, "
     "2000000, 3000000, 4000000, 4500000"),
])
def test_bad_input_gets_one_clear_line_and_no_traceback(args, message):
    out = rig(*args)
    assert out.returncode == 2
    assert out.stderr.strip() == message
    assert "Traceback" not in out.stdout + out.stderr


def test_config_errors_name_file_key_and_fix(tmp_path):
    from rig.config import ConfigError, load_config

    bad = tmp_path / "bad.toml"
    bad.write_text('[[arms]]\nname = "f"\nrole = "follower"\nleader = "ghost"\nport = "/dev/x"\n'
                   'joints = [{ name = "a", id = 1, model = "xm430-w350" }]\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value) == f"{bad}: arms[0].leader: 'ghost' is not a leader arm in this config; leaders: none"
    bad.write_text('[[arms]]\nname = "f"\nrole = "leader"\nport = "/dev/x"\n'
                   'joints = [{ name = "a", id = 1, model = "xm999" }]\n')
    with pytest.raises(ConfigError, match=r"arms\[0\]\.joints\[0\]\.model: unknown servo model 'xm999'"):
        load_config(bad)
    bad.write_text('rate_hz = "fast"\narms = []\n')
    with pytest.raises(ConfigError, match=r"bad.toml: rate_hz: must be a float, got 'fast'"):
        load_config(bad)

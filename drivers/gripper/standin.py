"""Run the host build of the gripper firmware (firmware/ports/host) as a stand-in gripper.

The stand-in is the real firmware core on a pseudo-terminal with simulated sensors, so the
driver, the recorder and the CLI can be exercised end to end without hardware.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from drivers.errors import RigError

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
HOST_BINARY = FIRMWARE_DIR / "build" / "host" / "gripper-host"


class StandInError(RigError):
    """The host stand-in gripper could not be built or started."""


def build_host_firmware() -> Path:
    """make -C firmware host (incremental); returns the binary's path."""
    if not (FIRMWARE_DIR / "Makefile").exists():
        raise StandInError(
            f"firmware sources not found at {FIRMWARE_DIR}: the stand-in needs a source checkout of rig"
        )
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        raise StandInError("building the stand-in gripper needs make and a C compiler: apt-get install build-essential")
    res = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "host"], capture_output=True, text=True)
    if res.returncode != 0:
        raise StandInError(f"make -C firmware host failed:\n{res.stdout}{res.stderr}")
    return HOST_BINARY


def _end_process(proc: subprocess.Popen) -> None:
    """Terminate a stand-in (kill it if it will not go) and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class HostGripperStandIn:
    """Start/stop the host firmware and script it.

    port: a stable symlink to the current pty (like /dev/serial/by-id/...): it survives unplugs.
    true_host_ns(device_us): where a device time really lies on time.monotonic_ns(), for checks.
    """

    def __init__(
        self,
        *,
        rate_hz: int | None = None,
        drift_ppm: float = 0.0,
        jitter_us: int = 0,
        jaw_period_s: float | None = None,
        protocol_version: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.drift_ppm = drift_ppm
        self._args = ["--drift-ppm", str(drift_ppm), "--jitter-us", str(jitter_us)]
        if rate_hz is not None:
            self._args += ["--rate", str(rate_hz)]
        if jaw_period_s is not None:
            self._args += ["--jaw-period", str(jaw_period_s)]
        if protocol_version is not None:
            self._args += ["--protocol-version", str(protocol_version)]
        self._args += list(extra_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self.port = ""
        self.pty_path = ""
        self.epoch_ns = 0

    def start(self, timeout_s: float = 5.0) -> HostGripperStandIn:
        binary = build_host_firmware()
        self._tmp = tempfile.TemporaryDirectory(prefix="rig-gripper-")
        tmp = Path(self._tmp.name)
        self.port = str(tmp / "gripper")
        self._control = tmp / "control"
        self._proc = subprocess.Popen(
            [str(binary), "--link", self.port, "--control", str(self._control), *self._args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while not self.epoch_ns:
            line = self._proc.stdout.readline()
            if not line:
                err = self._proc.stderr.read() if self._proc.stderr else ""
                raise StandInError(f"stand-in gripper exited at start-up: {err.strip()}")
            line = line.strip()
            if line.startswith("/"):
                self.pty_path = line
            elif line.startswith("epoch_ns="):
                self.epoch_ns = int(line.split("=", 1)[1])
            if time.monotonic() > deadline:
                raise StandInError("stand-in gripper did not report its pty in time")
        return self

    def command(self, line: str) -> None:
        """Send a control command: jaw <0..1> | jaw auto | trigger <0|1> | button <i> <0|1> |
        press <i> [ms] | encoder <0|1> | imu <0|1> | unplug [ms] | reboot [ms] | exit.
        After a reboot true_host_ns() no longer applies (the device clock restarted)."""
        fd = os.open(self._control, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (line.strip() + "\n").encode())
        finally:
            os.close(fd)

    def trace_start(self, timeout_s: float = 5.0) -> int:
        """Play the ``--imu-trace`` motion from now; returns where it started on the device clock (us)."""
        self.command("trace start")
        proc = self._proc
        assert proc is not None and proc.stdout is not None  # the reply comes on the stand-in's stdout
        deadline = time.monotonic() + timeout_s
        line = ""
        while not line.startswith("trace_start_us="):
            line = proc.stdout.readline().strip()
            if time.monotonic() > deadline or (not line and proc.poll() is not None):
                raise StandInError("the stand-in gripper did not start the IMU trace (started without --imu-trace?)")
        return int(line.split("=", 1)[1])

    def true_host_ns(self, device_us: int) -> int:
        return self.epoch_ns + round(device_us * 1000 / (1 + self.drift_ppm * 1e-6))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None:
            _end_process(self._proc)
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> HostGripperStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


QEMU_ELF = FIRMWARE_DIR / "build" / "stm32f4-qemu" / "gripper.elf"


class QemuGripperStandIn:
    """The STM32F405 firmware image under QEMU (netduinoplus2), its USART1 on a pty.

    QEMU models the UART and timer but no I2C/GPIO levels, so samples carry the encoder-fault
    flag and zero inputs: this checks the MCU build's protocol, timing and clock, not sensors.
    """

    def __init__(self, machine: str = "netduinoplus2") -> None:
        self.machine = machine
        self.port = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 10.0) -> QemuGripperStandIn:
        for tool in ("qemu-system-arm", "arm-none-eabi-gcc", "make"):
            if shutil.which(tool) is None:
                raise StandInError(
                    f"{tool} not found: apt-get install qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi"
                )
        res = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "arm-qemu"], capture_output=True, text=True)
        if res.returncode != 0:
            raise StandInError(f"make -C firmware arm-qemu failed:\n{res.stdout}{res.stderr}")
        self._proc = subprocess.Popen(
            ["qemu-system-arm", "-M", self.machine, "-nographic", "-monitor", "none",
             "-serial", "pty", "-kernel", str(QEMU_ELF)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while not self.port:
            line = self._proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise StandInError(f"QEMU did not report its serial pty: {line.strip()}")
            if "redirected to /dev/" in line:
                self.port = line.split("redirected to ", 1)[1].split()[0]
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _end_process(self._proc)
            self._proc = None

    def __enter__(self) -> QemuGripperStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

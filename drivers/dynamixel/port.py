"""A dynamixel-sdk PortHandler that waits for replies without spinning.

The SDK opens the port with ``timeout=0`` and polls ``read`` in a loop until the packet deadline,
so a transaction burns as much CPU as it waits. Here every read blocks in the kernel (select)
until the bytes arrive or the packet deadline passes. Deadlines use the monotonic clock, not the
wall clock the SDK uses, and assume the adapter's latency timer is what the rig configured
(1 ms), not the SDK's hard-coded 16 ms.
"""

from __future__ import annotations

import os
import select
import termios
import time
from pathlib import Path

import serial
from dynamixel_sdk import PortHandler


class BlockingPortHandler(PortHandler):
    is_open: bool  # set by the SDK's PortHandler

    def __init__(self, port_name: str, *, latency_timer_ms: float = 1.0, timeout_margin_ms: float = 8.0):
        super().__init__(port_name)
        self.latency_timer_ms = latency_timer_ms
        # Margin beyond wire time: covers return delays and scheduling noise, and is what a
        # missing servo costs per try.
        self.timeout_margin_ms = timeout_margin_ms
        # The servos' Return Delay Time the next reply (or replies) will spend on top of wire time;
        # the bus sets it before each transaction from what it knows of each servo.
        self.reply_delay_ms = 0.0
        self._deadline = 0.0
        self.lost = False  # the device vanished under us (USB unplugged, pty closed)

    # The SDK calls these; names and semantics are its own.
    def setupPort(self, cflag_baud):  # noqa: N802
        if self.is_open:
            self.closePort()
        self.ser = serial.Serial(port=self.port_name, baudrate=self.baudrate, bytesize=serial.EIGHTBITS,
                                 timeout=0, exclusive=True)
        self.is_open = True
        self.lost = False
        self.ser.reset_input_buffer()
        self.tx_time_per_byte = (1000.0 / self.baudrate) * 10.0
        return True

    def readPort(self, length):  # noqa: N802
        """Up to ``length`` bytes, blocking in select() until they arrive or the deadline passes.

        Straight on the fd: pyserial re-applies every termios setting whenever its timeout
        changes, which would cost two syscalls a read (and fails for custom bauds on a pty).
        """
        buf = bytearray()
        try:
            fd = self.ser.fd
            while len(buf) < length:
                # Past the deadline, still take what has already arrived (a late wake-up must not
                # turn a reply sitting in the buffer into a timeout).
                remaining = max(0.0, self._deadline - time.monotonic())
                ready, _, _ = select.select([fd], [], [], remaining)
                if not ready:
                    break
                chunk = os.read(fd, length - len(buf))
                if not chunk:  # readable but empty: the device is gone
                    raise OSError("device disconnected")
                buf += chunk
        except (OSError, TypeError, AttributeError, ValueError):
            self.lost = True
            self._deadline = 0.0
        return bytes(buf)

    def writePort(self, packet):  # noqa: N802
        try:
            return self.ser.write(bytes(packet))
        except (serial.SerialException, OSError, TypeError, AttributeError, termios.error):
            self.lost = True
            return 0

    def clearPort(self):  # noqa: N802
        try:
            self.ser.reset_input_buffer()
        except (serial.SerialException, OSError, TypeError, AttributeError, termios.error):
            self.lost = True

    def closePort(self):  # noqa: N802
        try:
            if self.ser is not None:
                self.ser.close()
        except (serial.SerialException, OSError):
            pass
        self.is_open = False

    def setPacketTimeout(self, packet_length):  # noqa: N802
        ms = (self.tx_time_per_byte * packet_length + 2.0 * self.latency_timer_ms + self.reply_delay_ms
              + self.timeout_margin_ms)
        self.setPacketTimeoutMillis(ms)

    def setPacketTimeoutMillis(self, msec):  # noqa: N802
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = msec
        self._deadline = time.monotonic() + msec / 1000.0

    def isPacketTimeout(self):  # noqa: N802
        if self.lost or time.monotonic() >= self._deadline:
            self.packet_timeout = 0
            return True
        return False

    def getCurrentTime(self):  # noqa: N802
        return time.monotonic_ns() / 1e6


# ---- USB-serial latency timer (hardware only; sysfs) -------------------------------------------

def latency_timer_path(port: str, sysfs: Path = Path("/sys")) -> Path | None:
    """Where an FTDI adapter's latency timer lives for ``port`` (which may be a by-id symlink)."""
    tty = os.path.basename(os.path.realpath(port))
    candidate = sysfs / "bus" / "usb-serial" / "devices" / tty / "latency_timer"
    return candidate if candidate.exists() else None


def read_latency_timer(port: str, sysfs: Path = Path("/sys")) -> int | None:
    path = latency_timer_path(port, sysfs)
    if path is None:
        return None
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def latency_timer_advice(port: str, value: int) -> str:
    tty = os.path.basename(os.path.realpath(port))
    return (
        f"{port}: USB latency timer is {value} ms, which holds every reply that long; set it to 1 ms. "
        f"Now: echo 1 | sudo tee /sys/bus/usb-serial/devices/{tty}/latency_timer ; "
        "for good: add the udev rule "
        '\'ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1"\' '
        "to /etc/udev/rules.d/99-rig-latency.rules and run: sudo udevadm control --reload && sudo udevadm trigger"
    )

"""Host driver of the handheld gripper: handshake, streaming, clock sync, reconnection.

One reader thread owns the serial port. It decodes frames, maps sample times onto the host
monotonic clock, answers command waiters, sends the periodic clock pings, and when the link
drops (USB unplugged, pty closed) reopens the same path and redoes the handshake, so a
recording session keeps its HandheldGripper object, its queue and its statistics.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import serial

from drivers.errors import RigError
from drivers.gripper import protocol as p
from drivers.gripper.clock import ClockSync

GRAVITY = 9.80665


class GripperError(RigError):
    """A handheld gripper failed in an expected way (not found, silent, refused a command)."""


@dataclass(frozen=True)
class GripperInfo:
    """What the gripper said about itself in its HELLO."""

    firmware: str
    protocol: int
    serial_number: str
    rate_hz: int
    encoder_ok: bool
    imu_ok: bool
    encoder_counts: int
    jaw_closed_raw: int
    jaw_open_rad: float
    accel_full_scale_g: int
    gyro_full_scale_dps: int
    filter_cutoff_hz: float


@dataclass(frozen=True)
class ImuReading:
    accel: tuple[float, float, float]  # m/s^2, sensor frame
    gyro: tuple[float, float, float]   # rad/s, sensor frame


@dataclass(frozen=True)
class GripperSample:
    seq: int
    t_device_us: int
    t_host_ns: int       # device time mapped onto time.monotonic_ns()
    t_received_ns: int   # when the host read it (for latency studies; not the capture time)
    jaw_rad: float       # filtered, relative to closed
    jaw_normalized: float  # 0 closed .. 1 open, clamped
    jaw_raw: int         # encoder counts (0xFFFF on encoder fault)
    trigger: bool
    buttons: int         # bit i = button i pressed (debounced)
    imu: ImuReading
    flags: int

    @property
    def encoder_fault(self) -> bool:
        return bool(self.flags & p.SAMPLE_FLAG_ENCODER_FAULT)

    @property
    def imu_fault(self) -> bool:
        return bool(self.flags & p.SAMPLE_FLAG_IMU_FAULT)

    @property
    def late(self) -> bool:
        """The device missed sampling deadlines just before this sample."""
        return bool(self.flags & p.SAMPLE_FLAG_LATE)

    def button(self, index: int) -> bool:
        return bool(self.buttons >> index & 1)


@dataclass
class GripperConfig:
    port: str
    rate_hz: int = 200
    filter_cutoff_hz: float = 15.0
    led: p.LedMode = p.LedMode.ON
    stream: bool = True
    baudrate: int = 1_000_000  # the STM32 port's UART; ignored by USB CDC and ptys
    queue_size: int = 2048
    ping_interval_s: float = 0.1
    handshake_timeout_s: float = 1.5
    command_timeout_s: float = 1.0
    reconnect: bool = True
    reconnect_timeout_s: float | None = 30.0  # None: keep trying until close()


@dataclass
class GripperStats:
    samples: int = 0
    lost: int = 0            # sequence numbers never received (link drops, corrupt frames)
    dropped: int = 0         # received but pushed out of the full queue before anyone read them
    crc_errors: int = 0
    framing_errors: int = 0
    device_errors: int = 0   # ERROR reports from the device
    reconnects: int = 0
    reboots: int = 0         # reconnects after which the device clock had restarted
    last_device_error: str = ""
    disconnected_s: float = 0.0


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    status: int = -1


class HandheldGripper:
    """A handheld gripper on a serial port (USB CDC, a UART bridge, or the host stand-in's pty).

    >>> with HandheldGripper(GripperConfig("/dev/serial/by-id/usb-rig-gripper")) as g:
    ...     sample = g.read(timeout=1.0)
    """

    def __init__(self, config: GripperConfig | str) -> None:
        self.config = GripperConfig(config) if isinstance(config, str) else config
        self.clock = ClockSync()
        self.stats = GripperStats()
        self.info: GripperInfo | None = None
        self._ser: serial.Serial | None = None
        self._decoder = p.FrameDecoder()
        self._errors_base = (0, 0)
        self._queue: deque[GripperSample] = deque(maxlen=self.config.queue_size)
        self._cond = threading.Condition()
        self._latest: GripperSample | None = None
        self._write_lock = threading.Lock()
        self._cmd_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: RigError | None = None
        self._last_seq: int | None = None
        self._last_device_us = 0
        self._ping_id = 0
        self._next_ping_ns = 0
        self._hello: p.Message | None = None
        self._want_rate = self.config.rate_hz
        self._want_cutoff_dhz = round(self.config.filter_cutoff_hz * 10)
        self._want_led = self.config.led
        self._want_stream = self.config.stream

    # ---- lifecycle ----

    def connect(self) -> HandheldGripper:
        if self._thread is not None:
            return self
        self._ser = self._open()
        try:
            self._handshake(self._ser)
        except BaseException:
            self._ser.close()
            self._ser = None
            raise
        self._connected.set()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gripper-reader", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._ser is not None:
            try:
                if self._connected.is_set():
                    self._write(p.encode(p.MsgType.STREAM, enable=0))
            except (serial.SerialException, OSError):
                pass
            self._ser.close()
            self._ser = None
        self._connected.clear()

    def __enter__(self) -> HandheldGripper:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ---- samples ----

    def read(self, timeout: float | None = None) -> GripperSample | None:
        """Oldest unread sample, waiting up to timeout; None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._failure or self._thread is None, timeout):
                return None
            if self._queue:
                return self._queue.popleft()
        self._raise_failure()
        return None

    def drain(self) -> list[GripperSample]:
        with self._cond:
            out = list(self._queue)
            self._queue.clear()
        return out

    def samples(self, timeout: float = 1.0) -> Iterator[GripperSample]:
        """Iterate samples until close(); raises GripperError if none arrives within timeout."""
        while not self._stop.is_set():
            s = self.read(timeout)
            if s is None:
                if self._stop.is_set():
                    return
                raise GripperError(
                    f"no gripper sample for {timeout:.1f} s on {self.config.port}: is streaming on "
                    f"and the cable seated? (stats: {self.stats})"
                )
            yield s

    @property
    def latest(self) -> GripperSample | None:
        return self._latest

    def normalized_jaw(self) -> float:
        """Latest jaw opening, 0 closed .. 1 open: the leader value a teleop loop maps onto a
        follower gripper's range."""
        s = self._latest
        if s is None:
            self._raise_failure()
            raise GripperError(
                f"the gripper on {self.config.port} has sent no sample yet: call connect() and "
                "start_stream(), then wait for the first sample"
            )
        return s.jaw_normalized

    # ---- commands ----

    def set_rate(self, rate_hz: int) -> None:
        if not 1 <= rate_hz <= 1000:
            raise GripperError(f"gripper rate {rate_hz} Hz is out of range: use 1..1000 Hz")
        self._command(p.MsgType.SET_RATE, rate_hz=rate_hz)
        self._want_rate = rate_hz

    def set_filter(self, cutoff_hz: float) -> None:
        """One-pole low-pass on the jaw; 0 turns it off. Must be below half the sample rate."""
        dhz = round(cutoff_hz * 10)
        self._command(p.MsgType.SET_FILTER, cutoff_dhz=dhz)
        self._want_cutoff_dhz = dhz

    def set_led(self, mode: p.LedMode | int) -> None:
        self._command(p.MsgType.SET_LED, mode=int(mode))
        self._want_led = p.LedMode(mode)

    def start_stream(self) -> None:
        self._command(p.MsgType.STREAM, enable=1)
        self._want_stream = True

    def stop_stream(self) -> None:
        self._command(p.MsgType.STREAM, enable=0)
        self._want_stream = False

    def _command(self, msg_type: p.MsgType, **fields: int) -> None:
        if self._thread is None:
            raise GripperError(f"gripper on {self.config.port} is not connected: call connect() first")
        if not self._connected.wait(self.config.command_timeout_s):
            self._raise_failure()
            raise GripperError(
                f"gripper on {self.config.port} is unplugged; {msg_type.name} not sent. Plug it back in "
                "(the driver reconnects by itself) and retry"
            )
        with self._cmd_lock:
            pending = _Pending()
            self._pending[msg_type] = pending
            try:
                self._write(p.encode(msg_type, **fields))
                if not pending.event.wait(self.config.command_timeout_s):
                    raise GripperError(
                        f"gripper on {self.config.port} did not acknowledge {msg_type.name} within "
                        f"{self.config.command_timeout_s:.1f} s: check the cable, or power-cycle the gripper"
                    )
            finally:
                self._pending.pop(msg_type, None)
        _check_ack(msg_type, pending.status, fields)

    # ---- link ----

    def _open(self) -> serial.Serial:
        try:
            return serial.Serial(self.config.port, self.config.baudrate, timeout=0.02, write_timeout=0.5)
        except (serial.SerialException, OSError) as e:
            raise GripperError(
                f"cannot open gripper port {self.config.port}: {e}. Is it plugged in, and is the path "
                "right (ls /dev/serial/by-id/)? On Linux your user needs the 'dialout' group"
            ) from None

    def _write(self, data: bytes) -> None:
        ser = self._ser
        if ser is None:
            raise serial.SerialException("port closed")
        with self._write_lock:
            ser.write(data)

    def _handshake(self, ser: serial.Serial) -> None:
        """IDENTIFY -> HELLO, version check, sync burst, then the wanted settings. Runs on the
        thread that owns reading (connect() before the reader starts, or the reader itself)."""
        ser.reset_input_buffer()
        # A fresh decoder drops any half frame of the old link; keep its error counts.
        self._errors_base = (self.stats.crc_errors, self.stats.framing_errors)
        self._decoder = p.FrameDecoder()
        # Quiet the link first so the HELLO is not buried in samples at high rates.
        ser.write(p.encode(p.MsgType.STREAM, enable=0))
        deadline = time.monotonic() + self.config.handshake_timeout_s
        hello = None
        foreign: p.Message | None = None
        next_identify = 0.0
        while hello is None:
            now = time.monotonic()
            if now > deadline:
                if foreign is not None:
                    raise _version_error(self.config.port, foreign)
                raise GripperError(
                    f"no HELLO from a gripper on {self.config.port} within "
                    f"{self.config.handshake_timeout_s:.1f} s: is this the gripper's port, is its "
                    "firmware running, and is the baud rate (1 Mbaud on the STM32 port) right?"
                )
            if now >= next_identify:
                ser.write(p.encode(p.MsgType.IDENTIFY))
                next_identify = now + 0.25
            for msg in self._read_messages(ser):
                if msg.version != p.PROTOCOL_VERSION:
                    if msg.type is p.MsgType.HELLO:
                        raise _version_error(self.config.port, msg)
                    foreign = msg  # keep waiting: a HELLO would name the firmware version
                elif msg.type is p.MsgType.HELLO:
                    hello = msg
        self._adopt_hello(hello)
        # Sync burst: enough quick exchanges for a usable offset before the first sample.
        for _ in range(8):
            self._send_ping(ser)
            t_end = time.monotonic() + 0.01
            while time.monotonic() < t_end:
                self._read_messages(ser)
        if self.clock.fit is None:
            raise GripperError(f"gripper on {self.config.port} answered HELLO but no clock ping; "
                               "update its firmware")
        for msg_type, fields in (
            (p.MsgType.SET_RATE, {"rate_hz": self._want_rate}),
            (p.MsgType.SET_FILTER, {"cutoff_dhz": self._want_cutoff_dhz}),
            (p.MsgType.SET_LED, {"mode": int(self._want_led)}),
            (p.MsgType.STREAM, {"enable": int(self._want_stream)}),
        ):
            status = self._sync_command(ser, msg_type, fields)
            _check_ack(msg_type, status, fields)

    def _sync_command(self, ser: serial.Serial, msg_type: p.MsgType, fields: dict[str, int]) -> int:
        pending = _Pending()
        self._pending[msg_type] = pending
        try:
            ser.write(p.encode(msg_type, **fields))
            deadline = time.monotonic() + self.config.command_timeout_s
            while not pending.event.is_set():
                if time.monotonic() > deadline:
                    raise GripperError(
                        f"gripper on {self.config.port} did not acknowledge {msg_type.name} during the "
                        "handshake: power-cycle it and reconnect"
                    )
                self._read_messages(ser)
        finally:
            self._pending.pop(msg_type, None)
        return pending.status

    def _adopt_hello(self, hello: p.Message) -> None:
        h = hello.fields
        if self.info is not None:
            same_device = self.info.serial_number == f"{h['serial']:08x}"
            if not same_device or h["device_us"] < self._last_device_us:
                # New clock epoch (reboot or another unit): old sync and sequence are meaningless.
                self.clock.reset()
                self._last_seq = None
                self.stats.reboots += 1
        self._last_device_us = h["device_us"]
        self.info = GripperInfo(
            firmware=f"{h['fw_major']}.{h['fw_minor']}.{h['fw_patch']}",
            protocol=h["proto"],
            serial_number=f"{h['serial']:08x}",
            rate_hz=h["rate_hz"],
            encoder_ok=bool(h["sensors"] & 0x01),
            imu_ok=bool(h["sensors"] & 0x02),
            encoder_counts=h["enc_counts"],
            jaw_closed_raw=h["jaw_closed_raw"],
            jaw_open_rad=h["jaw_open_urad"] * 1e-6,
            accel_full_scale_g=h["accel_fs_g"],
            gyro_full_scale_dps=h["gyro_fs_dps"],
            filter_cutoff_hz=h["cutoff_dhz"] / 10.0,
        )
        self._hello = hello

    def _read_messages(self, ser: serial.Serial) -> list[p.Message]:
        data = ser.read(max(1, ser.in_waiting))
        t_rx = time.monotonic_ns()
        if not data:
            return []
        msgs = self._decoder.feed(data)
        crc_base, framing_base = self._errors_base
        self.stats.crc_errors = crc_base + self._decoder.crc_errors
        self.stats.framing_errors = framing_base + self._decoder.framing_errors + self._decoder.bad_payloads
        for msg in msgs:
            self._dispatch(msg, t_rx)
        return msgs

    def _send_ping(self, ser: serial.Serial) -> None:
        self._ping_id = (self._ping_id + 1) & 0xFFFFFFFF
        t = time.monotonic_ns()
        with self._write_lock:
            ser.write(p.encode(p.MsgType.PING, id=self._ping_id, host_ns=t))
        self._next_ping_ns = t + int(self.config.ping_interval_s * 1e9)

    def _dispatch(self, msg: p.Message, t_rx: int) -> None:
        if msg.version != p.PROTOCOL_VERSION:
            return
        f = msg.fields
        if msg.type is p.MsgType.SAMPLE:
            self._on_sample(f, t_rx)
        elif msg.type is p.MsgType.PONG:
            self.clock.add(f["host_ns"], t_rx, f["rx_us"])
            self._last_device_us = max(self._last_device_us, f["tx_us"])
        elif msg.type is p.MsgType.ACK:
            pending = self._pending.get(f["cmd"])
            if pending is not None:
                pending.status = f["status"]
                pending.event.set()
        elif msg.type is p.MsgType.ERROR:
            self.stats.device_errors += 1
            try:
                name = p.DeviceErrorCode(f["code"]).name
            except ValueError:
                name = f"code {f['code']}"
            self.stats.last_device_error = f"{name} (detail {f['detail']})"
        elif msg.type is p.MsgType.HELLO:
            self._adopt_hello(msg)

    def _on_sample(self, f: dict[str, int], t_rx: int) -> None:
        info = self.info
        seq = f["seq"]
        if self._last_seq is not None:
            gap = (seq - self._last_seq - 1) & 0xFFFFFFFF
            if gap < 0x80000000:  # forward jump: those numbers were lost on the way
                self.stats.lost += gap
        self._last_seq = seq
        self._last_device_us = max(self._last_device_us, f["t_us"])
        t_host = self.clock.to_host_ns(f["t_us"])
        jaw = f["jaw_urad"] * 1e-6
        open_rad = info.jaw_open_rad if info and info.jaw_open_rad else math.pi / 2
        a_scale = (info.accel_full_scale_g if info else 8) / 32768.0 * GRAVITY
        g_scale = math.radians(info.gyro_full_scale_dps if info else 2000) / 32768.0
        sample = GripperSample(
            seq=seq,
            t_device_us=f["t_us"],
            t_host_ns=t_host if t_host is not None else t_rx,
            t_received_ns=t_rx,
            jaw_rad=jaw,
            jaw_normalized=min(1.0, max(0.0, jaw / open_rad)),
            jaw_raw=f["jaw_raw"],
            trigger=bool(f["trigger"]),
            buttons=f["buttons"],
            imu=ImuReading(
                accel=(f["ax"] * a_scale, f["ay"] * a_scale, f["az"] * a_scale),
                gyro=(f["gx"] * g_scale, f["gy"] * g_scale, f["gz"] * g_scale),
            ),
            flags=f["flags"],
        )
        self.stats.samples += 1
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.stats.dropped += 1
            self._queue.append(sample)
            self._latest = sample
            self._cond.notify_all()

    # ---- reader thread ----

    def _run(self) -> None:
        while not self._stop.is_set():
            ser = self._ser
            try:
                if ser is None:
                    raise serial.SerialException("port closed")
                self._read_messages(ser)
                if time.monotonic_ns() >= self._next_ping_ns:
                    self._send_ping(ser)
            except (serial.SerialException, OSError):
                if self._stop.is_set():
                    break
                self._connected.clear()
                if not self.config.reconnect or not self._reconnect():
                    break
        with self._cond:
            self._cond.notify_all()

    def _reconnect(self) -> bool:
        t0 = time.monotonic()
        if self._ser is not None:
            try:
                self._ser.close()
            except (serial.SerialException, OSError):
                pass
            self._ser = None
        limit = self.config.reconnect_timeout_s
        last_error: Exception | None = None
        while not self._stop.is_set():
            if limit is not None and time.monotonic() - t0 > limit:
                self._fail(GripperError(
                    f"gripper on {self.config.port} unplugged and not back within {limit:.0f} s "
                    f"(last error: {last_error}). Plug it in and reconnect"
                ))
                return False
            try:
                ser = serial.Serial(self.config.port, self.config.baudrate, timeout=0.02, write_timeout=0.5)
            except (serial.SerialException, OSError) as e:
                last_error = e
                time.sleep(0.05)
                continue
            try:
                self._ser = ser
                self._handshake(ser)
            except p.ProtocolVersionError as e:
                ser.close()
                self._ser = None
                self._fail(e)
                return False
            except (GripperError, serial.SerialException, OSError) as e:
                last_error = e
                ser.close()
                self._ser = None
                time.sleep(0.05)
                continue
            self.stats.reconnects += 1
            self.stats.disconnected_s += time.monotonic() - t0
            self._connected.set()
            return True
        return False

    def _fail(self, error: RigError) -> None:
        self._failure = error
        with self._cond:
            self._cond.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _check_ack(msg_type: p.MsgType, status: int, fields: dict[str, int]) -> None:
    if status == p.AckStatus.OK:
        return
    if status == p.AckStatus.BAD_ARG:
        hint = {
            p.MsgType.SET_RATE: "rates are 1..1000 Hz",
            p.MsgType.SET_FILTER: "the cutoff must be below half the sample rate",
            p.MsgType.SET_LED: "LED modes are 0..3",
        }.get(msg_type, "see firmware/PROTOCOL.md")
        raise GripperError(f"gripper refused {msg_type.name} {fields}: {hint}")
    raise GripperError(f"gripper does not support {msg_type.name} (status {status}): update its firmware")


def _version_error(port: str, msg: p.Message) -> p.ProtocolVersionError:
    if msg.type is p.MsgType.HELLO and "proto" in msg.fields:
        fw = "{fw_major}.{fw_minor}.{fw_patch}".format(**msg.fields)
        return p.ProtocolVersionError(
            f"gripper on {port} runs firmware {fw} speaking protocol v{msg.fields['proto']}, but this "
            f"driver speaks v{p.PROTOCOL_VERSION}: flash the firmware from this checkout "
            "(make -C firmware arm, see firmware/README.md) or install the matching rig version"
        )
    return p.ProtocolVersionError(
        f"gripper on {port} answered with protocol v{msg.version} frames, but this driver speaks "
        f"v{p.PROTOCOL_VERSION}: flash the firmware from this checkout (see firmware/README.md)"
    )


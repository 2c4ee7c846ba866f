"""The handheld gripper in a rig session: its stream into takes, and its button as the record key.

Samples arrive at the device rate (200 Hz) already on the host's monotonic clock (the driver's
clock sync); they are recorded as their own stream beside the tick stream, with the device's
microsecond timestamps stored next to the host time.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rig.config import GripperConfig

GRIPPER_FIELDS = {
    "seq": ((), "i8"), "t_device_us": ((), "i8"), "t_received_ns": ((), "i8"),
    "jaw_rad": ((), "f4"), "jaw": ((), "f4"), "trigger": ((), "u1"), "buttons": ((), "u1"),
    "accel": ((3,), "f4"), "gyro": ((3,), "f4"), "flags": ((), "u2"),
}


def check_gripper_port(cfg: GripperConfig, source: str = "the config") -> None:
    """A hardware gripper's port must exist before the rig starts: one clear line if it does not."""
    if cfg.is_standin or os.path.exists(cfg.port):
        return
    from drivers.gripper.driver import GripperError

    raise GripperError(f"no gripper at {cfg.port}: plug it in (`ls /dev/serial/by-id/` lists what is connected), "
                       f"or set [gripper] port in {source}; `--config sim-handheld` runs without one")


def open_gripper(cfg: GripperConfig, standin_args: tuple[str, ...] = ()):
    """Connect to the gripper (starting the firmware's host build first for port = "standin",
    with ``standin_args`` added to the config's: e.g. the simulated home's IMU trace)."""
    from drivers.gripper.driver import GripperConfig as DriverConfig
    from drivers.gripper.driver import HandheldGripper

    standin = None
    port = cfg.port
    if cfg.is_standin:
        from drivers.gripper.standin import HostGripperStandIn

        standin = HostGripperStandIn(rate_hz=cfg.rate_hz, extra_args=(*cfg.standin_args, *standin_args)).start()
        port = standin.port
    gripper = HandheldGripper(DriverConfig(port, rate_hz=cfg.rate_hz))
    try:
        gripper.connect()
    except BaseException:
        if standin is not None:
            standin.stop()
        raise
    return gripper, standin


class GripperSource:
    """Turns the driver's samples into stream rows, and the record button into take toggles.

    ``poll()`` is called by the take pump a few dozen times a second; it is the only consumer of
    the driver's sample queue.
    """

    name = "gripper"

    def __init__(self, gripper, cfg: GripperConfig, on_toggle: Callable[[], None] | None = None):
        self.gripper = gripper
        self.cfg = cfg
        self.rate_hz = float(cfg.rate_hz)
        self.fields = GRIPPER_FIELDS
        self.on_toggle = on_toggle
        self._pressed = False
        self.samples = 0
        self._counts: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)  # (monotonic s, samples)

    def _is_pressed(self, sample) -> bool:
        b = self.cfg.record_button
        return bool(sample.trigger) if b == -1 else sample.button(b)

    def poll(self) -> list[tuple[int, dict]]:
        rows = []
        drained = self.gripper.drain()
        self.samples += len(drained)
        self._counts.append((time.monotonic(), self.samples))
        for s in drained:
            pressed = self._is_pressed(s) if self.cfg.record_button is not None else False
            if pressed and not self._pressed and self.on_toggle is not None:
                self.on_toggle()  # a press (not a hold) starts or stops a take
            self._pressed = pressed
            imu = s.imu
            rows.append((s.t_host_ns, {
                "seq": s.seq, "t_device_us": s.t_device_us, "t_received_ns": s.t_received_ns,
                "jaw_rad": s.jaw_rad, "jaw": s.jaw_normalized, "trigger": int(s.trigger), "buttons": s.buttons,
                "accel": np.asarray(imu.accel, dtype=np.float32), "gyro": np.asarray(imu.gyro, dtype=np.float32),
                "flags": s.flags,
            }))
        return rows

    def measured_hz(self, window_s: float = 1.0) -> float:
        """Samples per second over about the last second, as the pump received them."""
        counts = list(self._counts)
        if len(counts) < 2:
            return 0.0
        t1, n1 = counts[-1]
        t0, n0 = next(((t, n) for t, n in counts if t1 - t <= window_s), counts[0])
        if t1 - t0 <= 0:
            t0, n0 = counts[-2]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass
class GripperView:
    """What the collector's app shows of the gripper (plain values: it crosses a process pipe)."""

    connected: bool
    jaw: float | None  # 0 closed .. 1 open
    jaw_rad: float | None
    trigger: bool
    buttons: int  # bit i = button i pressed
    record_button: int | None  # -1: the trigger
    accel: tuple[float, float, float] | None  # m/s^2
    gyro: tuple[float, float, float] | None  # rad/s
    rate_hz: float  # measured
    nominal_hz: float
    offset_s: float | None  # host clock minus device clock, from the clock sync
    drift_ppm: float | None  # device clock against the host's (positive: device fast)
    syncs: int  # clock-sync exchanges in the fit's window
    lost: int
    reconnects: int
    faults: str  # "" or e.g. "encoder fault"


def gripper_view(gripper, cfg: GripperConfig, source: GripperSource | None) -> GripperView:
    s = gripper.latest
    fit = gripper.clock.fit
    faults = [] if s is None else [w for w, on in (("encoder fault", s.encoder_fault), ("IMU fault", s.imu_fault))
                                   if on]
    return GripperView(
        connected=gripper.connected,
        jaw=None if s is None else float(s.jaw_normalized),
        jaw_rad=None if s is None else float(s.jaw_rad),
        trigger=bool(s.trigger) if s is not None else False,
        buttons=int(s.buttons) if s is not None else 0,
        record_button=cfg.record_button,
        accel=None if s is None else tuple(float(v) for v in s.imu.accel),
        gyro=None if s is None else tuple(float(v) for v in s.imu.gyro),
        rate_hz=source.measured_hz() if source is not None else 0.0,
        nominal_hz=float(cfg.rate_hz),
        offset_s=None if fit is None else (fit.host_ref_ns - fit.device_ref_us * 1000) / 1e9,
        drift_ppm=None if fit is None else float(fit.drift_ppm),
        syncs=gripper.clock.exchanges,
        lost=gripper.stats.lost,
        reconnects=gripper.stats.reconnects,
        faults=", ".join(faults),
    )

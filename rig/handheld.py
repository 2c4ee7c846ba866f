"""The handheld gripper in a rig session: its stream into takes, and its button as the record key.

Samples arrive at the device rate (200 Hz) already on the host's monotonic clock (the driver's
clock sync); they are recorded as their own stream beside the tick stream, with the device's
microsecond timestamps stored next to the host time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rig.config import GripperConfig

GRIPPER_FIELDS = {
    "seq": ((), "i8"), "t_device_us": ((), "i8"), "t_received_ns": ((), "i8"),
    "jaw_rad": ((), "f4"), "jaw": ((), "f4"), "trigger": ((), "u1"), "buttons": ((), "u1"),
    "accel": ((3,), "f4"), "gyro": ((3,), "f4"), "flags": ((), "u2"),
}


def open_gripper(cfg: GripperConfig):
    """Connect to the gripper (starting the firmware's host build first for port = "standin")."""
    from drivers.gripper.driver import GripperConfig as DriverConfig
    from drivers.gripper.driver import HandheldGripper

    standin = None
    port = cfg.port
    if cfg.is_standin:
        from drivers.gripper.standin import HostGripperStandIn

        standin = HostGripperStandIn(rate_hz=cfg.rate_hz, extra_args=cfg.standin_args).start()
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

    def _is_pressed(self, sample) -> bool:
        b = self.cfg.record_button
        return bool(sample.trigger) if b == -1 else sample.button(b)

    def poll(self) -> list[tuple[int, dict]]:
        rows = []
        for s in self.gripper.drain():
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

"""The simulated home's IMU through the firmware's host build and the serial protocol.

The world's gyro/accelerometer readings (and the jaw) are written as a trace the host firmware
plays from its ``trace start`` command (``--imu-trace``): its IMU model returns them, quantised to
the sensor's full scale with its noise, and the firmware streams them at 200 Hz over the pty like
any handheld sample. The driver reads them with its clock sync, so each sample arrives on the
rig's clock exactly as a real gripper's would; this runs in real time.

The take's clock: trace time 0 is where the firmware reports it started (``trace_start_us`` on
the device clock), placed on the rig's clock by where the stand-in's device clock truly lies
(the camera frames of the simulated home are stamped on that same clock). Whatever the clock
sync gets wrong therefore shows up as an IMU-camera time offset, as it would on a real rig.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def write_trace(path: Path, take) -> None:
    rows = np.column_stack([take.t_imu, take.gyro, take.accel, take.jaw])
    np.savetxt(path, rows, fmt="%.9g")


def imu_through_firmware(take, rate_hz: int = 200, tail_s: float = 0.3) -> dict[str, np.ndarray]:
    """Play ``take``'s IMU through the firmware and the driver; returns {"t_s", "gyro", "accel", ...}
    on the take's clock (seconds), as the driver delivered them."""
    from drivers.gripper.driver import GripperConfig, HandheldGripper
    from drivers.gripper.standin import HostGripperStandIn

    with tempfile.TemporaryDirectory(prefix="rig-imu-trace-") as tmp:
        trace = Path(tmp) / "imu.txt"
        write_trace(trace, take)
        standin = HostGripperStandIn(rate_hz=rate_hz, extra_args=("--imu-trace", str(trace))).start()
        gripper = HandheldGripper(GripperConfig(standin.port, rate_hz=rate_hz))
        try:
            gripper.connect()
            time.sleep(0.5)  # let the clock sync settle on a few samples
            gripper.drain()
            start_us = standin.trace_start()
            h0 = standin.true_host_ns(start_us)
            samples = []
            end = time.monotonic() + float(take.t_imu[-1]) + tail_s
            while time.monotonic() < end:
                time.sleep(0.05)
                samples.extend(gripper.drain())
            samples.extend(gripper.drain())
        finally:
            gripper.close()
            standin.stop()
    t_host = np.array([s.t_host_ns for s in samples], np.int64)
    t_dev = np.array([s.t_device_us for s in samples], np.int64)
    keep = (t_dev >= start_us) & (t_dev <= start_us + int(take.t_imu[-1] * 1e6))
    return {"t_s": (t_host[keep] - h0) / 1e9,
            "t_true_s": (t_dev[keep] - start_us) / 1e6,
            "gyro": np.array([s.imu.gyro for s in samples], np.float64)[keep],
            "accel": np.array([s.imu.accel for s in samples], np.float64)[keep],
            "jaw": np.array([s.jaw_normalized for s in samples], np.float64)[keep]}


def firmware_noise(take, seed: int = 0) -> dict[str, np.ndarray]:
    """The world's IMU with the firmware's noise model (8 LSB white noise) and a small constant
    bias, without running the firmware: for quick, repeatable runs."""
    rng = np.random.default_rng([seed, 9])
    g_lsb = np.radians(2000) / 32768
    a_lsb = 8 * 9.80665 / 32768
    return {"t_s": take.t_imu,
            "gyro": take.gyro + rng.normal(0, 8 * g_lsb, take.gyro.shape) + rng.normal(0, 0.003, 3),
            "accel": take.accel + rng.normal(0, 8 * a_lsb, take.accel.shape) + rng.normal(0, 0.03, 3)}

"""The simulated home's IMU travels through the firmware's host build and the serial driver."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("mujoco")
if shutil.which("make") is None or shutil.which("cc") is None:
    pytest.skip("the host firmware needs make and a C compiler: apt-get install build-essential",
                allow_module_level=True)

from rig.pose.firmware_imu import imu_through_firmware  # noqa: E402
from rig.sim.home import simulate  # noqa: E402


def test_world_imu_arrives_through_the_firmware_on_the_rigs_clock():
    take = simulate(seed=2, duration=2.0, render=False)
    imu = imu_through_firmware(take)
    assert len(imu["t_s"]) > 150  # 200 Hz for 2 s, less what a loaded machine drops
    # the driver's clock sync puts each sample where the device really took it
    assert np.median(np.abs(imu["t_s"] - imu["t_true_s"])) < 0.002
    truth = {k: np.column_stack([np.interp(imu["t_true_s"], take.t_imu, getattr(take, k)[:, i]) for i in range(3)])
             for k in ("gyro", "accel")}
    # the firmware's quantisation and noise (8 LSB: ~0.009 rad/s, ~0.02 m/s^2), nothing more
    assert np.std(imu["gyro"] - truth["gyro"]) < 0.015
    assert np.std(imu["accel"] - truth["accel"]) < 0.04
    assert np.abs(np.mean(imu["accel"] - truth["accel"], axis=0)).max() < 0.01
    # the hand's motion, not the stand-in's own jaw-driven wobble
    assert np.ptp(truth["gyro"]) > 0.1 and abs(np.ptp(imu["gyro"]) / np.ptp(truth["gyro"]) - 1) < 0.2

"""open_camera: config tables to cameras, and the errors a person sees for bad tables."""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

from drivers.cameras import CameraSpec, open_camera
from drivers.cameras.factory import CameraConfigError
from drivers.cameras.opencv import OpenCVCamera
from drivers.cameras.realsense import RealSenseCamera
from drivers.cameras.shm import FrameRingWriter
from drivers.cameras.sim import SimCamera
from drivers.cameras.synthetic import SyntheticCamera
from drivers.errors import RigError


def test_each_kind_builds_its_camera_with_the_table_values():
    cam = open_camera({"name": "high", "kind": "opencv", "device": "/dev/v4l/by-id/usb-X-video-index0",
                       "width": 1280, "height": 720, "fps": 60, "fourcc": "yuyv"})
    assert isinstance(cam, OpenCVCamera)
    assert (cam.name, cam.width, cam.height, cam.fps, cam.fourcc) == ("high", 1280, 720, 60.0, "YUYV")
    assert not cam.is_file and not cam.running

    cam = open_camera({"name": "wrist", "kind": "realsense", "serial": "123", "depth": True})
    assert isinstance(cam, RealSenseCamera) and cam.serial == "123" and cam.depth

    cam = open_camera({"name": "low", "kind": "sim", "delay_s": 0.05})
    assert isinstance(cam, SimCamera) and cam.ring == "rig-sim-low" and cam.delay_s == 0.05

    cam = open_camera(CameraSpec(name="t", kind="synthetic", width=64, height=48, fps=50, jpeg=True,
                                 freeze_periods=3, options={"jpeg_cycle": 5}))
    assert isinstance(cam, SyntheticCamera) and cam.jpeg and cam.jpeg_cycle == 5 and cam.freeze_periods == 3


def test_synthetic_and_sim_tables_really_stream():
    with open_camera({"name": "t", "kind": "synthetic", "width": 64, "height": 48, "fps": 100}) as cam:
        assert cam.subscribe().get(timeout=10).data.shape == (48, 64, 3)
    ring = f"rig-test-factory-{uuid.uuid4().hex[:8]}"
    with FrameRingWriter(ring, 64, 48) as world:
        cam = open_camera({"name": "s", "kind": "sim", "ring": ring, "width": 64, "height": 48})
        q = cam.subscribe()
        with cam:
            world.write(np.full((48, 64, 3), 3, np.uint8), 1, 42)
            assert q.get(timeout=10).index == 42


def test_unknown_kind_names_the_valid_ones():
    with pytest.raises(RigError, match=r"unknown kind 'webcam'; valid kinds: opencv, realsense, sim, synthetic"):
        open_camera({"name": "high", "kind": "webcam"})


def test_bad_tables_are_explained():
    with pytest.raises(CameraConfigError, match=r"camera 'high': unknown key\(s\) fsp; valid keys: .*fps"):
        open_camera({"name": "high", "kind": "synthetic", "fsp": 30})
    with pytest.raises(CameraConfigError, match="needs a 'kind'"):
        open_camera({"name": "high"})
    with pytest.raises(CameraConfigError, match=r"needs device = .*by-id"):
        open_camera({"name": "high", "kind": "opencv"})
    with pytest.raises(CameraConfigError, match="needs serial"):
        open_camera({"name": "high", "kind": "realsense"})


def test_importing_cameras_loads_no_heavy_backend():
    code = ("import sys, drivers.cameras\n"
            "print(sorted(m for m in ('cv2', 'pyrealsense2', 'torch', 'mujoco') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

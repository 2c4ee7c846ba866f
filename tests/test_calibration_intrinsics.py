"""Camera intrinsics: ChArUco on rendered board images with known intrinsics; RealSense factory values."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.apply import episode_intrinsics
from calibration.arm import CalibrationError
from calibration.intrinsics import (
    MIN_VIEWS,
    BoardRenderer,
    CameraIntrinsics,
    CharucoCalibrator,
    CharucoTarget,
    board_poses,
    realsense_intrinsics,
)
from calibration.store import camera_device, load_camera, save_camera_section

SIZE = (640, 480)
K = np.array([[600.0, 0, 322.5], [0, 590.0, 236.0], [0, 0, 1]])
DIST = np.array([-0.12, 0.05, 0.001, -0.0005, 0.0])


@pytest.fixture(scope="module")
def renderer():
    return BoardRenderer(CharucoTarget(), K, DIST, SIZE)


def test_charuco_recovers_known_intrinsics(renderer):
    """Stated tolerance: fx, fy within 1 %; cx, cy within 2 px; RMS reprojection under 0.5 px."""
    target = CharucoTarget()
    cal = CharucoCalibrator(target, SIZE)
    reports = [cal.add_view(renderer.render(r, t, seed=i)) for i, (r, t) in enumerate(board_poses(target, K, SIZE, 12))]
    assert all(r.accepted for r in reports), [r.reason for r in reports]
    assert reports[0].coverage < reports[-1].coverage >= 0.8
    intr, errs = cal.calibrate()
    assert intr.fx == pytest.approx(600.0, rel=0.01) and intr.fy == pytest.approx(590.0, rel=0.01)
    assert abs(intr.cx - 322.5) < 2.0 and abs(intr.cy - 236.0) < 2.0
    assert intr.rms_px < 0.5 and len(errs) == 12 and errs.max() < 0.6
    assert intr.dist[0] == pytest.approx(-0.12, abs=0.03)  # the dominant radial term
    # The result projects a board corner where the true camera does, across the image.
    import cv2
    pts = np.array([[0.05, 0.05, 0.0], [0.2, 0.15, 0.0]])
    rvec, tvec = np.array([0.2, -0.3, 0.1]), np.array([-0.1, -0.05, 0.5])
    true_px, _ = cv2.projectPoints(pts, rvec, tvec, K, DIST)
    est_px, _ = cv2.projectPoints(pts, rvec, tvec, intr.camera_matrix(), np.array(intr.dist))
    assert np.abs(true_px - est_px).max() < 1.5


def test_feedback_rejects_bad_views_and_too_few(renderer):
    target = CharucoTarget()
    cal = CharucoCalibrator(target, SIZE)
    blank = np.full((SIZE[1], SIZE[0]), 90, np.uint8)
    r = cal.add_view(blank)
    assert not r.accepted and "0 corners seen" in r.reason
    rvec, tvec = board_poses(target, K, SIZE, 1)[0]
    assert cal.add_view(renderer.render(rvec, tvec, seed=1)).accepted
    again = cal.add_view(renderer.render(rvec, tvec, seed=2))  # the same pose, other noise
    assert not again.accepted and "same pose" in again.reason
    assert "move the board toward" in again.hint
    with pytest.raises(CalibrationError, match=f"1 view\\(s\\) accepted; need at least {MIN_VIEWS}"):
        cal.calibrate()
    with pytest.raises(CalibrationError, match="image is 320x240"):
        cal.add_view(np.zeros((240, 320), np.uint8))


def test_intrinsics_stored_and_written_into_episode_metadata(tmp_path, monkeypatch):
    from rig.config import parse_config

    monkeypatch.setenv("RIG_CALIBRATION_DIR", str(tmp_path))
    cfg = parse_config({"name": "cams", "arms": [], "cameras": [
        {"name": "high", "kind": "opencv", "device": "/dev/v4l/by-id/usb-cam-video-index0"},
        {"name": "low", "kind": "synthetic"}]}, "test")
    intr = CameraIntrinsics(640, 480, 600.1, 590.2, 321.0, 237.0, (-0.1, 0.02, 0.0, 0.0, 0.0), rms_px=0.21, views=12)
    spec = cfg.cameras[0].spec()
    path = save_camera_section("high", camera_device(spec), "intrinsics", intr.to_dict())
    assert path == tmp_path / "cameras" / "high.toml"
    stored = load_camera("high")
    assert stored["version"] == 1 and stored["device"] == "opencv:/dev/v4l/by-id/usb-cam-video-index0"
    meta = episode_intrinsics(cfg)
    assert list(meta) == ["high"]
    assert CameraIntrinsics.from_dict(meta["high"]).fx == 600.1
    # The same name on another device: its old result is not applied.
    raw = dict(cfg.raw)
    raw["cameras"] = [{"name": "high", "kind": "opencv", "device": "/dev/video7"}]
    assert episode_intrinsics(parse_config(raw, "test")) == {}

    # And it lands in an episode's metadata through the recorder.
    from recorder import Dataset
    ds = Dataset.create(tmp_path / "ds.zarr")
    w = ds.new_episode(task="t", intrinsics=meta)
    assert w is not None
    assert ds.episode(0).attrs["camera_intrinsics"]["high"]["fy"] == pytest.approx(590.2)


@pytest.mark.system("libusb")
def test_realsense_factory_intrinsics_from_the_device():
    import pyrealsense2 as rs

    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, "SW-INTR")
    sensor = dev.add_sensor("Color")
    for w, h, fx in ((640, 480, 615.3), (1280, 720, 912.8)):
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, fx, fx + 0.7, w / 2 + 1.5, h / 2 - 2.25
        intr.model = rs.distortion.inverse_brown_conrady
        intr.coeffs = [0.01, -0.02, 0.001, 0.002, 0.003]
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
            rs.stream.color, 0, w, w, h, 30, 3, rs.format.rgb8)
        vs.intrinsics = intr
        sensor.add_video_stream(vs)
    got = realsense_intrinsics("SW-INTR", 1280, 720, 30, device=dev)
    assert (got.width, got.height, got.source) == (1280, 720, "realsense-factory")
    assert got.fx == pytest.approx(912.8, abs=1e-3) and got.fy == pytest.approx(913.5, abs=1e-3)
    assert got.cx == pytest.approx(641.5) and got.cy == pytest.approx(357.75)
    assert got.model == "inverse_brown_conrady" and got.dist[1] == pytest.approx(-0.02)
    with pytest.raises(CalibrationError, match=r"no colour mode 800x600@30; it offers 1280x720@30, 640x480@30"):
        realsense_intrinsics("SW-INTR", 800, 600, 30, device=dev)


SIM_PROBE = """
import mujoco, numpy as np
from rig.sim.scene import load_model
from rig.sim.scene import camera_intrinsics as sim_camera_intrinsics
m = load_model("transfer_cube"); d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
W, H = 320, 240
r = mujoco.Renderer(m, H, W)
r.update_scene(d, camera="top")
img = r.render()
intr = sim_camera_intrinsics("transfer_cube", "top", W, H)
ci = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "top")
R, p = d.cam_xmat[ci].reshape(3, 3), d.cam_xpos[ci]
xc = R.T @ (d.xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "box")] - p)  # camera looks down -z, y up
u, v = intr.cx + intr.fx * xc[0] / -xc[2], intr.cy - intr.fy * xc[1] / -xc[2]
ys, xs = np.nonzero((img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80))  # the red box
print(u, v, xs.mean(), ys.mean(), len(xs))
"""


@pytest.mark.system("render")  # the simulated cameras
def test_sim_camera_intrinsics_project_the_box_where_it_is_rendered():
    """The simulated camera's pinhole (from the scene's field of view) puts the red box's centre
    within 2 px of where MuJoCo draws it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("mujoco")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("RIG_RENDER_GL", os.environ.get("MUJOCO_GL", "egl"))}
    out = subprocess.run([sys.executable, "-c", SIM_PROBE], capture_output=True, text=True, cwd=root, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    u, v, x, y, n = map(float, out.stdout.split())
    assert n > 20 and abs(u - x) < 2.0 and abs(v - y) < 2.0

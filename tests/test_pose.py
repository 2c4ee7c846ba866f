"""The handheld gripper's pose (issue 18): board views, fusion with the IMU, flags, the episode stream."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests import system

# The home renders in this process, and MuJoCo takes its OpenGL library when first imported: name it
# only where rendering works (a machine without libEGL must still collect; those tests skip).
if system.missing("render") is None:
    os.environ.setdefault("MUJOCO_GL", os.environ.get("RIG_RENDER_GL", "egl"))
pytestmark = pytest.mark.system("render")
pytest.importorskip("mujoco")
cv2 = pytest.importorskip("cv2")
from scipy.spatial.transform import Rotation  # noqa: E402

from calibration.board import BoardError, PoseBoard, check_board, save_board, write_print  # noqa: E402
from rig.pose import pipeline as pl  # noqa: E402
from rig.pose.fusion import SOURCE_FUSED, SOURCE_NONE, SOURCE_VISION  # noqa: E402
from rig.pose.vision import VisualPoses, estimate_all  # noqa: E402
from rig.sim.home import simulate  # noqa: E402


@pytest.fixture(scope="module")
def motion_take():
    """12 s of the scripted hand with the world's IMU, no frames."""
    return simulate(seed=3, duration=12.0, render=False)


def _rot_err_deg(q1, q2):
    return np.degrees((Rotation.from_quat(q1, scalar_first=True).inv() * Rotation.from_quat(q2, scalar_first=True))
                      .magnitude())


def synthetic_views(take, fps=30.0, drop=(), seed=0, scale=1.0):
    """Visual poses from the ground truth with the noise the rendered board gives (~1 mm, 0.1 deg),
    none where ``drop`` (list of (start, stop) s) says the board is out of view."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, take.t_imu[-1], 1 / fps)
    pos, quat = take.gt_at(t)
    pos = pos * scale + rng.normal(0, 0.001, pos.shape)
    quat = (Rotation.from_quat(quat, scalar_first=True)
            * Rotation.from_rotvec(rng.normal(0, np.radians(0.1), (len(t), 3)))).as_quat(scalar_first=True)
    ok = np.ones(len(t), bool)
    for a, b in drop:
        ok &= ~((t >= a) & (t < b))
    pos[~ok], quat[~ok] = np.nan, np.nan
    return t, VisualPoses((t * 1e9).astype(np.int64), pos, quat, np.where(ok, 0.3, np.nan),
                          np.where(ok, 20, 0).astype(np.int32), np.zeros(len(t), np.int32))


def noisy_imu(take, seed=0):
    rng = np.random.default_rng([seed, 1])
    return (take.gyro + rng.normal(0, 0.0085, take.gyro.shape) + [0.003, -0.002, 0.001],
            take.accel + rng.normal(0, 0.02, take.accel.shape) + [0.02, -0.01, 0.03])


def run(take, views, t, gyro=None, accel=None, t_imu=None):
    g, a = noisy_imu(take)
    return pl.compute_pose(take.t_imu if t_imu is None else t_imu, g if gyro is None else gyro,
                           a if accel is None else accel, t, None, take.intrinsics(), take.board, take.p_cam_imu,
                           vision=views)


# ---- the board in rendered frames ------------------------------------------------------------------

def test_board_pose_from_rendered_frames_matches_ground_truth():
    take = simulate(seed=0, duration=3.0, fps=8.0)  # 24 rendered wrist frames
    v = estimate_all(take.board, take.intrinsics(), take.frames, (take.t_frames * 1e9).astype(np.int64))
    assert v.ok.sum() >= 15, v.corners
    gp, gq = take.gt_at(take.t_frames)
    pe = np.linalg.norm(v.pos[v.ok] - gp[v.ok], axis=1)
    re = _rot_err_deg(v.quat[v.ok], gq[v.ok])
    assert np.median(pe) < 0.005 and np.median(re) < 1.0, (np.median(pe), np.median(re))
    assert np.nanmedian(v.reproj_px) < 1.0
    assert (v.foreign == 0).all()


# ---- fusion -----------------------------------------------------------------------------------------

def test_imu_camera_rotation_and_offset_come_from_the_take(motion_take):
    t, views = synthetic_views(motion_take)
    views.t_ns = views.t_ns + 30_000_000  # the camera's stamps 30 ms late
    res = run(motion_take, views, t + 0.03)
    e = res.extrinsics
    assert e.ok and abs(e.offset_s - (-0.03)) < 0.003, e.offset_s
    assert np.degrees(Rotation.from_matrix(e.R_cam_imu.T @ motion_take.R_cam_imu).magnitude()) < 0.5


def test_filter_bridges_a_gap_and_marks_the_one_it_cannot(motion_take):
    t, views = synthetic_views(motion_take, drop=[(4.0, 4.9), (8.0, 9.6)])
    res = run(motion_take, views, t)
    assert not res.flags, res.flags
    p = res.pose
    gp, gq = motion_take.gt_at(p.t_s)
    bridged = (p.t_s > 4.05) & (p.t_s < 4.85)
    assert (p.source[bridged] == SOURCE_FUSED).all()
    err = np.linalg.norm(p.pos[bridged] - gp[bridged], axis=1)
    assert np.max(err) < 0.02, np.max(err)
    assert np.median(_rot_err_deg(p.quat[bridged], gq[bridged])) < 1.0
    lost = (p.t_s > 8.05) & (p.t_s < 9.55)
    assert (p.source[lost] == SOURCE_NONE).all() and np.isnan(p.pos[lost]).all() and not p.trusted[lost].any()
    seen = (p.t_s > 1.0) & (p.t_s < 3.5)
    assert (p.source[seen] == SOURCE_VISION).all()
    assert np.median(np.linalg.norm(p.pos[seen] - gp[seen], axis=1)) < 0.003
    # the covariance says the gap is less certain than the views
    assert np.median(p.pos_sigma[bridged]) > np.median(p.pos_sigma[seen])


# ---- bad input --------------------------------------------------------------------------------------

def test_camera_without_intrinsics_is_flagged(motion_take):
    t, views = synthetic_views(motion_take)
    g, a = noisy_imu(motion_take)
    res = pl.compute_pose(motion_take.t_imu, g, a, t, None, None, motion_take.board, motion_take.p_cam_imu,
                          vision=views)
    assert res.pose is None and pl.NO_INTRINSICS in res.flags
    assert "rig calibrate intrinsics" in res.flags[pl.NO_INTRINSICS]


def test_no_board_and_a_foreign_board_are_flagged(motion_take):
    from calibration.intrinsics import CharucoTarget

    g, a = noisy_imu(motion_take)
    blank = [np.full((480, 640, 3), 128, np.uint8)] * 3
    res = pl.compute_pose(motion_take.t_imu, g, a, np.array([0.0, 0.1, 0.2]), blank, motion_take.intrinsics(),
                          motion_take.board, motion_take.p_cam_imu)
    assert res.pose is None and list(res.flags) == [pl.NO_BOARD]
    other = cv2.cvtColor(CharucoTarget().image(1500, margin_px=30), cv2.COLOR_GRAY2RGB)
    res = pl.compute_pose(motion_take.t_imu, g, a, np.array([0.0]), [other], motion_take.intrinsics(),
                          motion_take.board, motion_take.p_cam_imu)
    assert res.pose is None and list(res.flags) == [pl.FOREIGN_BOARD]


def test_board_of_the_wrong_size_is_flagged(motion_take):
    # the board lying there is 1.25x the stored one: every visual distance comes out 1/1.25 of the truth
    t, views = synthetic_views(motion_take, scale=1 / 1.25)
    res = run(motion_take, views, t)
    assert pl.BOARD_SIZE in res.flags and res.pose is None
    assert abs(res.scale.scale - 1.25) < 0.05
    t, views = synthetic_views(motion_take)
    assert abs(run(motion_take, views, t).scale.scale - 1.0) < 0.02


def test_imu_gaps_are_flagged_and_not_bridged(motion_take):
    t, views = synthetic_views(motion_take, drop=[(5.5, 6.3)])
    keep = ~((motion_take.t_imu > 5.8) & (motion_take.t_imu < 6.0))  # 200 ms of IMU samples lost
    g, a = noisy_imu(motion_take)
    res = run(motion_take, views, t, g[keep], a[keep], motion_take.t_imu[keep])
    assert pl.IMU_GAPS in res.flags and "200 ms" in res.flags[pl.IMU_GAPS]
    p = res.pose
    # the view gap contains the IMU break: neither side may carry the pose across it
    assert (p.source[(p.t_s > 5.6) & (p.t_s < 6.2)] != SOURCE_FUSED).all()


def test_clock_sync_failure_is_flagged(motion_take):
    t, views = synthetic_views(motion_take)
    rng = np.random.default_rng(5)
    g = rng.normal(0, 0.5, motion_take.gyro.shape)  # an IMU stream that is not this take's
    res = run(motion_take, views, t, gyro=g)
    assert pl.CLOCK_SYNC in res.flags
    assert not (res.pose.source == SOURCE_FUSED).any()  # vision only: nothing bridged


# ---- the board command pieces ----------------------------------------------------------------------------

def test_board_print_store_and_check(tmp_path):
    from calibration.intrinsics import BoardRenderer, CameraIntrinsics

    files = write_print(PoseBoard(), tmp_path / "board", "letter")
    assert [f.suffix for f in files] == [".png", ".pdf"] and all(f.stat().st_size > 1000 for f in files)
    with pytest.raises(BoardError, match="measure the outer edge"):
        save_board(PoseBoard(), 180.0, tmp_path)
    path = save_board(PoseBoard(), 250.0, tmp_path)
    assert "measured_long_mm = 250.0" in path.read_text()
    intr = CameraIntrinsics(640, 480, 500.0, 500.0, 319.5, 239.5, (0.0,) * 5)
    k = intr.camera_matrix()

    def photos(board):
        r = BoardRenderer(board, k, np.zeros(5), (640, 480))
        out = []
        for rv, tv in ([0.5, 0.1, 0.1], [0.08, 0.06, 0.42]), ([-0.4, 0.3, -0.2], [-0.1, 0.0, 0.45]):
            out.append(cv2.cvtColor(r.render(np.array(rv), np.array(tv)), cv2.COLOR_GRAY2RGB))
        return out

    ok = check_board(PoseBoard(), intr, photos(PoseBoard()))
    assert ok.ok and ok.used == 2, ok.message

    class Stretched(PoseBoard):  # printed with rows 4% taller than the columns
        def image(self, px_per_m=4000.0, margin_px=0):
            img = PoseBoard.image(self, px_per_m, margin_px)
            return cv2.resize(img, (img.shape[1], int(img.shape[0] * 1.04)), interpolation=cv2.INTER_AREA)

    bad = check_board(PoseBoard(), intr, photos(Stretched()))
    assert not bad.ok and "stretched" in bad.message


# ---- the episode's pose stream and the commands ----------------------------------------------------------

def test_pose_stream_in_an_episode_and_inspect(tmp_path, capsys):
    from recorder import Dataset
    from rig.cli import main
    from rig.pose.episode import record_home_take

    take = simulate(seed=1, duration=4.0, fps=15.0)
    i = record_home_take(tmp_path / "ds", take)
    assert main(["pose", str(tmp_path / "ds"), str(i)]) == 0
    s = Dataset(tmp_path / "ds").episode(i).read_stream("pose")
    assert s["position"].shape == (len(take.t_imu), 3) and s["quat"].shape[1] == 4
    assert set(np.unique(s["source"])) <= {0, 1, 2, 3}
    # as end-effector state and action, e.g. at 50 Hz for an exporter
    from rig.pose.episode import end_effector

    ee = end_effector(Dataset(tmp_path / "ds").episode(i), rate_hz=50)
    assert ee["state"].shape[1] == 8 and len(ee["t_ns"]) == len(ee["action"])
    v = ee["valid"]
    assert v.mean() > 0.5
    assert np.allclose(ee["action"][:-1][v[:-1]], ee["state"][1:][v[:-1]])
    jaw_truth = take.gt_at((ee["t_ns"][v] - ee["t_ns"][0]) / 1e9)[0]  # camera; the jaw is 11 cm ahead
    assert np.median(np.abs(np.linalg.norm(ee["state"][v, :3] - jaw_truth, axis=1) - 0.1154)) < 0.01
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "ds"), str(i)]) == 0
    out = capsys.readouterr().out
    assert "pose:" in out and "reprojection" in out
    assert main(["pose", str(tmp_path / "ds"), str(i), "--view", "--width", "60"]) == 0
    assert "top view" in capsys.readouterr().out
    # a take whose camera has no intrinsics: flagged in the stream and in inspect
    j = record_home_take(tmp_path / "ds", take, intrinsics=False)
    main(["pose", str(tmp_path / "ds"), str(j)])
    capsys.readouterr()
    main(["inspect", str(tmp_path / "ds"), str(j)])
    assert "pose flag no_intrinsics" in capsys.readouterr().out


def test_rig_calibrate_board_command(tmp_path, capsys):
    from rig.cli import main

    assert main(["calibrate", "board", "--out", str(tmp_path / "b"), "--paper", "letter"]) == 0
    assert (tmp_path / "b.pdf").is_file() and (tmp_path / "b.png").is_file()
    assert main(["calibrate", "board", "--measured", "251.5", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "boards" / "pose.toml").is_file()
    capsys.readouterr()
    assert main(["calibrate", "board", "--measured", "25", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("rig: measured 25.0 mm")
    # photos from a camera with no intrinsics: one line, exit 2
    assert main(["calibrate", "board", "--check", str(tmp_path / "b.png"), "--camera", "nocam",
                 "--dir", str(tmp_path)]) == 2
    assert "no stored intrinsics" in capsys.readouterr().err


def test_the_app_replay_shows_a_handheld_takes_trajectory_from_above_and_from_the_side(tmp_path):
    """A kept handheld take's pose (computed after the take) is drawn in the replay screen."""
    import asyncio
    import time

    from textual.app import App

    from recorder import Dataset
    from rig.cli import main
    from rig.pose.episode import record_home_take
    from rig.tui.replay import ReplayScreen
    from tests.apps import screen_text

    take = simulate(seed=2, duration=3.0, fps=15.0)
    i = record_home_take(tmp_path / "ds", take)
    assert main(["pose", str(tmp_path / "ds"), str(i)]) == 0
    screen = ReplayScreen(Dataset(tmp_path / "ds"), i)

    class Viewer(App):
        def on_mount(self) -> None:
            self.push_screen(screen)

    async def run() -> str:
        app = Viewer()
        async with app.run_test(size=(170, 60)) as pilot:
            end = time.monotonic() + 30
            while time.monotonic() < end and not screen.pose_views:
                await pilot.pause(0.1)
            await pilot.pause(0.2)
            return screen_text(app)

    text = asyncio.run(run())
    assert "top view" in screen.pose_views and "side view" in screen.pose_views
    assert "top view" in text and "side view" in text  # on the screen, beside the jaw's plot

"""A take's pose, end to end: board views, the IMU-camera calibration, the scale check, fusion.

Inputs are plain arrays on one clock (seconds), so the same code serves an episode
(rig/pose/episode.py), the simulated home and the benchmark. Bad input never produces a
trajectory it cannot support: each problem becomes a flag with one line saying what to do.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from calibration.board import PoseBoard

from .fusion import Extrinsics, FusedPose, FusionOptions, ScaleCheck, calibrate_extrinsics, check_scale, fuse
from .vision import VisualPoses, estimate_all

# flag names, as stored in the episode
NO_INTRINSICS = "no_intrinsics"
NO_BOARD = "no_board"
FOREIGN_BOARD = "foreign_board"
BOARD_SIZE = "board_size"
IMU_GAPS = "imu_gaps"
NO_IMU = "no_imu"
CLOCK_SYNC = "clock_sync"
IMU_CALIBRATION = "imu_calibration"


@dataclass
class PoseResult:
    pose: FusedPose | None
    vision: VisualPoses | None
    extrinsics: Extrinsics | None
    scale: ScaleCheck | None
    flags: dict[str, str] = field(default_factory=dict)  # flag -> the one line
    seconds: float = 0.0  # wall time spent
    imu_dropouts: int = 0  # IMU intervals over 2.5 periods (integrated through when under the break limit)

    def summary(self) -> dict:
        out: dict = {"flags": dict(self.flags), "wall_s": round(self.seconds, 3), "imu_dropouts": self.imu_dropouts}
        v = self.vision
        if v is not None and len(v.t_ns):
            out["frames"] = int(len(v.t_ns))
            out["frames_with_board"] = int(v.ok.sum())
            if v.ok.any():
                out["reproj_px_median"] = round(float(np.nanmedian(v.reproj_px)), 3)
                out["reproj_px_p95"] = round(float(np.nanpercentile(v.reproj_px, 95)), 3)
        p = self.pose
        if p is not None and len(p.t_s):
            out["coverage"] = round(float(p.trusted.mean()), 4)
            for name, code in (("vision", 1), ("fused", 2), ("imu-only", 3)):
                out[f"share_{name}"] = round(float((p.source == code).mean()), 4)
        if self.extrinsics is not None:
            e = self.extrinsics
            out["imu_camera"] = {"offset_ms": round(e.offset_s * 1000, 2), "residual_rad_s": round(e.residual_rad_s, 4),
                                 "correlation": round(e.correlation, 3), "ok": e.ok,
                                 "R_cam_imu": np.round(e.R_cam_imu, 6).tolist()}
        if self.scale is not None and np.isfinite(self.scale.scale):
            out["board_scale"] = round(self.scale.scale, 4)
        return out


def _imu_gaps(t: np.ndarray, limit_s: float) -> tuple[int, float]:
    d = np.diff(t)
    return int((d > limit_s).sum()), float(d.max()) if len(d) else 0.0


def compute_pose(t_imu: np.ndarray, gyro: np.ndarray, accel: np.ndarray, t_frames: np.ndarray,
                 frames: Iterable[np.ndarray], intrinsics, board: PoseBoard | None,
                 p_cam_imu: np.ndarray, imu_rate_hz: float = 200.0, opts: FusionOptions | None = None,
                 vision: VisualPoses | None = None) -> PoseResult:
    """The pose of a take. ``t_imu``/``t_frames`` in seconds on the rig's clock."""
    t0 = time.perf_counter()
    res = PoseResult(None, None, None, None)
    if intrinsics is None:
        res.flags[NO_INTRINSICS] = ("the wrist camera has no stored intrinsics, so no pose can be measured; "
                                    "run `rig calibrate intrinsics CAMERA`, then `rig pose DATASET`")
        return res
    board = board or PoseBoard()
    if vision is None:
        vision = estimate_all(board, intrinsics, frames, (np.asarray(t_frames) * 1e9).astype(np.int64))
    res.vision = vision
    if not vision.ok.any():
        if vision.foreign.sum() > 0:
            res.flags[FOREIGN_BOARD] = (f"the camera saw {int(vision.foreign.sum())} marker(s) of another board "
                                        "and none of the pose board; lay out the board `rig calibrate board` prints")
        else:
            res.flags[NO_BOARD] = ("the pose board is in no frame of this take; keep the printed board on the "
                                   "table in the wrist camera's view")
        res.seconds = time.perf_counter() - t0
        return res
    if len(t_imu) < 2:
        res.flags[NO_IMU] = "the take has no IMU samples; the pose is vision-only where the board is seen"
    o = opts or FusionOptions()
    n_gaps, longest = _imu_gaps(t_imu, o.imu_gap_s) if len(t_imu) > 1 else (0, 0.0)
    res.imu_dropouts = _imu_gaps(t_imu, 2.5 / imu_rate_hz)[0] if len(t_imu) > 1 else 0
    if n_gaps:
        res.flags[IMU_GAPS] = (f"the IMU stream has {n_gaps} gap(s), the longest {longest * 1000:.0f} ms; "
                               "the pose is not carried across them (check the gripper's USB cable and hub)")
    tc = vision.t_ns / 1e9
    ext = calibrate_extrinsics(t_imu, gyro, tc, vision.quat, corners=vision.corners) if len(t_imu) > 1 else None
    res.extrinsics = ext
    if ext is not None and not ext.ok:
        res.flags[CLOCK_SYNC if "clock" in ext.message else IMU_CALIBRATION] = ext.message
    if ext is None or not ext.ok:
        # vision alone, where the board is seen: no bridging without a trusted IMU
        res.pose = _vision_only(vision)
        res.seconds = time.perf_counter() - t0
        return res
    tcs = tc + ext.offset_s
    # the IMU's positions and orientations from the views, for the scale check
    from scipy.spatial.transform import Rotation

    ok = vision.ok
    r_bc = np.full((len(tc), 3, 3), np.nan)
    r_bc[ok] = Rotation.from_quat(vision.quat[ok], scalar_first=True).as_matrix()
    p_imu = vision.pos + np.einsum("nij,j->ni", np.nan_to_num(r_bc), p_cam_imu)
    p_imu[~ok] = np.nan
    r_bi = np.einsum("nij,jk->nik", np.nan_to_num(r_bc), ext.R_cam_imu)
    sc = check_scale(tcs, p_imu, r_bi, t_imu, accel)
    res.scale = sc
    if sc.ok is False:
        res.flags[BOARD_SIZE] = sc.message
        res.pose = None  # a metric trajectory from a board of unknown size would be made up
        res.seconds = time.perf_counter() - t0
        return res
    g = sc.gravity if sc.ok else np.array([0.0, 0.0, 9.81])
    res.pose = fuse(t_imu, gyro, accel, tcs, vision.pos, vision.quat, vision.reproj_px, vision.corners, ext.R_cam_imu,
                    p_cam_imu, g, opts)
    res.seconds = time.perf_counter() - t0
    return res


def _vision_only(v: VisualPoses) -> FusedPose:
    from .fusion import SOURCE_VISION

    ok = v.ok
    sig = np.where(ok, 0.002 * np.maximum(1.0, v.reproj_px / 0.5), np.nan)
    return FusedPose(v.t_ns / 1e9, v.pos.copy(), v.quat.copy(), sig, np.where(ok, 0.004, np.nan),
                     np.where(ok, SOURCE_VISION, 0).astype(np.uint8), ok.copy())

"""The pose of a recorded handheld episode: read it, compute it, store it as the ``pose`` stream.

Reads the gripper stream (200 Hz IMU on the rig's clock), the wrist camera's frames and the
episode's stored intrinsics; writes ``streams/pose`` (recorder/derived.py):

    position (3,) f8    camera position in the board frame, m (NaN where no pose)
    quat     (4,) f8    camera orientation, w x y z, board frame (OpenCV camera axes)
    jaw_position (3,) f8  the jaw's position (camera-to-jaw transform applied)
    pos_sigma, rot_sigma  f4  1-sigma of position (m) and orientation (rad)
    source   u1         0 none, 1 vision, 2 fused (a bridged gap), 3 imu-only (the take's ends)
    trusted  u1         position sigma within the trusted bound
    t_ns                the IMU sample's time

and ``attrs["derived"]``: the summary (coverage, reprojection error, the IMU-camera calibration,
the board's scale) and the flags, one line each.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from calibration.board import PoseBoard
from calibration.gripper_pose import GripperGeometry
from recorder.derived import end_effector  # noqa: F401  (the exporters' view of the pose; here for rig's callers)

from .pipeline import PoseResult, compute_pose

POSE_STREAM = "pose"
GRIPPER_STREAM = "gripper"
GROUND_TRUTH = "ground_truth"  # simulated takes only: the camera's true pose, same fields as `pose`
WRIST_CAMERA = "wrist"


def episode_inputs(ep, camera: str = WRIST_CAMERA) -> dict[str, Any]:
    g = ep.read_stream(GRIPPER_STREAM)
    attrs = ep.attrs
    intr = (attrs.get("camera_intrinsics") or {}).get(camera)
    board = attrs.get("pose_board")
    geo = attrs.get("gripper_geometry")
    return {"t_imu_ns": g["t_ns"], "gyro": g["gyro"].astype(np.float64), "accel": g["accel"].astype(np.float64),
            "t_frames_ns": ep.frame_times(camera)["t_ns"] if camera in ep.cameras else np.zeros(0, np.int64),
            "intrinsics": intr, "board": PoseBoard.from_dict(board) if board else None,
            "geometry": GripperGeometry(**{k: tuple(v) if isinstance(v, list) else v for k, v in geo.items()})
            if geo else None, "rate_hz": float(attrs.get("config", {}).get("gripper", {}).get("rate_hz", 200.0))}


def compute_episode_pose(dataset: str | Path, index: int, camera: str = WRIST_CAMERA,
                         board: PoseBoard | None = None, geometry: GripperGeometry | None = None,
                         store: bool = True) -> PoseResult:
    """Compute episode ``index``'s pose and (``store``) write it as the ``pose`` stream."""
    from calibration.intrinsics import CameraIntrinsics
    from recorder import Dataset

    ds = Dataset(dataset)
    ep = ds.episode(index)
    inp = episode_inputs(ep, camera)
    intr = CameraIntrinsics.from_dict(inp["intrinsics"]) if inp["intrinsics"] else None
    board = board or inp["board"]
    if board is None:
        from calibration.board import load_board

        board = load_board()
    geo = geometry or inp["geometry"] or GripperGeometry()
    t0 = int(inp["t_imu_ns"][0]) if len(inp["t_imu_ns"]) else 0
    t_imu = (inp["t_imu_ns"] - t0) / 1e9
    t_fr = (inp["t_frames_ns"] - t0) / 1e9

    def frames():  # decoded straight to grey: the board is found in grey anyway
        import cv2

        step = 64
        for a in range(0, len(t_fr), step):
            for blob in ep.read_jpeg(camera, a, min(len(t_fr), a + step)):
                yield cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_GRAYSCALE)

    res = compute_pose(t_imu, inp["gyro"], inp["accel"], t_fr, frames(), intr, board,
                       np.asarray(geo.imu_in_cam), inp["rate_hz"])
    truth = None
    if GROUND_TRUTH in ep.streams and res.pose is not None:  # a simulated take: accuracy is measured
        p = res.pose
        truth = truth_error(ep.read_stream(GROUND_TRUTH), (np.round(p.t_s * 1e9) + t0).astype(np.int64),
                            p.pos, p.quat, p.trusted.astype(bool))
    if store:
        store_pose(dataset, index, res, t0, geo, board, truth)
    return res


def truth_error(gt: dict[str, np.ndarray], t_ns: np.ndarray, pos: np.ndarray, quat: np.ndarray,
                trusted: np.ndarray) -> dict[str, Any]:
    """The trusted pose against the simulated ground truth (interpolated at the pose's times):
    median and p95 position (mm) and rotation (deg) error."""
    from scipy.spatial.transform import Rotation, Slerp

    inside = trusted & (t_ns >= gt["t_ns"][0]) & (t_ns <= gt["t_ns"][-1]) & np.isfinite(quat).all(axis=1)
    if len(gt["t_ns"]) < 2 or not inside.any():
        return {"n": 0}
    t = t_ns[inside].astype(np.float64)
    tg = gt["t_ns"].astype(np.float64)
    p_gt = np.column_stack([np.interp(t, tg, gt["position"][:, i]) for i in range(3)])
    r_gt = Slerp(tg, Rotation.from_quat(gt["quat"], scalar_first=True))(t)
    p_err = np.linalg.norm(pos[inside] - p_gt, axis=1) * 1000
    r_err = np.degrees((r_gt.inv() * Rotation.from_quat(quat[inside], scalar_first=True)).magnitude())
    return {"n": int(inside.sum()), "pos_mm_median": float(np.median(p_err)),
            "pos_mm_p95": float(np.percentile(p_err, 95)), "rot_deg_median": float(np.median(r_err)),
            "rot_deg_p95": float(np.percentile(r_err, 95))}


def store_pose(dataset, index: int, res: PoseResult, t0_ns: int, geo: GripperGeometry,
               board: PoseBoard | None, truth: dict[str, Any] | None = None) -> None:
    from recorder.derived import write_derived_stream

    summary = res.summary()
    if truth is not None:
        summary["truth_error"] = truth
    summary["geometry"] = asdict(geo)
    if board is not None:
        summary["board"] = board.to_dict()
    p = res.pose
    if p is None:
        n = 0
        cols = {"position": np.zeros((0, 3)), "quat": np.zeros((0, 4)), "jaw_position": np.zeros((0, 3)),
                "pos_sigma": np.zeros(0, np.float32), "rot_sigma": np.zeros(0, np.float32),
                "source": np.zeros(0, np.uint8), "trusted": np.zeros(0, np.uint8)}
        t_ns = np.zeros(n, np.int64)
    else:
        t_ns = (np.round(p.t_s * 1e9) + t0_ns).astype(np.int64)
        cols = {"position": p.pos, "quat": p.quat, "jaw_position": jaw_positions(p.pos, p.quat, geo),
                "pos_sigma": p.pos_sigma.astype(np.float32), "rot_sigma": p.rot_sigma.astype(np.float32),
                "source": p.source.astype(np.uint8), "trusted": p.trusted.astype(np.uint8)}
    write_derived_stream(dataset, index, POSE_STREAM, t_ns, cols, summary, rate_hz=200.0)


def jaw_positions(pos: np.ndarray, quat: np.ndarray, geo: GripperGeometry) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    out = np.full_like(pos, np.nan)
    ok = np.isfinite(quat).all(axis=1)
    if ok.any():
        out[ok] = pos[ok] + Rotation.from_quat(quat[ok], scalar_first=True).apply(np.asarray(geo.jaw_in_cam))
    return out


def pose_report(ep) -> dict[str, Any] | None:
    """What ``rig inspect`` says of an episode's pose stream (None when it has none)."""
    if POSE_STREAM not in ep.streams:
        return None
    summary = dict(ep.group[f"streams/{POSE_STREAM}"].attrs.get("derived", {}))
    return summary


def format_pose_report(summary: dict[str, Any]) -> list[str]:
    lines = []
    if "coverage" in summary:
        lines.append(f"  pose: {summary['coverage']:.0%} of the take trusted (vision {summary.get('share_vision', 0):.0%}, "
                     f"bridged {summary.get('share_fused', 0):.0%}, imu-only {summary.get('share_imu-only', 0):.0%})"
                     + (f"; reprojection {summary['reproj_px_median']:.2f} px median, "
                        f"{summary['reproj_px_p95']:.2f} px p95" if "reproj_px_median" in summary else ""))
    else:
        lines.append("  pose: none")
    ic = summary.get("imu_camera")
    if ic and all(isinstance(ic.get(k), float | int) for k in ("offset_ms", "residual_rad_s")):
        lines.append(f"  pose: IMU-camera offset {ic['offset_ms']:+.1f} ms, gyro residual {ic['residual_rad_s']:.3f} rad/s"
                     + ("" if ic.get("ok") else " (failed)"))
    te = summary.get("truth_error")
    if te and te.get("n"):
        lines.append(f"  pose vs simulated ground truth ({te['n']} trusted samples): position {te['pos_mm_median']:.2f} mm "
                     f"median, {te['pos_mm_p95']:.2f} mm p95; rotation {te['rot_deg_median']:.3f} deg median, "
                     f"{te['rot_deg_p95']:.3f} deg p95")
    for flag, line in (summary.get("flags") or {}).items():
        lines.append(f"  pose flag {flag}: {line}")
    return lines


# ---- the simulated home as a recorded episode --------------------------------------------------------

def record_home_take(dataset: str | Path, take, imu: dict[str, np.ndarray] | None = None,
                     intrinsics: bool = True, geometry: GripperGeometry | None = None) -> int:
    """Write a simulated home take as an episode: the gripper stream (the IMU as the take's
    readings, or ``imu`` = {"t_s", "gyro", "accel"} from the firmware), the wrist frames and the
    ground truth (``ground_truth`` stream: the camera's true pose in the board frame)."""
    import time

    from drivers.cameras.frame import Frame
    from recorder import Dataset
    from recorder.writer import WriterOptions
    from rig.handheld import GRIPPER_FIELDS

    ds = Dataset(dataset, create=True)
    intr = take.intrinsics().to_dict() if intrinsics else {}
    geo = geometry or GripperGeometry()
    w = ds.new_episode(task="home", operator="scripted-hand",
                       config={"name": "sim-home", "gripper": {"rate_hz": 200}},
                       intrinsics={WRIST_CAMERA: intr} if intr else {},
                       extra={"pose_board": take.board.to_dict(), "gripper_geometry": asdict(geo)},
                       # the whole take is handed over at once, faster than real time: room for all of it
                       options=WriterOptions(max_pending_s=float(take.t_imu[-1]) + 5.0))
    w.add_stream(GRIPPER_STREAM, GRIPPER_FIELDS, rate_hz=200.0)
    w.add_stream(GROUND_TRUTH, {"position": ((3,), "f8"), "quat": ((4,), "f8")}, rate_hz=200.0)
    w.add_camera(WRIST_CAMERA, fps=30.0)
    w.start()
    base = 1_000_000_000_000
    src = imu or {"t_s": take.t_imu, "gyro": take.gyro, "accel": take.accel}
    jaw = np.interp(src["t_s"], take.t_imu, take.jaw)
    def put(stream: str, t_ns: int, **values) -> None:
        while not w.append(stream, t_ns, **values):  # the writer's queue is bounded: wait for it
            time.sleep(0.005)

    for k, ts in enumerate(src["t_s"]):
        t_ns = base + int(round(ts * 1e9))
        put(GRIPPER_STREAM, t_ns, seq=k, t_device_us=int(ts * 1e6), t_received_ns=t_ns, jaw_rad=float(jaw[k]),
                 jaw=float(jaw[k]), trigger=0, buttons=0, accel=np.asarray(src["accel"][k], np.float32),
                 gyro=np.asarray(src["gyro"][k], np.float32), flags=0)
    for k, ts in enumerate(take.t_imu):
        put("ground_truth", base + int(round(ts * 1e9)), position=take.gt_pos[k], quat=take.gt_quat[k])
    for k, (ts, img) in enumerate(zip(take.t_frames, take.frames, strict=False)):
        t_ns = base + int(round(ts * 1e9))
        while not w.add_frame(Frame(WRIST_CAMERA, k, t_ns, img, "rgb8")):
            time.sleep(0.01)
    w.stop(status="complete")
    return int(w.index)

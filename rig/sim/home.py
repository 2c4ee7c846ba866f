"""The simulated home: a handheld take with ground truth, for the gripper's pose (issue 18).

A table with the printed pose board (calibration/board.py) and a few objects; a free-floating
gripper with a wrist camera and an IMU, moved by a scripted hand. The hand reaches, grasps,
lifts, turns fast and looks away from the board for moments of 0.3 to 1.2 s, with a tremor on
top. The IMU's readings are MuJoCo's accelerometer and gyro on the gripper body: the scripted
motion's position, velocity and acceleration go into ``mj_inverse``, which evaluates the sensors
(specific force, angular rate) in the IMU site's frame.

Frames: the *board* frame is OpenCV's (calibration/board.py). Camera poses are OpenCV's too
(z forward, y down): ``T_board_cam`` maps camera points into the board frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.board import PoseBoard

from .scene import import_mujoco

XML = Path(__file__).with_name("home.xml")
TABLE_TOP_Z = 0.73
BOARD_CENTRE = (0.0, 0.0)
BOARD_PX_PER_M = 5000.0
IMU_RATE_HZ = 200.0
# Where the IMU chip sits on the gripper, and how it is turned: what the calibration must find.
IMU_POS = (0.012, 0.03, 0.04)
IMU_ROTVEC = (0.03, -0.02, 1.5708 + 0.04)  # ~90 degrees about the camera axis, mounted a bit askew
MJ_TO_CV = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera axes (x right, y up, z back) -> OpenCV's


def _rot():
    from scipy.spatial.transform import Rotation

    return Rotation


def board_world_pose(board: PoseBoard) -> tuple[np.ndarray, np.ndarray]:
    """(R_world_board, origin): the board frame in the world (x along the table's x, z down)."""
    w, h = board.size_m
    origin = np.array([BOARD_CENTRE[0] - w / 2, BOARD_CENTRE[1] + h / 2, TABLE_TOP_Z + 0.0005])
    return np.diag([1.0, -1.0, -1.0]), origin


def load_home(board: PoseBoard | None = None):
    """The home's MjModel, with the board printed at its true size."""
    import cv2

    mujoco = import_mujoco()
    board = board or PoseBoard()
    img = board.image(BOARD_PX_PER_M)
    ok, png = cv2.imencode(".png", img)
    w, h = board.size_m
    rv = _rot().from_rotvec(IMU_ROTVEC).as_quat(scalar_first=True)
    xml = (XML.read_text()
           .replace("BOARD_POS", f"{BOARD_CENTRE[0]} {BOARD_CENTRE[1]} {TABLE_TOP_Z + 0.0005}")
           .replace("BOARD_HALF", f"{w / 2} {h / 2}")
           .replace("IMU_POS", " ".join(map(str, IMU_POS)))
           .replace("IMU_QUAT", " ".join(f"{x:.9f}" for x in rv)))
    return mujoco.MjModel.from_xml_string(xml, assets={"board.png": io.BytesIO(png.tobytes()).getvalue()})


# ---- the scripted hand ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Waypoint:
    t: float  # s, when the hand arrives
    pos: tuple[float, float, float]  # camera position, world
    look: tuple[float, float, float]  # point the camera looks at
    roll: float = 0.0  # rad about the viewing axis
    jaw: float = 1.0  # 1 open, 0 closed


def _look_rotation(pos, look, roll) -> np.ndarray:
    """R_world_cam (MuJoCo camera axes) for a camera at ``pos`` looking at ``look``."""
    fwd = np.asarray(look, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    z = -fwd
    up = np.array([0.0, 1.0, 0.0]) if abs(fwd[2]) > 0.95 else np.array([0.0, 0.0, 1.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.column_stack([x, y, z])
    c, s = np.cos(roll), np.sin(roll)
    return r @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def script(seed: int = 0, duration: float = 20.0) -> list[Waypoint]:
    """A take: look over the board, reach for objects, grasp, lift, turn away and back, put down."""
    rng = np.random.default_rng([seed, 0x40])
    top = TABLE_TOP_Z
    wps = [Waypoint(0.0, (0.0, -0.28, top + 0.42), (0.0, 0.0, top), 0.0)]
    t = 0.0
    objects = [(0.24, 0.1, top + 0.05), (-0.25, 0.22, top + 0.03), (0.05, 0.32, top + 0.035)]
    k = 0
    while t < duration - 2.5:
        kind = ["survey", "reach", "away", "survey", "reach", "fastturn"][k % 6]
        k += 1
        if kind == "survey":  # hover over the board, looking at it from a new angle
            t += rng.uniform(1.0, 1.6)
            ang = rng.uniform(-0.8, 0.8)
            r = rng.uniform(0.25, 0.38)
            pos = (r * np.sin(ang), -r * np.cos(ang) - 0.05, top + rng.uniform(0.3, 0.48))
            look = (rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04), top)
            wps.append(Waypoint(t, pos, look, rng.uniform(-0.5, 0.5)))
        elif kind == "reach":  # down to an object by the board's edge, close the jaw, lift
            ox, oy, oz = objects[rng.integers(len(objects))]
            t += rng.uniform(1.0, 1.4)
            wps.append(Waypoint(t, (ox * 0.7, oy * 0.7 - 0.15, oz + 0.2), (ox * 0.5, oy * 0.5 - 0.02, top), 0.2))
            t += 0.6
            wps.append(Waypoint(t, (ox * 0.8, oy * 0.8 - 0.12, oz + 0.16), (ox * 0.5, oy * 0.5, top), 0.2, 0.0))
            t += 0.7
            wps.append(Waypoint(t, (ox * 0.6, oy * 0.6 - 0.18, oz + 0.32), (0.0, 0.0, top), 0.1, 0.0))
        elif kind == "away":  # look off the table (the board leaves the view), then come back
            t += rng.uniform(0.5, 0.7)
            side = rng.choice([-1.0, 1.0])
            wps.append(Waypoint(t, (0.1 * side, -0.3, top + 0.4), (1.2 * side, 0.4, top + 0.5), 0.0, 0.0))
            t += rng.uniform(0.3, 0.9)  # held away
            wps.append(Waypoint(t, (0.12 * side, -0.28, top + 0.42), (1.3 * side, 0.5, top + 0.55), 0.1, 1.0))
            t += rng.uniform(0.5, 0.7)
            wps.append(Waypoint(t, (0.0, -0.3, top + 0.4), (0.0, 0.0, top), 0.0, 1.0))
        else:  # a fast turn of the wrist (about 250 deg/s) while looking at the board
            t += 0.8
            wps.append(Waypoint(t, (0.05, -0.25, top + 0.38), (0.0, 0.0, top), 0.9))
            t += 0.55
            wps.append(Waypoint(t, (0.02, -0.27, top + 0.38), (0.0, 0.0, top), -0.9))
    wps.append(Waypoint(duration, (0.0, -0.3, top + 0.42), (0.0, 0.0, top), 0.0))
    return wps


@dataclass
class Motion:
    """The gripper's camera pose (MuJoCo axes) sampled densely, with its derivatives."""

    t: np.ndarray
    pos: np.ndarray  # (n, 3) world
    vel: np.ndarray
    acc: np.ndarray
    quat: np.ndarray  # (n, 4) w x y z, R_world_cam (MuJoCo camera axes)
    omega_body: np.ndarray  # (n, 3) angular velocity in the body frame
    alpha_body: np.ndarray
    jaw: np.ndarray


def plan_motion(wps: list[Waypoint], rate_hz: float = 1000.0, seed: int = 0) -> Motion:
    """Minimum-jerk between waypoints in position and (slerped) orientation, plus a tremor."""
    Rotation = _rot()
    from scipy.spatial.transform import Slerp

    dt = 1.0 / rate_hz
    t = np.arange(0.0, wps[-1].t + 1e-9, dt)
    seg = np.clip(np.searchsorted([w.t for w in wps], t, side="right") - 1, 0, len(wps) - 2)
    t0 = np.array([wps[i].t for i in seg])
    t1 = np.array([wps[i + 1].t for i in seg])
    u = np.clip((t - t0) / (t1 - t0), 0, 1)
    s = 10 * u**3 - 15 * u**4 + 6 * u**5  # minimum jerk
    p0 = np.array([wps[i].pos for i in seg])
    p1 = np.array([wps[i + 1].pos for i in seg])
    pos = p0 + (p1 - p0) * s[:, None]
    rots = Rotation.from_matrix(np.stack([_look_rotation(w.pos, w.look, w.roll) for w in wps]))
    rvec = np.empty((len(t), 3))
    for i in range(len(wps) - 1):
        m = seg == i
        if m.any():
            sl = Slerp([0.0, 1.0], rots[[i, i + 1]])
            r = sl(s[m])
            rvec[m] = r.as_rotvec()
    r_plan = Rotation.from_rotvec(rvec)
    rng = np.random.default_rng([seed, 0x7E])
    # Tremor and sway: a few slow sines, ~2 mm and ~0.6 degrees.
    trem_p = np.zeros((len(t), 3))
    trem_r = np.zeros((len(t), 3))
    for _ in range(4):
        f = rng.uniform(0.4, 3.0)
        ph = rng.uniform(0, 2 * np.pi, 3)
        trem_p += rng.uniform(0.3, 0.8) * 1e-3 * np.sin(2 * np.pi * f * t[:, None] + ph)
        trem_r += rng.uniform(0.05, 0.2) * np.pi / 180 * np.sin(2 * np.pi * f * t[:, None] + ph[::-1])
    pos = pos + trem_p
    r = r_plan * Rotation.from_rotvec(trem_r)
    vel = np.gradient(pos, dt, axis=0)
    acc = np.gradient(vel, dt, axis=0)
    quat = r.as_quat(scalar_first=True)
    # body angular velocity: log(R_k^T R_k+1)/dt, centred
    rel = (r[:-1].inv() * r[1:]).as_rotvec() / dt
    om = np.empty((len(t), 3))
    om[1:-1] = 0.5 * (rel[:-1] + rel[1:])
    om[0], om[-1] = rel[0], rel[-1]
    alpha = np.gradient(om, dt, axis=0)
    j0 = np.array([wps[i].jaw for i in seg])
    j1 = np.array([wps[i + 1].jaw for i in seg])
    jaw = j0 + (j1 - j0) * s
    return Motion(t, pos, vel, acc, quat, om, alpha, jaw)


# ---- a take in the home -----------------------------------------------------------------------------

@dataclass
class HomeTake:
    """What the world produces for one take, on the take's clock (s from its start)."""

    board: PoseBoard
    t_imu: np.ndarray  # (n,)
    gyro: np.ndarray  # (n, 3) rad/s, IMU frame (noise-free: the firmware adds its own)
    accel: np.ndarray  # (n, 3) m/s^2, IMU frame, specific force
    jaw: np.ndarray  # (n,) 0 closed .. 1 open
    gt_pos: np.ndarray  # (n, 3) camera in the board frame, at t_imu
    gt_quat: np.ndarray  # (n, 4) w x y z, R_board_cam (OpenCV camera axes), at t_imu
    t_frames: np.ndarray  # (m,)
    frames: list[np.ndarray] = field(default_factory=list)  # rendered RGB, or empty
    width: int = 640
    height: int = 480
    fovy_deg: float = 72.0
    R_cam_imu: np.ndarray = field(default_factory=lambda: np.eye(3))  # the true mounting (OpenCV axes)
    p_cam_imu: np.ndarray = field(default_factory=lambda: np.zeros(3))
    motion: Motion | None = None  # the scripted hand's dense motion (what render_frames draws)

    def intrinsics(self):
        from calibration.intrinsics import CameraIntrinsics

        f = (self.height / 2) / np.tan(np.radians(self.fovy_deg) / 2)
        return CameraIntrinsics(self.width, self.height, float(f), float(f), self.width / 2 - 0.5,
                                self.height / 2 - 0.5, (0.0,) * 5, "opencv", "sim-home")

    def gt_at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth (position, quaternion w x y z) interpolated at times ``t``."""
        Rotation = _rot()
        from scipy.spatial.transform import Slerp

        pos = np.column_stack([np.interp(t, self.t_imu, self.gt_pos[:, i]) for i in range(3)])
        sl = Slerp(self.t_imu, Rotation.from_quat(self.gt_quat, scalar_first=True))
        q = sl(np.clip(t, self.t_imu[0], self.t_imu[-1])).as_quat(scalar_first=True)
        return pos, q


def simulate(seed: int = 0, duration: float = 20.0, fps: float = 30.0, width: int = 640, height: int = 480,
             render: bool = True, board: PoseBoard | None = None, frame_limit: int | None = None) -> HomeTake:
    """Run the scripted hand through the home: IMU at 200 Hz from MuJoCo's sensors, ground truth,
    and (``render``) the wrist camera's frames at ``fps``."""
    mujoco = import_mujoco()
    Rotation = _rot()
    board = board or PoseBoard()
    model = load_home(board)
    data = mujoco.MjData(model)
    motion = plan_motion(script(seed, duration), seed=seed)
    step = int(round(1000.0 / IMU_RATE_HZ))
    idx = np.arange(0, len(motion.t), step)
    jnt = model.joint("gripper")
    qa, da = int(jnt.qposadr[0]), int(jnt.dofadr[0])
    acc_adr = int(model.sensor("accel").adr[0])
    gyr_adr = int(model.sensor("gyro").adr[0])
    gyro = np.empty((len(idx), 3))
    accel = np.empty((len(idx), 3))
    for n, i in enumerate(idx):
        data.qpos[qa:qa + 3] = motion.pos[i]
        data.qpos[qa + 3:qa + 7] = motion.quat[i]
        data.qvel[da:da + 3] = motion.vel[i]
        data.qvel[da + 3:da + 6] = motion.omega_body[i]
        data.qacc[da:da + 3] = motion.acc[i]
        data.qacc[da + 3:da + 6] = motion.alpha_body[i]
        mujoco.mj_inverse(model, data)
        accel[n] = data.sensordata[acc_adr:acc_adr + 3]
        gyro[n] = data.sensordata[gyr_adr:gyr_adr + 3]
    R_wb, o_wb = board_world_pose(board)
    r_wc = Rotation.from_quat(motion.quat[idx], scalar_first=True).as_matrix() @ MJ_TO_CV
    R_bc = R_wb.T @ r_wc
    p_bc = (motion.pos[idx] - o_wb) @ R_wb  # R_wb^T (p - o)
    gt_quat = Rotation.from_matrix(R_bc).as_quat(scalar_first=True)
    r_ci = MJ_TO_CV @ Rotation.from_rotvec(IMU_ROTVEC).as_matrix()
    take = HomeTake(board, motion.t[idx], gyro, accel, motion.jaw[idx], p_bc, gt_quat,
                    np.arange(0.0, duration, 1.0 / fps), [], width, height,
                    float(model.cam_fovy[model.camera("wrist").id]), r_ci, MJ_TO_CV @ np.array(IMU_POS), motion)
    if render:
        take.frames = render_frames(model, motion, take.t_frames[:frame_limit], width, height)
    return take


def render_frames(model, motion: Motion, times: np.ndarray, width: int, height: int,
                  shadows: bool = False) -> list[np.ndarray]:
    """The wrist camera's view at ``times`` (shadows cost ~2.5x the render time on a CPU renderer)."""
    mujoco = import_mujoco()
    data = mujoco.MjData(model)
    qa = int(model.joint("gripper").qposadr[0])
    renderer = mujoco.Renderer(model, height, width)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = shadows
    out = []
    try:
        for t in times:
            i = int(round(t * 1000.0))
            data.qpos[qa:qa + 3] = motion.pos[i]
            data.qpos[qa + 3:qa + 7] = motion.quat[i]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera="wrist")
            out.append(renderer.render().copy())
    finally:
        renderer.close()
    return out

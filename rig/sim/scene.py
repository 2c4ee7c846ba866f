"""The bimanual ViperX scene from gym-aloha's assets, with our own tasks on top.

The MJCF files are read from the installed ``gym_aloha`` package (never copied). A task owns
how its objects are placed from a seed and what counts as success.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from drivers.errors import RigError

from .hardware import FINGER_CLOSED_M, FINGER_OPEN_M

TASKS = ("transfer_cube", "insertion")
SIDES = ("left", "right")
ARM_JOINT_NAMES = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
START_ARM_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)  # the scene's start keyframe, per arm
START_FINGER_M = 0.024

PEG_HALF_LENGTH = 0.06  # the peg and socket as the insertion model builds them
SOCKET_HALF_LENGTH = 0.06

_MODEL_FILES = {
    "transfer_cube": "bimanual_viperx_transfer_cube.xml",
    "insertion": "bimanual_viperx_insertion.xml",
}


class SimUnavailable(RigError):
    """MuJoCo or the gym-aloha assets are not installed."""


class UnknownTask(RigError):
    pass


def import_mujoco() -> Any:
    try:
        import mujoco
    except ImportError as e:  # pragma: no cover - depends on the install
        raise SimUnavailable(
            f"the simulated rig needs MuJoCo ({e}); install it with: pip install -e '.[sim]'"
        ) from e
    return mujoco


def model_path(task: str) -> str:
    if task not in _MODEL_FILES:
        raise UnknownTask(f"unknown sim task {task!r}; choose one of: {', '.join(TASKS)}")
    try:
        assets = resources.files("gym_aloha") / "assets"
    except ModuleNotFoundError as e:
        raise SimUnavailable(
            "the simulated rig loads its scene from the gym-aloha package, which is missing; "
            "install it with: pip install -e '.[sim]'"
        ) from e
    path = assets / _MODEL_FILES[task]
    if not path.is_file():
        raise SimUnavailable(f"gym-aloha is installed but lacks {path}; reinstall it: pip install -e '.[sim]'")
    return str(path)


def load_model(task: str) -> Any:
    mujoco = import_mujoco()
    return mujoco.MjModel.from_xml_path(model_path(task))


@dataclass(frozen=True, slots=True)
class ObjectPose:
    name: str  # the free joint's body
    pos: tuple[float, float, float]
    yaw: float = 0.0

    def qpos(self) -> np.ndarray:
        half = self.yaw / 2
        return np.array([*self.pos, math.cos(half), 0.0, 0.0, math.sin(half)])


def object_poses(task: str, seed: int) -> list[ObjectPose]:
    """Where the task's objects start, drawn from the seed (on the table, within both arms' reach)."""
    rng = np.random.default_rng([seed, 0x5E])
    if task == "transfer_cube":
        return [ObjectPose("box", (rng.uniform(0.0, 0.2), rng.uniform(0.4, 0.6), 0.02))]
    if task == "insertion":
        return [
            ObjectPose("peg", (rng.uniform(0.1, 0.2), rng.uniform(0.4, 0.6), 0.01)),
            ObjectPose("socket", (rng.uniform(-0.2, -0.1), rng.uniform(0.4, 0.6), 0.022)),
        ]
    raise UnknownTask(f"unknown sim task {task!r}; choose one of: {', '.join(TASKS)}")


class SimScene:
    """A MuJoCo model+data of the bimanual rig with index maps in the rig's words."""

    def __init__(self, task: str = "transfer_cube"):
        self.mujoco = import_mujoco()
        self.task = task
        self.model = load_model(task)
        self.data = self.mujoco.MjData(self.model)
        m = self.model
        # qpos/qvel addresses and actuator ids of each arm: 6 joints + left finger (+ right finger mirror)
        self.qpos_adr: dict[str, list[int]] = {}
        self.dof_adr: dict[str, list[int]] = {}
        self.act: dict[str, list[int]] = {}
        for side in SIDES:
            names = [f"vx300s_{side}/{j}" for j in (*ARM_JOINT_NAMES, "left_finger", "right_finger")]
            self.qpos_adr[side] = [int(m.joint(n).qposadr[0]) for n in names]
            self.dof_adr[side] = [int(m.joint(n).dofadr[0]) for n in names]
            by_joint = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu)}
            self.act[side] = [by_joint[m.joint(n).id] for n in names]
        self.kp = m.actuator_gainprm[:, 0].copy()
        self._geom_names = [m.geom(i).name for i in range(m.ngeom)]
        self.reset(0)

    # --- state -------------------------------------------------------------------------------
    def reset(self, seed: int) -> list[ObjectPose]:
        mj, m, d = self.mujoco, self.model, self.data
        mj.mj_resetDataKeyframe(m, d, 0)
        poses = object_poses(self.task, seed)
        for p in poses:
            adr = int(m.joint(m.body(p.name).jntadr[0]).qposadr[0])
            d.qpos[adr : adr + 7] = p.qpos()
        for side in SIDES:
            d.qpos[self.qpos_adr[side][:6]] = START_ARM_POSE
            d.qpos[self.qpos_adr[side][6]] = START_FINGER_M
            d.qpos[self.qpos_adr[side][7]] = -START_FINGER_M
            self.set_arm_goal(side, np.array(START_ARM_POSE), START_FINGER_M)
        m.actuator_gainprm[:, 0] = self.kp
        m.actuator_biasprm[:, 1] = -self.kp
        mj.mj_forward(m, d)
        return poses

    def arm_qpos(self, side: str) -> np.ndarray:
        """6 joint angles and the left finger slide position."""
        return self.data.qpos[self.qpos_adr[side][:7]].copy()

    def arm_qvel(self, side: str) -> np.ndarray:
        return self.data.qvel[self.dof_adr[side][:7]].copy()

    def arm_force(self, side: str) -> np.ndarray:
        return self.data.actuator_force[self.act[side][:7]].copy()

    def set_arm_goal(self, side: str, joints: np.ndarray | None = None, finger_m: float | None = None) -> None:
        act = self.act[side]
        if joints is not None:
            for a, q in zip(act[:6], joints):
                lo, hi = self.model.actuator_ctrlrange[a]
                self.data.ctrl[a] = min(max(float(q), lo), hi)
        if finger_m is not None:
            f = min(max(float(finger_m), FINGER_CLOSED_M), FINGER_OPEN_M)
            self.data.ctrl[act[6]] = f
            self.data.ctrl[act[7]] = -f

    def set_limp(self, side: str, joint: int, limp: bool) -> None:
        """Torque off: the actuator stops producing force (gain and bias zero); the joint falls under gravity
        against its friction, as a real arm does when its servos are switched off."""
        idx = [self.act[side][joint]] + ([self.act[side][7]] if joint == 6 else [])
        for a in idx:
            kp = 0.0 if limp else self.kp[a]
            self.model.actuator_gainprm[a, 0] = kp
            self.model.actuator_biasprm[a, 1] = -kp

    def step(self, n: int = 1) -> None:
        self.mujoco.mj_step(self.model, self.data, n)

    # --- task --------------------------------------------------------------------------------
    def contacts(self) -> set[tuple[str, str]]:
        d, names = self.data, self._geom_names
        pairs = set()
        for i in range(d.ncon):
            a, b = names[d.contact[i].geom1], names[d.contact[i].geom2]
            pairs.add((a, b))
            pairs.add((b, a))
        return pairs

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.model.body(name).id].copy()

    def success(self) -> bool:
        c = self.contacts()

        def touches(obj: str, prefix: str) -> bool:
            return any(a == obj and b.startswith(prefix) for a, b in c)

        if self.task == "transfer_cube":
            # handed over: the left gripper holds the cube in the air, the right has let go
            held_left = touches("red_box", "vx300s_left/10_")
            held_right = touches("red_box", "vx300s_right/10_")
            on_table = ("red_box", "table") in c
            return held_left and not held_right and not on_table and self.body_pos("box")[2] > 0.05
        # insertion: the peg is inside the socket (its tip 1.5 cm past the mouth, or touching the
        # pin), with both lifted off the table
        socket_geoms = ("socket-1", "socket-2", "socket-3", "socket-4", "pin")
        off_table = ("red_peg", "table") not in c and not any((g, "table") in c for g in socket_geoms)
        return off_table and (("red_peg", "pin") in c or self._peg_inside())

    def _peg_inside(self) -> bool:
        d, m = self.data, self.model
        sid, pid = m.body("socket").id, m.body("peg").id
        Rs = d.xmat[sid].reshape(3, 3)
        Rp = d.xmat[pid].reshape(3, 3)
        if abs(float(Rs[:, 0] @ Rp[:, 0])) < 0.95:  # axes not lined up
            return False
        # the peg end nearest the socket centre, in the socket's frame
        ends = [d.xpos[pid] + sgn * PEG_HALF_LENGTH * Rp[:, 0] for sgn in (-1.0, 1.0)]
        local = min((Rs.T @ (e - d.xpos[sid]) for e in ends), key=lambda v: abs(v[0]))
        return abs(local[0]) < SOCKET_HALF_LENGTH - 0.015 and abs(local[1]) < 0.018 and abs(local[2]) < 0.018


def camera_intrinsics(task: str, camera: str, width: int, height: int):
    """A simulated camera's exact pinhole: MuJoCo renders with the vertical field of view ``fovy``,
    square pixels and the principal point at the image centre (OpenCV pixel-centre convention)."""
    import math

    from calibration.intrinsics import CameraIntrinsics

    mujoco = import_mujoco()
    model = load_model(task)
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam < 0:
        raise UnknownTask(f"the {task} scene has no camera {camera!r}")
    f = (height / 2) / math.tan(math.radians(float(model.cam_fovy[cam])) / 2)
    return CameraIntrinsics(width, height, f, f, width / 2 - 0.5, height / 2 - 0.5, (0.0,) * 5, "opencv", "sim-scene")

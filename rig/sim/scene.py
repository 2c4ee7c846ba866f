"""The bimanual ViperX scene from gym-aloha's assets, with our own tasks on top.

The MJCF files are read from the installed ``gym_aloha`` package (never copied). A task (its
module in ``rig.sim.tasks``) owns which file, what it adds to it, how its objects are placed from
a seed and what counts as success; the scene only asks it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from drivers.errors import RigError

from .hardware import FINGER_CLOSED_M, FINGER_OPEN_M
from .tasks import DEFAULT_TASK, TASKS, ObjectPose, UnknownTask, get_task

# TASKS, ObjectPose and UnknownTask are the task registry's, named here too for the scene's users
__all__ = ["ARM_JOINT_NAMES", "SIDES", "START_ARM_POSE", "START_FINGER_M", "TASKS", "ObjectPose", "SimScene",
           "SimUnavailable", "UnknownTask", "camera_intrinsics", "import_mujoco", "load_model", "model_path",
           "object_poses"]

SIDES = ("left", "right")
ARM_JOINT_NAMES = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
START_ARM_POSE = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0)  # the scene's start keyframe, per arm
START_FINGER_M = 0.024


class SimUnavailable(RigError):
    """MuJoCo or the gym-aloha assets are not installed."""


def import_mujoco() -> Any:
    try:
        import mujoco
    except ImportError as e:  # pragma: no cover - depends on the install
        raise SimUnavailable(
            f"the simulated rig needs MuJoCo ({e}); install it with: pip install -e '.[sim]'"
        ) from e
    return mujoco


def model_path(task: str) -> str:
    """The gym-aloha file the task's scene starts from."""
    spec = get_task(task)
    try:
        assets = resources.files("gym_aloha") / "assets"
    except ModuleNotFoundError as e:
        raise SimUnavailable(
            "the simulated rig loads its scene from the gym-aloha package, which is missing; "
            "install it with: pip install -e '.[sim]'"
        ) from e
    path = assets / spec.scene
    if not path.is_file():
        raise SimUnavailable(f"gym-aloha is installed but lacks {path}; reinstall it: pip install -e '.[sim]'")
    return str(path)


def load_model(task: str) -> Any:
    mujoco = import_mujoco()
    spec = get_task(task)
    if spec.build is None:
        return mujoco.MjModel.from_xml_path(model_path(task))
    edit = mujoco.MjSpec.from_file(model_path(task))
    for key in list(edit.keys):  # its keyframe lacks what the task adds: resets set every pose
        edit.delete(key)
    spec.build(edit)
    return edit.compile()


def object_poses(task: str, seed: int) -> list[ObjectPose]:
    """Where the task's objects start, drawn from the seed (on the table, within both arms' reach)."""
    return get_task(task).start_poses(seed)


class SimScene:
    """A MuJoCo model+data of the bimanual rig with index maps in the rig's words."""

    def __init__(self, task: str = DEFAULT_TASK):
        self.mujoco = import_mujoco()
        self.task = task
        self.spec = get_task(task)
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
        if m.nkey:
            mj.mj_resetDataKeyframe(m, d, 0)
        else:
            mj.mj_resetData(m, d)
        poses = self.spec.start_poses(seed)
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

    def object_positions(self) -> dict[str, np.ndarray]:
        """Each of the task's objects (its body name) -> where it is now (m, world frame)."""
        return {o.body: self.body_pos(o.body) for o in self.spec.objects}

    def touches(self, geom: str, prefix: str) -> bool:
        """The geom is in contact with one whose name starts with ``prefix``."""
        return any(a == geom and b.startswith(prefix) for a, b in self.contacts())

    def success(self) -> bool:
        return self.spec.success(self)


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

"""Inverse kinematics of the follower arms on a scratch copy of the scene.

The scripted operator plans in the follower's task space (where the fingers must be) and turns
that into joint angles here; with identity calibration those are also the leader's joint angles.
"""

from __future__ import annotations

import numpy as np

from .scene import ARM_JOINT_NAMES, START_ARM_POSE, SimScene

# The point midway between the finger pads, near their tips, in the gripper_link frame. Pads span
# x 0.064..0.154 m along the gripper's pointing axis; grasping 3 cm behind the tips is a firm hold.
GRASP_POINT = np.array([0.125, 0.0, 0.0])


def frame(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rotation matrix whose columns are the gripper axes: x points out of the palm, y is the finger travel."""
    x = np.asarray(x, float) / np.linalg.norm(x)
    y = np.asarray(y, float) - np.dot(y, x) * x
    y /= np.linalg.norm(y)
    return np.column_stack([x, y, np.cross(x, y)])


def top_down(finger_axis: np.ndarray) -> np.ndarray:
    """Gripper pointing straight down, fingers closing along ``finger_axis`` (horizontal)."""
    return frame(np.array([0.0, 0.0, -1.0]), finger_axis)


class ArmIK:
    """Damped least-squares IK for one arm's grasp point (position and orientation)."""

    def __init__(self, scene: SimScene, side: str):
        self.scene = scene
        self.mj = scene.mujoco
        self.model = scene.model
        self.data = self.mj.MjData(scene.model)  # scratch: never the live physics
        self.data.qpos[:] = scene.data.qpos
        self.side = side
        self.body = scene.model.body(f"vx300s_{side}/gripper_link").id
        self.qadr = scene.qpos_adr[side][:6]
        self.dadr = scene.dof_adr[side][:6]
        joints = [scene.model.joint(f"vx300s_{side}/{j}").id for j in ARM_JOINT_NAMES]
        self.lo, self.hi = scene.model.jnt_range[joints, 0], scene.model.jnt_range[joints, 1]
        self.jacp = np.zeros((3, self.model.nv))
        self.jacr = np.zeros((3, self.model.nv))

    def pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qadr] = q
        self.mj.mj_kinematics(self.model, self.data)
        R = self.data.xmat[self.body].reshape(3, 3).copy()
        return self.data.xpos[self.body] + R @ GRASP_POINT, R

    def solve(self, pos: np.ndarray, R: np.ndarray, q0: np.ndarray | None = None,
              iters: int = 60, tol: float = 2e-4) -> tuple[np.ndarray, float]:
        """Joint angles placing the grasp point at ``pos`` with gripper axes ``R``; returns (q, position error)."""
        q = np.array(START_ARM_POSE if q0 is None else q0, float)
        err_p = np.inf
        last = np.inf
        stalled = 0
        for _ in range(iters):
            p, Rc = self.pose(q)
            e_p = pos - p
            e_r = 0.5 * sum(np.cross(Rc[:, i], R[:, i]) for i in range(3))
            err_p = float(np.linalg.norm(e_p))
            total = err_p + 0.1 * float(np.linalg.norm(e_r))
            stalled = stalled + 1 if total > 0.98 * last else 0
            if (err_p < tol and np.linalg.norm(e_r) < 2e-3) or stalled >= 3:
                break  # converged, or stuck against a joint limit
            last = total
            self.mj.mj_comPos(self.model, self.data)
            self.mj.mj_jac(self.model, self.data, self.jacp, self.jacr, p, self.body)
            J = np.vstack([self.jacp[:, self.dadr], 0.3 * self.jacr[:, self.dadr]])
            e = np.concatenate([e_p, 0.3 * e_r])
            dq = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), e)
            q = np.clip(q + np.clip(dq, -0.3, 0.3), self.lo, self.hi)
        return q, err_p

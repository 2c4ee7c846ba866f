"""A scripted operator: performs a task by moving the LEADER arms, as a person would.

The plan is made in the follower's task space (where the fingers must go), turned into joint
angles with the follower's kinematics, and played on the leaders. With identity calibration a
teleop loop that mirrors leader -> follower then does the task. What to do is the task's
(``TaskSpec.operate`` in ``rig.sim.tasks``); how a person does it is here, shared by every task.
Everything random comes from the seed, so a seed always gives the same plan:

- timing: a per-episode pace, per-move durations, reaction pauses;
- approach paths: hover points and via points with random offsets, small aim errors at grasps;
- tremor: band-limited (physiological 6-11 Hz) noise plus a slow drift on every joint;
- failed grasps: sometimes the operator closes too early (above the object), notices, opens and
  grasps again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hardware import leader_gripper_from_opening
from .kinematics import ArmIK
from .scene import SIDES, START_ARM_POSE, SimScene
from .tasks import get_task

PLAN_DT = 0.01  # s between planned samples (the world interpolates between them)
OPEN, CLOSED = 1.0, 0.0
FINGERTIP_X = 0.154  # finger pad tips along the gripper's pointing axis (gripper_link frame)
MISS_HEIGHT = 0.06  # a too-early close happens this far above the right grasp height


@dataclass(frozen=True, slots=True)
class Key:
    """Where one gripper should be at the end of a move, and how long the move takes."""

    duration: float
    pos: np.ndarray
    R: np.ndarray
    opening: float
    hold: float = 0.0  # pause after arriving
    straight: bool = False  # a straight line in space (final approaches); else a joint-space swing


@dataclass
class LeaderPlan:
    """Leader joint angles over time: ``q[k, arm]`` = 6 joint angles + gripper handle angle (rad)."""

    task: str
    seed: int
    dt: float
    q: np.ndarray  # (N, 2, 7) arms in SIDES order
    retries: int = 0  # failed grasps the operator recovers from in this plan
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return (len(self.q) - 1) * self.dt

    def at(self, t: float) -> np.ndarray:
        """(2, 7) leader angles at time t (held at the ends)."""
        x = min(max(t / self.dt, 0.0), len(self.q) - 1.0)
        i = min(int(x), len(self.q) - 2)
        a = x - i
        return (1 - a) * self.q[i] + a * self.q[i + 1]


def _min_jerk(s: np.ndarray) -> np.ndarray:
    return s * s * s * (10 - 15 * s + 6 * s * s)


def _slerp_R(R0: np.ndarray, R1: np.ndarray, s: float) -> np.ndarray:
    """Rotation between R0 and R1 (axis-angle interpolation of the relative rotation)."""
    Rrel = R0.T @ R1
    angle = np.arccos(np.clip((np.trace(Rrel) - 1) / 2, -1.0, 1.0))
    if angle < 1e-6:
        return R0.copy()
    axis = np.array([Rrel[2, 1] - Rrel[1, 2], Rrel[0, 2] - Rrel[2, 0], Rrel[1, 0] - Rrel[0, 1]])
    if np.linalg.norm(axis) < 1e-6:  # 180 degrees: any perpendicular axis of the symmetric part
        w, v = np.linalg.eigh(Rrel)
        axis = v[:, np.argmax(w)]
    axis /= np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    th = angle * s
    return R0 @ (np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K)


def _tremor(rng: np.random.Generator, n: int, dt: float, joints: int) -> np.ndarray:
    """Band-limited hand tremor (6-11 Hz, a few tenths of a milliradian) plus a slow drift."""
    t = np.arange(n) * dt
    out = np.zeros((n, joints))
    for j in range(joints):
        for _ in range(3):
            f = rng.uniform(6.0, 11.0)
            amp = rng.uniform(1e-4, 4e-4)
            out[:, j] += amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        # drift: a random walk low-passed to below ~0.5 Hz
        walk = np.cumsum(rng.normal(0, 1, n)) * np.sqrt(dt)
        k = max(1, int(1.0 / dt))
        smooth = np.convolve(walk, np.ones(k) / k, mode="same")
        out[:, j] += 1.5e-3 * (smooth - smooth[0]) / max(1.0, np.abs(smooth).max())
    return out


class ArmTrack:
    """Builds one arm's task-space script, then its joint trajectory."""

    def __init__(self, ik: ArmIK, start: Key):
        self.ik = ik
        self.keys: list[Key] = [start]
        self.worst_ik = 0.0  # largest grasp-point error of the IK along the plan (m)

    def go(self, duration: float, pos, R, opening: float, hold: float = 0.0, straight: bool = False) -> None:
        self.keys.append(Key(duration, np.asarray(pos, float), R, opening, hold, straight))

    def wait(self, seconds: float) -> None:
        last = self.keys[-1]
        self.keys.append(Key(seconds, last.pos, last.R, last.opening, straight=True))

    def grip(self, opening: float, duration: float, hold: float = 0.0) -> None:
        last = self.keys[-1]
        self.keys.append(Key(duration, last.pos, last.R, opening, hold, straight=True))

    def _key_joints(self) -> list[np.ndarray]:
        """IK at every key, each warm-started from the one before (restarts if it gets stuck)."""
        rng = np.random.default_rng(0)  # restarts are part of the solver, not of the person
        out = [np.array(START_ARM_POSE)]
        for k in self.keys[1:]:
            best, best_err = self.ik.solve(k.pos, k.R, out[-1], iters=200)
            tries = 0
            while best_err > 3e-3 and tries < 20:
                q0 = np.clip(out[-1] + rng.normal(0, 0.6, 6), self.ik.lo, self.ik.hi)
                q, err = self.ik.solve(k.pos, k.R, q0, iters=200)
                if err < best_err:
                    best, best_err = q, err
                tries += 1
            self.worst_ik = max(self.worst_ik, best_err)
            out.append(best)
        return out

    @property
    def end_time(self) -> float:
        return sum(k.duration + k.hold for k in self.keys[1:]) + self.keys[0].hold

    def samples(self, dt: float, total: float) -> tuple[np.ndarray, np.ndarray]:
        """Joint angles (N, 6) and gripper openings (N,) at every dt until ``total``."""
        n = int(round(total / dt)) + 1
        times = np.arange(n) * dt
        # each key's arrival and departure times
        segs = []
        t = self.keys[0].hold
        for a, b in zip(self.keys[:-1], self.keys[1:]):
            segs.append((t, t + b.duration, a, b))
            t += b.duration + b.hold
        key_q = self._key_joints()
        q = np.zeros((n, 6))
        opening = np.zeros(n)
        prev = key_q[0]
        for i, ti in enumerate(times):
            j, s = len(segs) - 1, 1.0
            for k, (t0, t1, _, _) in enumerate(segs):
                if ti < t0:
                    j, s = k, 0.0
                    break
                if ti <= t1:
                    j, s = k, float(_min_jerk(np.array((ti - t0) / max(t1 - t0, 1e-9))))
                    break
            _, _, a, b = segs[j]
            if b.straight:
                pos = (1 - s) * a.pos + s * b.pos
                R = _slerp_R(a.R, b.R, s)
                prev, err = self.ik.solve(pos, R, prev, iters=30)
                self.worst_ik = max(self.worst_ik, err)
            else:
                prev = (1 - s) * key_q[j] + s * key_q[j + 1]
            q[i] = prev
            opening[i] = (1 - s) * a.opening + s * b.opening
        return q, opening


class ScriptedOperator:
    """Plans leader trajectories for a task from a seed (deterministic)."""

    def __init__(self, task: str, seed: int, scene: SimScene | None = None, retry_rate: float = 0.3):
        self.task, self.seed = task, seed
        self.spec = get_task(task)
        self.poses = self.spec.start_poses(seed)  # where the objects start: what the person sees
        self.scene = scene if scene is not None and scene.task == task else SimScene(task)
        self.retry_rate = retry_rate
        self.rng = np.random.default_rng([seed, 0x0FE7])
        self.pace = self.rng.uniform(0.85, 1.2)  # this person's speed on this take
        self.retries = 0
        self.events: list[tuple[float, str]] = []

    # --- what every task's script uses ------------------------------------------------------------
    def dur(self, nominal: float) -> float:
        """A move's duration: nominal x pace x per-move variation."""
        return nominal * self.pace * self.rng.uniform(0.9, 1.15)

    def jitter(self, scale: float, z: bool = True) -> np.ndarray:
        """An aim error (m, normal with this spread on each axis; none up/down with ``z=False``)."""
        j = self.rng.normal(0, scale, 3)
        if not z:
            j[2] = 0.0
        return j

    def note(self, t: float, text: str) -> None:
        """An event of the plan at ``t`` seconds (shown with the take; tests read them)."""
        self.events.append((t, text))

    def retry(self) -> bool:
        """Whether this attempt goes wrong first (counted as a retry of the plan)."""
        if self.rng.random() < self.retry_rate:
            self.retries += 1
            return True
        return False

    def _start(self, ik: ArmIK) -> Key:
        pos, R = ik.pose(np.array(START_ARM_POSE))
        return Key(0.0, pos, R, OPEN * 0.35, hold=self.rng.uniform(0.3, 0.8))

    def pick(self, arm: ArmTrack, target: np.ndarray, R: np.ndarray, name: str) -> None:
        """Hover, (maybe a too-early close and retry), descend, close, lift."""
        hover = target + np.array([0, 0, self.rng.uniform(0.07, 0.11)]) + self.jitter(0.012, z=False)
        arm.go(self.dur(1.6), hover, R, OPEN, hold=self.dur(0.15))
        aim = target + self.jitter(0.002, z=False)
        if self.retry():
            self.note(arm.end_time, f"{name}: closed too early, retrying")
            early = aim + np.array([0, 0, MISS_HEIGHT + self.rng.uniform(0.0, 0.015)])
            arm.go(self.dur(0.8), early, R, OPEN, hold=self.dur(0.1), straight=True)
            arm.grip(CLOSED, self.dur(0.5), hold=self.dur(0.4))
            arm.grip(OPEN, self.dur(0.4), hold=self.dur(0.3))
        arm.go(self.dur(1.0), aim, R, OPEN, hold=self.dur(0.25), straight=True)
        arm.grip(CLOSED, self.dur(0.6), hold=self.dur(0.35))
        self.note(arm.end_time, f"{name}: grasped")

    def plan(self) -> LeaderPlan:
        iks = {side: ArmIK(self.scene, side) for side in SIDES}
        tracks = {side: ArmTrack(iks[side], self._start(iks[side])) for side in SIDES}
        self.spec.operate(self, tracks["left"], tracks["right"])
        total = max(t.end_time for t in tracks.values()) + 0.5
        n = int(round(total / PLAN_DT)) + 1
        q = np.zeros((n, 2, 7))
        for k, side in enumerate(SIDES):
            joints, opening = tracks[side].samples(PLAN_DT, total)
            q[:, k, :6] = joints + _tremor(self.rng, n, PLAN_DT, 6)
            grip_noise = _tremor(self.rng, n, PLAN_DT, 1)[:, 0] * 5
            q[:, k, 6] = [leader_gripper_from_opening(o) for o in opening] + grip_noise
        return LeaderPlan(self.task, self.seed, PLAN_DT, q, self.retries, sorted(self.events))


def plan_episode(task: str, seed: int, scene: SimScene | None = None, retry_rate: float = 0.3) -> LeaderPlan:
    return ScriptedOperator(task, seed, scene, retry_rate).plan()

"""Fast closed-loop estimate: trials in a direct MuJoCo loop, faster than real time.

No emulated buses, no world process, no real-time pacing: the policy's targets go straight to
the scene's actuators through the rig's loop's own shaping (:func:`rig.shaping.shape_target`:
joint limits, the per-tick step limit), at the rig's rate, for the rig's followers and cameras
(all from its config), the locating camera is rendered and takes the same JPEG round trip, physics steps as
fast as the CPU allows. A trial of 20 s takes a few seconds, so a first success figure reaches
the collector soon after a take is kept. It is labelled "fast sim estimate" everywhere: the
real-time trials through the buses (``rollout.evaluate_in_sim``) confirm it.

It runs in a child process (an OpenGL context of its own, one thread), from the policy's state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rig.train.stats import KIND_LABELS

LABEL = KIND_LABELS["fastsim"]
CAMERA_FPS = 15.0


@dataclass
class FastTrial:
    seed: int
    success: bool
    t_success_s: float | None
    # a failed trial: the first of the task's stages it never reached (its objects' positions, polled);
    # None for a success or a task without stages
    stopped_before: str | None = None


def fast_trials(policy_state: dict, task: str, seeds: list[int], seconds: float = 20.0,
                config: str = "sim-aloha", reference_from: str = "live-render") -> list[FastTrial]:
    """Run one trial per seed in a child process; returns each seed's outcome."""
    from rig.sim.reference import in_render_process

    rows = in_render_process(_run, policy_state, task, list(seeds), float(seconds), config)
    return [FastTrial(**r) for r in rows]


def replay_takes(task: str, takes: list[tuple[int, int, np.ndarray, np.ndarray]], config: str = "sim-aloha"
                 ) -> dict[int, bool]:
    """Replay each take's recorded actions, on time, from its world seed: (index, seed, start q,
    actions) -> whether they do the task. A take labelled failure whose actions do the task was cut
    short or judged late (a world that fell behind real time while recording), not badly shown."""
    from rig.sim.reference import in_render_process

    return in_render_process(_replay, task, takes, config)


class _Replay:
    def __init__(self, k: int, n: int, start_q: np.ndarray, action: np.ndarray, rate_hz: float):
        from rig.train.data import action_chunks
        from rig.train.model import PolicyConfig

        self.cfg = PolicyConfig(n=n, k=k, cameras=(), image_hw=(60, 80))
        self.start_q = start_q
        self.chunks = action_chunks(action, k)
        self.rate_hz = rate_hz
        self.clock = None

    def predict_chunk(self, images, q, dq):
        return self.chunks[min(int(round(self.clock() * self.rate_hz)), len(self.chunks) - 1)]


def _replay(task: str, takes: list, config: str) -> dict[int, bool]:
    from rig.config import load_config

    cfg = load_config(config)
    clock = [0.0]
    out = {}
    for index, seed, start_q, action in takes:
        p = _Replay(20, action.shape[1], start_q, action, cfg.rate_hz)
        p.clock = lambda: clock[0]
        out[index] = _trial(p, cfg, task, seed, len(action) / cfg.rate_hz + 1.0, clock).success
    return out


def _policy_from_state(state: dict):
    """The policy a state describes, through the policy file's one registry of kinds."""
    from rig.train.policy_file import KINDS

    return KINDS[state.get("kind") or "visuomotor"](state, "cpu")


def _run(state: dict, task: str, seeds: list[int], seconds: float, config: str) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from rig.config import load_config

    cfg = load_config(config)
    policy = _policy_from_state(state)
    sim_clock = [0.0]
    if hasattr(policy, "clock"):
        policy.clock = lambda: sim_clock[0]  # the policy's time is the simulation's
    return [asdict(_trial(policy, cfg, task, seed, seconds, sim_clock)) for seed in seeds]


def _trial(policy, cfg, task: str, seed: int, seconds: float, sim_clock: list[float]) -> FastTrial:
    import mujoco

    from rig.shaping import TargetLimits, shape_target
    from rig.sim.hardware import (
        FOLLOWER_GRIPPER_CLOSED_TICKS,
        FOLLOWER_GRIPPER_OPEN_TICKS,
        VELOCITY_UNIT_RAD_S,
        follower_gripper_from_finger,
        ticks_from_angle,
    )
    from rig.sim.reference import capture_reference_here, finger_from_normalized, pose_scene
    from rig.sim.scene import SimScene
    from rig.sim.world import FINGER_DRAD_DM
    from rig.sources import PolicySource
    from rig.train.rollout import camera_specs

    scene = _trial.scenes.get(task) if hasattr(_trial, "scenes") else None
    if scene is None:
        scene = SimScene(task)
        _trial.scenes = {task: scene}  # type: ignore[attr-defined]
    m, d = scene.model, scene.data
    period = 1.0 / cfg.rate_hz
    sub = max(1, int(round(period / m.opt.timestep)))
    limits = TargetLimits.of(cfg.followers, cfg.safety)
    # each follower's values in the rig's state vector: its joints, then its gripper (as the loop has them)
    rows, at = [], 0
    for a in cfg.followers:
        rows.append((a.side, slice(at, at + len(a.joints)), at + len(a.joints) if a.gripper is not None else None))
        at += a.n_values
    n = at
    cams = list(policy.cfg.cameras)
    hw = tuple(policy.cfg.image_hw)
    size = {c.name: (c.width, c.height) for c in camera_specs(cfg, cams)}
    if getattr(policy, "needs_reference", False) and policy.reference is None:
        w, h = size[cams[0]]
        policy.reference = capture_reference_here(task, cams[0], w, h, hw, policy.start_q)
    renderers = {}
    for c in cams:
        w, h = size[c]
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, w)
        m.vis.global_.offheight = max(m.vis.global_.offheight, h)
        r = mujoco.Renderer(m, h, w)
        r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        renderers[c] = r
    views = [_RenderedCamera(c, *size[c], renderers[c], d) for c in cams]

    def set_goal(target: np.ndarray) -> None:
        for side, arm, grip in rows:
            finger = finger_from_normalized(target[grip]) if grip is not None else None
            scene.set_arm_goal(side, target[arm], finger)

    span = FOLLOWER_GRIPPER_OPEN_TICKS - FOLLOWER_GRIPPER_CLOSED_TICKS

    def bus_velocity(rad_s):
        """As the servos report it: Present Velocity in whole units of 0.229 rpm. The takes' velocities
        came through the bus so; MuJoCo's exact (and jittery) ones are inputs a policy never saw."""
        return np.rint(np.asarray(rad_s) / VELOCITY_UNIT_RAD_S) * VELOCITY_UNIT_RAD_S

    def read() -> tuple[np.ndarray, np.ndarray]:
        q, dq = np.zeros(n), np.zeros(n)
        for side, arm, grip in rows:
            a, v = scene.arm_qpos(side), scene.arm_qvel(side)
            j = arm.stop - arm.start
            q[arm], dq[arm] = a[:j], bus_velocity(v[:j])
            if grip is not None:
                q[grip] = (ticks_from_angle(follower_gripper_from_finger(a[-1])) - FOLLOWER_GRIPPER_CLOSED_TICKS) / span
                dq[grip] = bus_velocity(v[-1] * FINGER_DRAD_DM) * 4096 / (2 * np.pi) / span
        return q, dq

    scene.reset(seed)
    start = np.asarray(policy.start_q if policy.start_q is not None else read()[0], float)
    pose_scene(scene, start)  # the loop ramps the followers to the takes' start pose before a trial
    set_goal(start)
    mujoco.mj_forward(m, d)
    scene.step(int(0.5 / m.opt.timestep))  # settle, as the loop does
    sim_clock[0] = 0.0
    # The rig's own policy source schedules the chunks (a new one every ``execute`` ticks, or
    # ACT's ensembling), as in the real-time trials and on the arms: one mechanism, not a copy.
    loop = _Followers(n)
    source = PolicySource(policy, views)
    source.begin(loop, 0)
    if hasattr(policy, "reset"):
        policy.reset(seed)
    target = np.clip(read()[0], limits.lower, limits.upper)
    want = np.zeros(n)
    t_ok = None
    spec, reached = scene.spec, 0  # the furthest stage the objects showed (TaskSpec.progress)
    n_ticks = int(seconds / period)
    poll = max(1, int(round(0.25 / period)))
    for tick in range(n_ticks):
        sim_clock[0] = tick * period
        loop.follower_q, loop.follower_dq = (v.astype(np.float32) for v in read())
        want[:] = source.target(loop, tick)
        shape_target(want, target, limits.lower, limits.upper, limits.max_step)  # the tick's own clamps
        set_goal(target)
        scene.step(sub)
        if tick % poll == 0:
            if scene.success():
                t_ok = round((tick + 1) * period, 2)
                break
            reached = max(reached, spec.stage_reached(scene.object_positions()))
    for r in renderers.values():
        r.close()
    stopped = None if t_ok is not None or not spec.stages else spec.stages[reached].name
    return FastTrial(seed, t_ok is not None, t_ok, stopped)


class _Followers:
    """What a command source reads of the loop: the followers' state, this tick."""

    def __init__(self, n: int):
        self.n = n
        self.follower_q = np.zeros(n, np.float32)
        self.follower_dq = np.zeros(n, np.float32)


class _RenderedCamera:
    """A camera of the direct loop: each ``latest()`` renders the scene now (only asked for when
    the policy predicts), as an RGB frame the policy source JPEG-encodes like a live one."""

    def __init__(self, name: str, width: int, height: int, renderer, data):
        self.name, self.width, self.height = name, width, height
        self._renderer, self._data = renderer, data
        self._index = 0

    def latest(self):
        from types import SimpleNamespace

        self._renderer.update_scene(self._data, camera=self.name)
        self._index += 1
        return SimpleNamespace(index=self._index, encoding="rgb8", data=self._renderer.render())

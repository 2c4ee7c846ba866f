"""Fast closed-loop estimate: trials in a direct MuJoCo loop, faster than real time.

No emulated buses, no world process, no real-time pacing: the policy's targets go straight to
the scene's actuators with the same clamps as the rig's loop (joint limits, the per-tick step
limit), the locating camera is rendered and takes the same JPEG round trip, physics steps as
fast as the CPU allows. A trial of 20 s takes a few seconds, so a first success figure reaches
the collector soon after a take is kept. It is labelled "fast sim estimate" everywhere: the
real-time trials through the buses (``rollout.evaluate_in_sim``) confirm it.

It runs in a child process (an OpenGL context of its own, one thread), from the policy's state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LABEL = "fast sim estimate"
CAMERA_FPS = 15.0


@dataclass
class FastTrial:
    seed: int
    success: bool
    t_success_s: float | None


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
    def __init__(self, k: int, n: int, start_q: np.ndarray, action: np.ndarray):
        from rig.train.data import action_chunks
        from rig.train.model import PolicyConfig

        self.cfg = PolicyConfig(n=n, k=k, cameras=(), image_hw=(60, 80))
        self.start_q = start_q
        self.chunks = action_chunks(action, k)
        self.clock = None

    def predict_chunk(self, images, q, dq):
        return self.chunks[min(int(round(self.clock() * 50.0)), len(self.chunks) - 1)]


def _replay(task: str, takes: list, config: str) -> dict[int, bool]:
    from rig.config import load_config

    cfg = load_config(config)
    clock = [0.0]
    out = {}
    for index, seed, start_q, action in takes:
        p = _Replay(20, action.shape[1], start_q, action)
        p.clock = lambda: clock[0]
        out[index] = _trial(p, cfg, task, seed, len(action) / cfg.rate_hz + 1.0, clock).success
    return out


def _policy_from_state(state: dict):
    if state.get("kind") == "scripted":
        from rig.train.rollout import ScriptedPolicy

        return ScriptedPolicy(state["task"], k=state.get("k", 20))
    if state.get("kind") == "quick":
        from rig.train.quick import QuickPolicy

        return QuickPolicy.from_state(state)
    from rig.train.trainer import TrainedPolicy

    return TrainedPolicy.from_state(state)


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

    from rig.sim.hardware import (
        FOLLOWER_GRIPPER_CLOSED_TICKS,
        FOLLOWER_GRIPPER_OPEN_TICKS,
        VELOCITY_UNIT_RAD_S,
        follower_gripper_from_finger,
        ticks_from_angle,
    )
    from rig.sim.reference import capture_reference_here, finger_from_normalized, pose_scene
    from rig.sim.scene import SIDES, SimScene
    from rig.sim.world import FINGER_DRAD_DM
    from rig.sources import PolicySource

    scene = _trial.scenes.get(task) if hasattr(_trial, "scenes") else None
    if scene is None:
        scene = SimScene(task)
        _trial.scenes = {task: scene}  # type: ignore[attr-defined]
    m, d = scene.model, scene.data
    period = 1.0 / cfg.rate_hz
    sub = max(1, int(round(period / m.opt.timestep)))
    lower = np.concatenate([_limits(a)[0] for a in cfg.followers])
    upper = np.concatenate([_limits(a)[1] for a in cfg.followers])
    max_step = np.concatenate([[cfg.safety.max_step_rad] * len(a.joints) + ([cfg.safety.max_gripper_step] if a.gripper
                                                                              else []) for a in cfg.followers])
    cams = list(policy.cfg.cameras)
    hw = tuple(policy.cfg.image_hw)
    specs = {c.name: c.options for c in cfg.cameras}
    size = {c: (int(specs.get(c, {}).get("width", 320)), int(specs.get(c, {}).get("height", 240))) for c in cams}
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
        for k, side in enumerate(SIDES):
            row = target[7 * k: 7 * k + 7]
            scene.set_arm_goal(side, row[:6], finger_from_normalized(row[6]))

    span = FOLLOWER_GRIPPER_OPEN_TICKS - FOLLOWER_GRIPPER_CLOSED_TICKS

    def bus_velocity(rad_s):
        """As the servos report it: Present Velocity in whole units of 0.229 rpm. The takes' velocities
        came through the bus so; MuJoCo's exact (and jittery) ones are inputs a policy never saw."""
        return np.rint(np.asarray(rad_s) / VELOCITY_UNIT_RAD_S) * VELOCITY_UNIT_RAD_S

    def read() -> tuple[np.ndarray, np.ndarray]:
        q, dq = np.zeros(14), np.zeros(14)
        for k, side in enumerate(SIDES):
            a, v = scene.arm_qpos(side), scene.arm_qvel(side)
            q[7 * k: 7 * k + 6], dq[7 * k: 7 * k + 6] = a[:6], bus_velocity(v[:6])
            q[7 * k + 6] = (ticks_from_angle(follower_gripper_from_finger(a[6])) - FOLLOWER_GRIPPER_CLOSED_TICKS) / span
            dq[7 * k + 6] = bus_velocity(v[6] * FINGER_DRAD_DM) * 4096 / (2 * np.pi) / span
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
    loop = _Followers(len(lower))
    source = PolicySource(policy, views)
    source.begin(loop, 0)
    if hasattr(policy, "reset"):
        policy.reset(seed)
    target = np.clip(read()[0], lower, upper)
    t_ok = None
    n_ticks = int(seconds / period)
    poll = max(1, int(round(0.25 / period)))
    for tick in range(n_ticks):
        sim_clock[0] = tick * period
        loop.follower_q, loop.follower_dq = (v.astype(np.float32) for v in read())
        want = np.clip(source.target(loop, tick), lower, upper)
        target += np.clip(want - target, -max_step, max_step)
        set_goal(target)
        scene.step(sub)
        if tick % poll == 0 and scene.success():
            t_ok = round((tick + 1) * period, 2)
            break
    for r in renderers.values():
        r.close()
    return FastTrial(seed, t_ok is not None, t_ok)


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


def _limits(arm) -> tuple[np.ndarray, np.ndarray]:
    lo = [j.lower if j.lower is not None else -np.inf for j in arm.joints]
    hi = [j.upper if j.upper is not None else np.inf for j in arm.joints]
    if arm.gripper is not None:
        lo.append(0.0)
        hi.append(1.0)
    return np.array(lo), np.array(hi)

"""Closed-loop evaluation: the trained policy drives the followers of the simulated world.

The world runs as it does for recording (its own process, emulated Dynamixel buses, rendered
cameras in shared memory); the policy replaces the leaders. Our own loop ticks at the rig's rate
against absolute deadlines: read both followers, every ``execute`` ticks grab the latest frame
of each camera and predict the next K actions, send the next action of the chunk with the same
joint-limit and per-tick step clamps as teleop. Trial i uses world seed ``seed0 + i`` (object
placement), so N trials are reproducible; success is the world's own check, polled off the loop.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from drivers.dynamixel.errors import DynamixelError
from recorder.codec import encode_jpeg
from rig.train import TrainError
from rig.train.data import _reduction, decode_small
from rig.train.model import PolicyConfig
from rig.train.trainer import TrainedPolicy

SUCCESS_POLL_S = 0.25
SETTLE_S = 0.5  # after a reset: cameras show the new scene, physics settles
ENGAGE_S = 1.0  # ramp to the demonstrations' start pose, as teleop engages before a take


@dataclass
class TrialResult:
    seed: int
    success: bool
    t_success_s: float | None
    ticks: int
    skipped_ticks: int  # a loaded machine: ticks dropped rather than run late in a bunch
    late_ticks: int  # ticks that started more than 10 % of a period late
    missed_reads: int


@dataclass
class RolloutResult:
    task: str
    trials: int
    successes: int
    rate: float
    seeds: list[int]
    seconds: float
    execute: int
    per_trial: list[TrialResult] = field(default_factory=list)
    p99_period_error_ms: float = 0.0
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_trial"] = [asdict(t) for t in self.per_trial]
        return d


def _camera_specs(config, names):
    from rig.sim.world import CameraSpec

    by_name = {c.name: c for c in config.cameras}
    specs = []
    for n in names:
        o = by_name[n].options if n in by_name else {}
        specs.append(CameraSpec(n, int(o.get("width", 320)), int(o.get("height", 240)), float(o.get("fps", 15.0))))
    return specs


def evaluate_in_sim(policy: TrainedPolicy | ScriptedPolicy, task: str = "transfer_cube", trials: int = 10, seed0: int = 1000,
                    seconds: float = 20.0, *, config: str = "sim-aloha", execute: int | None = None,
                    ensemble: float | None = None, progress: Callable[[int, TrialResult], None] | None = None) -> RolloutResult:
    """Run ``trials`` seeded trials of ``task``; a trial succeeds if the world reports success
    at any moment within ``seconds``.

    ``ensemble`` (ACT's temporal ensembling): predict every ``execute`` ticks (default 1) and send, each tick,
    the average of every chunk's action for that tick, the older chunks weighted exp(-m * age)
    heavier, m = ``ensemble``: smoother, and a single bad prediction moves the arm less."""
    from rig.config import load_config

    cfg = load_config(config)
    if cfg.sim is None:
        raise TrainError(f"config {config!r} is not a simulated rig; closed-loop evaluation needs one (sim-aloha)")
    _give_reference(policy, cfg, task)
    with _one_torch_thread():
        return _evaluate(policy, cfg, task, trials, seed0, seconds, execute, ensemble, progress)


def _give_reference(policy, cfg, task: str) -> None:
    """The reference hook: a policy that locates objects against an empty-scene frame
    (``needs_reference``) and has none gets one captured from the world's own model at the
    pose its trials start from (on hardware: the operator's calibration frame)."""
    if getattr(policy, "needs_reference", False) and getattr(policy, "reference", None) is None:
        from rig.sim.reference import capture_reference

        spec = _camera_specs(cfg, policy.cfg.cameras[:1])[0]
        policy.reference = capture_reference(task, spec.name, spec.width, spec.height, tuple(policy.cfg.image_hw),
                                             policy.start_q)


@contextlib.contextmanager
def _one_torch_thread():
    """Predictions of one observation gain nothing from more threads, and OpenMP's idle threads
    spin between them, taking the core the world's physics and cameras need."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _evaluate(policy, cfg, task, trials, seed0, seconds, execute, ensemble, progress) -> RolloutResult:
    from drivers.cameras.sim import SimCamera
    from rig.arms import Follower
    from rig.sim.launch import start_world

    # ensembling averages overlapping chunks: by default a new one every tick, as ACT
    execute = min(policy.cfg.k, execute or (1 if ensemble is not None else max(1, policy.cfg.k // 2)))
    t_wall = time.monotonic()
    specs = _camera_specs(cfg, policy.cfg.cameras)
    world = start_world(task, seed0, cameras=specs, operator=False, ring_prefix=f"rig-eval-{os.getpid()}-")
    followers: list[Follower] = []
    cams: list[SimCamera] = []
    try:
        for arm in cfg.followers:
            f = Follower(arm, world.ports[arm.port[4:]]).open()
            followers.append(f)
            _retry(f.prepare)
        for s in specs:
            info = world.cameras[s.name]
            cam = SimCamera(s.name, ring=info["ring"], width=info["width"], height=info["height"], fps=info["fps"])
            cam.start()
            cams.append(cam)
        loop = _Loop(policy, cfg, followers, cams, execute, ensemble)
        results, errors = [], []
        for i in range(trials):
            seed = seed0 + i
            world.reset(task, seed)
            if isinstance(policy, ScriptedPolicy):
                policy.begin(seed)
            elif hasattr(policy, "reset"):
                policy.reset(seed)  # a policy with state: time, objects and phase start again
            time.sleep(SETTLE_S)
            r = loop.trial(world, seed, seconds)
            results.append(r)
            errors.extend(loop.period_errors)
            if progress is not None:
                progress(i, r)
    finally:
        for f in followers:
            with contextlib.suppress(Exception):
                f.make_safe(hold=False)
            with contextlib.suppress(Exception):
                f.close()
        for c in cams:
            with contextlib.suppress(Exception):
                c.stop()
        world.close()
    ok = sum(r.success for r in results)
    return RolloutResult(task, trials, ok, ok / max(1, trials), [r.seed for r in results], seconds, execute,
                         results, float(np.percentile(np.abs(errors), 99)) / 1e6 if errors else 0.0,
                         time.monotonic() - t_wall)


def _retry(fn: Callable[[], None], tries: int = 5, pause_s: float = 1.0) -> None:
    """Setup is not time-critical: ride out a machine busy enough to drop a reply."""
    for i in range(tries):
        try:
            return fn()
        except DynamixelError:
            if i == tries - 1:
                raise
            time.sleep(pause_s)


class ScriptedPolicy:
    """The simulated world's scripted operator as a policy: the seed's planned leader motion,
    mapped to follower targets through the leaders' calibrations as teleop maps it.

    Not learned: it is the reference a learned policy is measured against. Run through the
    same loop, clamps and world, it shows what the success check says of right actions (a
    0 % policy then means the policy failed, not the harness). ``evaluate_in_sim`` tells it
    each trial's seed through :meth:`begin`."""

    def __init__(self, task: str = "transfer_cube", config: str = "sim-aloha", k: int = 20):
        from rig.arms import arm_calibration
        from rig.config import load_config
        from rig.sim.scene import SimScene

        cfg = load_config(config)
        self.task = task
        self.period_s = 1.0 / cfg.rate_hz
        self.cals = [arm_calibration(a) for a in cfg.leaders]
        self.cfg = PolicyConfig(n=sum(a.n_values for a in cfg.leaders), k=k, cameras=())
        self.start_q = None
        self._scene = SimScene(task)
        self._plan = None
        self._t0: float | None = None  # the trial's first prediction: the plan's time zero
        self.clock = time.monotonic  # the fast estimate's direct loop gives it the simulation's time

    def state(self) -> dict:
        return {"kind": "scripted", "task": self.task, "k": self.cfg.k}

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.begin(seed)

    def begin(self, seed: int) -> None:
        from rig.sim.operator import plan_episode

        self._plan = plan_episode(self.task, seed, self._scene)
        self._t0 = None

    def predict_chunk(self, images: np.ndarray, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        from rig.sim.hardware import ticks_from_angle

        if self._plan is None:
            raise TrainError("ScriptedPolicy.begin(seed) was not called before the trial")
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        out = np.zeros((self.cfg.k, self.cfg.n), np.float32)
        for j in range(self.cfg.k):
            leaders = self._plan.at(now - self._t0 + j * self.period_s)  # (arms, joints + gripper) angles
            row: list[float] = []
            for angles, cal in zip(leaders, self.cals):
                ticks = np.array([ticks_from_angle(a) for a in angles], float)
                row += [*cal.to_radians(ticks[:cal.n_joints])]
                if cal.gripper is not None:
                    row.append(cal.gripper_to_normalized(ticks[cal.n_joints]))
            out[j] = row
        return out


class _Loop:
    def __init__(self, policy: TrainedPolicy | ScriptedPolicy, cfg, followers, cams, execute: int, ensemble: float | None = None):
        self.policy = policy
        self.ensemble = ensemble
        self.followers = followers
        self.cams = cams
        self.execute = execute
        self.period_ns = int(round(1e9 / cfg.rate_hz))
        self.slices, start = [], 0
        for f in followers:
            self.slices.append(slice(start, start + f.cfg.n_values))
            start += f.cfg.n_values
        self.n = start
        if self.n != policy.cfg.n:
            raise TrainError(f"the policy predicts {policy.cfg.n} values but the rig's followers have {self.n}")
        self.lower = np.concatenate([f.lower for f in followers])
        self.upper = np.concatenate([f.upper for f in followers])
        step = []
        for f in followers:
            step += [cfg.safety.max_step_rad] * f.n_joints + ([cfg.safety.max_gripper_step] if f.cfg.gripper else [])
        self.max_step = np.array(step)
        self.hw = policy.cfg.image_hw
        self.period_errors: list[int] = []
        self._small = np.zeros((len(cams), *self.hw, 3), np.uint8)  # the latest frames, decoded
        self._seen = [-1] * len(cams)  # their frame indices

    def _images(self) -> np.ndarray:
        if not self.cams:
            return np.zeros((0, *self.hw, 3), np.uint8)
        for i, cam in enumerate(self.cams):
            frame = cam.latest()
            if frame is None:
                raise TrainError(f"camera {cam.name!r} of the simulated world delivers no frames")
            if self._seen[i] == frame.index:
                continue  # cameras run at 15 fps, predictions up to every tick: decode a frame once
            # the same JPEG round trip and down-scaling as the recorded training frames
            blob = encode_jpeg(frame.data) if frame.encoding == "rgb8" else bytes(frame.data)
            self._small[i] = decode_small(blob, self.hw, _reduction(cam.width, cam.height, self.hw))
            self._seen[i] = frame.index
        return self._small

    def _read(self, q: np.ndarray, dq: np.ndarray) -> int:
        missed = 0
        for f, sl in zip(self.followers, self.slices):
            try:
                f.read()
                q[sl], dq[sl] = f.q, f.dq
            except DynamixelError:
                missed += 1  # the last values stand, as in teleop
        return missed

    def _read_all(self, q: np.ndarray, dq: np.ndarray, tries: int = 20) -> None:
        """A read of every follower before moving: a missed one would leave zeros as its pose
        and the first command would swing that arm towards them."""
        for f, sl in zip(self.followers, self.slices):
            _retry(f.read, tries, pause_s=0.02)
            q[sl], dq[sl] = f.q, f.dq

    def _engage(self, pose: np.ndarray, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """Ramp the followers to ``pose`` (the demonstrations start there: teleop engaged onto the
        leaders) and return the last target; the trial starts from the same state as the takes."""
        start = q.copy()
        n = max(1, int(ENGAGE_S * 1e9 / self.period_ns))
        target = start
        for i in range(1, n + 1):
            target = np.clip(start + (pose - start) * (i / n), self.lower, self.upper)
            for f, sl in zip(self.followers, self.slices):
                with contextlib.suppress(DynamixelError):
                    f.command(target[sl])
            time.sleep(self.period_ns / 1e9)
        time.sleep(SETTLE_S)
        self._read_all(q, dq)
        return target

    def trial(self, world, seed: int, seconds: float) -> TrialResult:
        q, dq = np.zeros(self.n), np.zeros(self.n)
        self._read_all(q, dq)
        target = np.clip(q.copy(), self.lower, self.upper)
        if self.policy.start_q is not None:
            target = self._engage(np.asarray(self.policy.start_q, float), q, dq)
        for f in self.followers:
            f.go_hot()
        done = threading.Event()
        stop = threading.Event()
        t_success: list[float] = []
        t0 = time.monotonic()

        def watch():  # the world answers over a pipe: keep that round trip off the control loop
            while not stop.is_set():
                try:
                    if world.success():
                        t_success.append(time.monotonic() - t0)
                        done.set()
                        return
                except Exception:
                    return
                stop.wait(SUCCESS_POLL_S)

        watcher = threading.Thread(target=watch, name="success-watch", daemon=True)
        watcher.start()
        n_ticks = int(seconds * 1e9 / self.period_ns)
        start = time.monotonic_ns() + self.period_ns
        chunk, j = None, 0
        chunks: collections.deque = collections.deque(maxlen=self.policy.cfg.k)  # (tick predicted at, chunk)
        late = missed = ticks = skipped = 0
        self.period_errors = []
        k = 0
        try:
            while k < n_ticks and not done.is_set():
                deadline = start + k * self.period_ns
                now = time.monotonic_ns()
                if deadline > now:
                    time.sleep((deadline - now) / 1e9)
                now = time.monotonic_ns()
                if now - deadline >= self.period_ns:  # a whole period behind: skip, do not bunch up
                    behind = (now - deadline) // self.period_ns
                    skipped += behind
                    k += behind
                    j += behind  # the chunk's actions are tied to time, not to ticks executed
                    deadline += behind * self.period_ns
                self.period_errors.append(now - deadline)
                if now - deadline > self.period_ns // 10:
                    late += 1
                missed += self._read(q, dq)
                if chunk is None or j >= self.execute:
                    chunk, j = self.policy.predict_chunk(self._images(), q.astype(np.float32), dq.astype(np.float32)), 0
                    if self.ensemble is not None:
                        chunks.append((k, chunk))
                want = chunk[j] if self.ensemble is None else _ensembled(chunks, k, self.ensemble)
                want = np.clip(want, self.lower, self.upper)
                j += 1
                target += np.clip(want - target, -self.max_step, self.max_step)
                for f, sl in zip(self.followers, self.slices):
                    with contextlib.suppress(DynamixelError):
                        f.command(target[sl])
                ticks += 1
                k += 1
        finally:
            stop.set()
            watcher.join(timeout=2)
            for f in self.followers:
                f.go_cold()
        ok = bool(t_success)
        return TrialResult(seed, ok, round(t_success[0], 2) if ok else None, ticks, skipped, late, missed)


def _ensembled(chunks, k: int, m: float) -> np.ndarray:
    """The action for tick ``k``: every chunk that covers it, oldest weighted heaviest (as ACT)."""
    acts, ws = [], []
    for age, (k0, c) in enumerate(chunks):
        if 0 <= k - k0 < len(c):
            acts.append(c[k - k0])
            ws.append(np.exp(-m * age))
    w = np.asarray(ws)
    return (np.asarray(acts) * w[:, None]).sum(0) / w.sum()

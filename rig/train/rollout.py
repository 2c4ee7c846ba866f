"""Closed-loop evaluation: the trained policy drives the followers of the simulated world.

The world runs as it does for recording (its own process, emulated Dynamixel buses, rendered
cameras in shared memory); the policy replaces the leaders. Our own loop ticks at the rig's rate
against absolute deadlines: read both followers, every ``execute`` ticks grab the latest frame
of each camera and predict the next K actions, send the next action of the chunk with the same
joint-limit and per-tick step clamps as teleop. Trial i uses world seed ``seed0 + i`` (object
placement), so N trials are reproducible; success is the world's own check, polled off the loop.
"""

from __future__ import annotations

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


def evaluate_in_sim(policy: TrainedPolicy, task: str = "transfer_cube", trials: int = 10, seed0: int = 1000,
                    seconds: float = 20.0, *, config: str = "sim-aloha", execute: int | None = None,
                    progress: Callable[[int, TrialResult], None] | None = None) -> RolloutResult:
    """Run ``trials`` seeded trials of ``task``; a trial succeeds if the world reports success
    at any moment within ``seconds``."""
    from drivers.cameras.sim import SimCamera
    from rig.arms import Follower
    from rig.config import load_config
    from rig.sim.launch import start_world

    cfg = load_config(config)
    if cfg.sim is None:
        raise TrainError(f"config {config!r} is not a simulated rig; closed-loop evaluation needs one (sim-aloha)")
    execute = min(policy.cfg.k, execute or max(1, policy.cfg.k // 2))
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
        loop = _Loop(policy, cfg, followers, cams, execute)
        results, errors = [], []
        for i in range(trials):
            seed = seed0 + i
            world.reset(task, seed)
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


class _Loop:
    def __init__(self, policy: TrainedPolicy, cfg, followers, cams, execute: int):
        self.policy = policy
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

    def _images(self) -> np.ndarray:
        out = []
        for cam in self.cams:
            frame = cam.latest()
            if frame is None:
                raise TrainError(f"camera {cam.name!r} of the simulated world delivers no frames")
            rgb = frame.data
            # the same JPEG round trip and down-scaling as the recorded training frames
            blob = encode_jpeg(rgb) if frame.encoding == "rgb8" else bytes(frame.data)
            out.append(decode_small(blob, self.hw, _reduction(cam.width, cam.height, self.hw)))
        return np.stack(out)

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
                want = np.clip(chunk[j], self.lower, self.upper)
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

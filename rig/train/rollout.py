"""Closed-loop evaluation: the trained policy drives the followers of the simulated world.

The world runs as it does for recording (its own process, emulated Dynamixel buses, rendered
cameras in shared memory); the policy replaces the leaders. The rig's one control loop
(rig/loop.py) drives the followers with a policy source (rig/sources.py): every ``execute``
ticks it grabs the latest frame of each camera and predicts the next K actions; each tick sends
the chunk's action through the same parallel reads, joint limits, step clamp, alert checks and
deadlines as teleop. Trial i uses world seed ``seed0 + i`` (object placement), so N trials are
reproducible; success is the world's own check, polled off the loop.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from rig.train import TrainError
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


def camera_specs(config, names):
    """The simulated cameras ``names`` as the rig's config sizes them (320x240 at 15 fps unless it says)."""
    from rig.sim.world import CameraSpec

    by_name = {c.name: c for c in config.cameras}
    specs = []
    for n in names:
        o = by_name[n].options if n in by_name else {}
        specs.append(CameraSpec(n, int(o.get("width", 320)), int(o.get("height", 240)), float(o.get("fps", 15.0))))
    return specs


def evaluate_in_sim(policy: TrainedPolicy | ScriptedPolicy, task: str = "transfer_cube", trials: int = 10, seed0: int = 1000,
                    seconds: float = 20.0, *, config: str = "sim-aloha", execute: int | None = None,
                    ensemble: float | None = None, progress: Callable[[int, TrialResult], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> RolloutResult:
    """Run ``trials`` seeded trials of ``task``; a trial succeeds if the world reports success
    at any moment within ``seconds``.

    ``ensemble`` (ACT's temporal ensembling): predict every ``execute`` ticks (default 1) and send, each tick,
    the average of every chunk's action for that tick, the older chunks weighted exp(-m * age)
    heavier, m = ``ensemble``: smoother, and a single bad prediction moves the arm less.

    ``should_stop``: asked while a trial runs; when it says so the trial ends at once and no more
    start (the result then counts the trials that ran)."""
    from rig.config import load_config

    cfg = load_config(config)
    if cfg.sim is None:
        raise TrainError(f"config {config!r} is not a simulated rig; closed-loop evaluation needs one (sim-aloha)")
    capture_reference(policy, cfg, task)
    with _one_torch_thread():
        return _evaluate(policy, cfg, task, trials, seed0, seconds, execute, ensemble, progress, should_stop)


def capture_reference(policy, cfg, task: str) -> None:
    """The reference hook: a policy that locates objects against an empty-scene frame
    (``needs_reference``) and has none gets one captured from the world's own model at the
    pose its trials start from (on hardware: the operator's calibration frame)."""
    if getattr(policy, "needs_reference", False) and getattr(policy, "reference", None) is None:
        from rig.sim.reference import capture_reference

        spec = camera_specs(cfg, policy.cfg.cameras[:1])[0]
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


def _evaluate(policy, cfg, task, trials, seed0, seconds, execute, ensemble, progress, should_stop=None) -> RolloutResult:
    from drivers.cameras.sim import SimCamera
    from rig.arms import Follower
    from rig.loop import ControlLoop
    from rig.sim.launch import start_world
    from rig.sources import chunk_schedule

    execute, ensemble = chunk_schedule(policy, execute, ensemble)
    t_wall = time.monotonic()
    specs = camera_specs(cfg, policy.cfg.cameras)
    world = start_world(task, seed0, cameras=specs, operator=False, ring_prefix=f"rig-eval-{os.getpid()}-")
    followers: list[Follower] = []
    cams: list[SimCamera] = []
    loop = None
    try:
        for arm in cfg.followers:
            f = Follower(arm, world.ports[arm.port[4:]]).open()
            followers.append(f)
        for s in specs:
            info = world.cameras[s.name]
            cam = SimCamera(s.name, ring=info["ring"], width=info["width"], height=info["height"], fps=info["fps"])
            cam.start()
            cams.append(cam)
        if sum(f.cfg.n_values for f in followers) != policy.cfg.n:
            raise TrainError(f"the policy predicts {policy.cfg.n} values but the rig's followers have "
                             f"{sum(f.cfg.n_values for f in followers)}")
        loop = ControlLoop(cfg, [], followers)  # no leaders: the policy is the only source
        loop.prepare()
        results, errors = [], []
        for i in range(trials):
            if should_stop is not None and should_stop():
                break
            seed = seed0 + i
            world.reset(task, seed)
            if isinstance(policy, ScriptedPolicy):
                policy.begin(seed)
            elif hasattr(policy, "reset"):
                policy.reset(seed)  # a policy with state: time, objects and phase start again
            time.sleep(SETTLE_S)
            r = _trial(loop, policy, cams, world, seed, seconds, execute, ensemble, should_stop)
            results.append(r)
            errors.extend(loop.stats.period_errors_ns())
            if progress is not None:
                progress(i, r)
    finally:
        if loop is not None:
            with contextlib.suppress(Exception):
                loop.shutdown()  # followers stop where they are, torque off
        else:
            for f in followers:
                with contextlib.suppress(Exception):
                    f.make_safe(hold=False)
        for f in followers:
            with contextlib.suppress(Exception):
                f.close()
        for c in cams:
            with contextlib.suppress(Exception):
                c.stop()
        world.close()
    ok = sum(r.success for r in results)
    return RolloutResult(task, len(results), ok, ok / max(1, len(results)), [r.seed for r in results], seconds, execute,
                         results, float(np.percentile(np.abs(errors), 99)) / 1e6 if errors else 0.0,
                         time.monotonic() - t_wall)


def _trial(loop, policy, cams, world, seed: int, seconds: float, execute: int, ensemble: float | None,
           should_stop: Callable[[], bool] | None = None) -> TrialResult:
    """One trial on the control loop: from where the reset left the followers (or ramped to the
    policy's start pose, as teleop engaged before the takes), the policy drives for ``seconds``
    or until the world reports success."""
    from rig.loop import LoopStats
    from rig.sources import PolicySource, Pose

    loop.sync()
    if policy.start_q is not None:
        loop.use(Pose(np.asarray(policy.start_q, float)), engage_s=ENGAGE_S)
        _run_loop(loop, ENGAGE_S + SETTLE_S)
    loop.stats = LoopStats(loop.config.rate_hz)  # the trial's own figures
    source = PolicySource(policy, cams, execute, ensemble)  # predicts on its worker, off the loop's tick
    loop.use(source, engage_s=0.0)
    done = threading.Event()
    stop = threading.Event()
    t_success: list[float] = []
    check_failed: list[str] = []
    t0 = time.monotonic()

    def watch():  # the world answers over a pipe: keep that round trip off the control loop
        while not stop.is_set():
            if should_stop is not None and should_stop() or source.failure is not None:
                done.set()  # ends the trial: the caller has something newer to do, or the policy failed
                return
            try:
                if world.success():
                    t_success.append(time.monotonic() - t0)
                    done.set()
                    return
            except Exception as exc:  # a world that cannot answer is no measurement: say so after the loop
                check_failed.append(f"{type(exc).__name__}: {exc}")
                done.set()
                return
            stop.wait(SUCCESS_POLL_S)

    watcher = threading.Thread(target=watch, name="success-watch", daemon=True)
    watcher.start()
    try:
        _run_loop(loop, seconds, until=done)
    finally:
        stop.set()
        watcher.join(timeout=2)
    if source.failure is not None:  # the followers held; a policy that raises is not a measurement
        raise TrainError(f"trial of seed {seed}: {source.failure}")
    if check_failed:  # counted as a failure it would lower the figure for a reason that is not the policy's
        raise TrainError(f"trial of seed {seed}: the simulated world's success check failed ({check_failed[0]}); "
                         "the figure would be wrong, so none is given: run the trials again")
    s = loop.stats
    ok = bool(t_success)
    return TrialResult(seed, ok, round(t_success[0], 2) if ok else None, s.ticks, s.skipped, s.late,
                       sum(s.bus_errors.values()))


def _run_loop(loop, seconds: float, until: threading.Event | None = None) -> None:
    """Run the loop on its own thread for ``seconds``; a fault or a crash in it is raised here."""
    loop.start(seconds, until)
    try:
        while not loop.join(timeout=0.5):
            pass
    except BaseException:
        loop.stop()
        loop.join(timeout=2)
        raise
    if loop.error is not None:
        raise loop.error
    if loop.fault is not None:
        raise loop.fault


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

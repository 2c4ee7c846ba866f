"""The quick policy: object-centric, phase-aware, a gripper that is decided.

What it sees (no image network: a CPU learns this in minutes):
- the joint positions of the followers, with noise on them in training (0.07 rad) so it cannot
  simply copy the trajectory from the state (velocities are an option, off by default);
- where the task's objects are, located once in the first frame of a fixed camera and then held
  (:mod:`rig.train.locate`; by default a difference against an empty-scene reference, no colour);
- phase: the time since the trial started and, per gripper, the time since it last closed or
  opened (the handover: "the other gripper has held the cube for 0.4 s, let go now").

What it predicts: the next K = 50 actions (1 s; the loop sends 25 of them, then asks again). Arm
joints as absolute targets (L1 loss); each gripper as one of a few levels found in the takes
(closed, holding, open), a classification (cross-entropy): an averaged gripper half-opens, a
decided one opens. Three such networks, trained side by side, vote.

``privileged=True`` gives it the true object positions instead (simulated rig only): the ceiling
that tells "the takes teach the task" apart from "the policy cannot see yet".
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rig.config import DEFAULT_RATE_HZ as RATE_HZ  # one action of a chunk per tick
from rig.downscale import decode_small, jpeg_size, reduction
from rig.train import TrainError, require_torch
from rig.train.data import JOINTS, EpisodeData, JointInfo, action_chunks
from rig.train.locate import Locator, median_reference
from rig.train.model import PolicyConfig
from rig.train.steps import StepPlan, pick_device, run_steps, seeded

torch = require_torch()
nn = torch.nn

PHASE_CLIP_S = 4.0  # times since a gripper event saturate here: only the first seconds matter
TRIAL_S = 20.0  # time since start is scaled by this
LOCATE_HW = (240, 320)  # the locating camera at full size: a 4 cm cube is ~6 px wide there


@dataclass(frozen=True)
class QuickConfig:
    seed: int = 0
    # 50 actions (1 s) a chunk, a new one every 25 ticks: a chunk predicted while the arm still
    # moves carries the pause and the close that follow, where 20 re-decided every 10 ticks
    # hesitated over the cube (fast sim, 38 takes, seeds 1000-1019: 15/20 against 8/20).
    k: int = 50
    hidden: int = 512
    layers: int = 3
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # A seeded step count (the default: the same policy on a quiet or a loaded machine; 5 000 steps
    # of three networks take about 5 minutes on one core of this project's machine), or, with
    # steps=None, as many steps as budget_s allows (the machine timed as it is at the start).
    budget_s: float = 600.0  # with steps: a ceiling (a machine too loaded stops there)
    steps: int | None = 5000
    max_steps: int = 40000
    # rad (and normalized gripper units) added to the positions in training: the copycat guard.
    # With absolute targets the state must not give the trajectory away, yet the left arm must
    # still see where the right gripper holds the cube at the handover. Measured (fast sim, 38
    # takes, three networks): 0.07 rad 34/40 (seeds 1000-1039); 0.10 51/60 and 29/40 (two
    # training seeds); 0.15 46/60. One network, K = 20, privileged positions: 0.01 (with
    # velocities) 0/10, 0.05 4/10, 0.15 7/10, 0.3 3/10, 1.0 2/10.
    q_noise: float = 0.07
    levels: int = 3  # gripper classes
    # "levels": each gripper a classification over ``levels`` commanded values; "regress": its
    # commanded value regressed with the arms (L1), as the prototype did.
    gripper: str = "levels"
    # "grippers": time since start and, per gripper, since it last closed / opened; "time": the time
    # since start only (the prototype).
    phase: str = "grippers"
    # How joint velocities are scaled: "joint" (each joint's own spread) or "pooled" (one scale for
    # every joint). Per joint, a joint that is still in most takes gets a spread of ~0.03 rad/s, and
    # in closed loop its small motions read as 5-14 sigma: the arms oscillated (traced, fast sim);
    # pooled, the reach lands, but success was 0/10 either way. "none" (the default): velocities
    # left out (zeros); with absolute targets and noisy positions, pooled velocities took success
    # from 15/20 to 0/20 (K = 50, fast sim).
    velocity: str = "none"
    camera: str = "top"
    locator: str = "difference"  # or "colour:red" (an explicit colour prior)
    n_objects: int = 1
    privileged: bool = False  # true object positions (simulated rig: the ceiling)
    device: str = "cpu"
    # Arm joints as absolute targets (as ACT; the default: a hold does not drift, and the handover
    # lands where the takes put it) or offsets from the present state (with 14 takes the state
    # guided the reach better, but on 38 clean takes offsets never finished a trial: 0/20).
    absolute: bool = True
    # One thread: an MLP step is ~10 ms; on a shared 2-core machine a second OpenMP thread spins
    # against the other processes and was measured 17x slower per step (227 ms against 13 ms).
    threads: int = 1
    # How the loop sends the chunks (rig.sources.chunk_schedule): a new chunk every ``execute``
    # ticks (None: K/2), or ACT's temporal ensembling with weight m = ``ensemble``.
    execute: int | None = 25
    ensemble: float | None = None
    # Networks trained side by side from their own initialization and noise draws, their
    # predictions averaged: one network's slip at the handover is outvoted (fast sim, 60 unseen
    # seeds, q_noise 0.15: one network 42/60, three 46/60; q_noise 0.10: one 38/60, three 51/60).
    members: int = 3
    # The weights a trial runs are an exponential moving average of the trained ones (decay per
    # step; 0: the last weights), as diffusion_policy's EMA model: the last step's weights swung
    # success from run to run (fast sim, seeds 1000-1039: without, 36/40 for training seed 0 and
    # 29/40 for seed 1 at 0.10 rad; with, 32/40 for both seeds; one run's snapshots at 2.5 and
    # 5.3 min: 16/20 and 11/20).
    ema: float = 0.999
    # Train on takes with a retried grasp (a missed grasp tried again) or leave them out, as the
    # failures are. A policy without memory may learn from a retry to close too high; a retry also
    # shows a recovery. Each task's recipe says which wins there (docs/quick-train.md).
    keep_retried: bool = False


@dataclass
class QuickEpisode:
    """What the quick policy trains on from one take."""

    index: int
    seed: int | None
    success: bool | None
    q: np.ndarray
    dq: np.ndarray
    action: np.ndarray
    t_s: np.ndarray
    first_frame: np.ndarray | None  # (H, W, 3) of the locating camera at the take's start
    joints: JointInfo
    task: str = ""
    rate_hz: float = RATE_HZ
    # the first row whose action is a label: a corrective take's takeover (rig/train/corrective.py);
    # the rows before it are the policy's (context for the phase, never a sample)
    label_from: int = 0

    @property
    def ticks(self) -> int:
        return len(self.q)

    def as_episode(self) -> EpisodeData:
        """The take as training data without frames (the shared checks and the start pose read it)."""
        return EpisodeData(self.index, self.task, self.seed, self.success, self.rate_hz, self.q, self.dq, self.action,
                           self.t_s, {}, {}, self.joints)


def load_quick_episodes(path, task: str | None, camera: str = "top", hw: tuple[int, int] = LOCATE_HW,
                        need_camera: bool = True) -> list[QuickEpisode]:
    """Joint streams and the first frame of ``camera`` of every kept episode (only that frame is decoded)."""
    from recorder import Dataset
    from rig.train.corrective import label_row, label_starts
    from rig.train.data import kept_episodes, load_episode

    ds = Dataset(path)
    out = []
    starts = label_starts(ds, kept_episodes(ds, task))
    for i, start in starts.items():
        if start is None:  # a policy trial nobody corrected: not a demonstration
            continue
        e = load_episode(ds, i, cameras=[])
        label_from = label_row(e, ds.episode(i).attrs) if start else 0
        if label_from >= e.ticks:
            continue
        first = None
        if need_camera:
            ep = ds.episode(i)
            if camera not in ep.cameras:
                have = ", ".join(ep.cameras) or "no cameras at all"
                raise TrainError(f"episode {i} has no camera {camera!r} (it has {have}); the quick policy locates the "
                                 f"objects in that camera: record with it, or choose another with --camera")
            blobs = ep.read_jpeg(camera)
            if not blobs:
                raise TrainError(f"episode {i} has no frame of camera {camera!r}; discard it or record again")
            w, h = jpeg_size(blobs[0])
            first = decode_small(blobs[0], hw, reduction(w, h, hw))
        out.append(QuickEpisode(i, e.seed, e.success, e.q, e.dq, e.action, e.t_s, first, e.joints, e.task, e.rate_hz,
                                label_from))
    return out


# ---- phase ------------------------------------------------------------------------------------------

class PhaseTracker:
    """Time since the trial started and, per gripper, since it was last *commanded* closed / open.

    The command, not the measured opening: a gripper holding a cube reads about as open as one
    starting a take, while the command says plainly "closed". The same code runs over a recorded
    take (every tick, the action sent the tick before) and live (at every prediction, the policy's
    own last command)."""

    def __init__(self, n_grip: int, grippers: bool = True):
        self.n_grip = n_grip
        self.grippers = grippers
        self.reset()

    def reset(self) -> None:
        self.t0: float | None = None
        self.closed: np.ndarray | None = None
        self.since = np.zeros(self.n_grip)  # time of the last change of each gripper

    def __call__(self, t: float, closed: np.ndarray) -> np.ndarray:
        if self.t0 is None:
            self.t0 = t
            self.since[:] = t
        closed = np.asarray(closed, bool)
        if self.closed is not None:
            self.since[closed != self.closed] = t
        self.closed = closed
        if not self.grippers:
            return np.array([(t - self.t0) / TRIAL_S], np.float32)
        age = np.minimum(t - self.since, PHASE_CLIP_S) / PHASE_CLIP_S
        return np.concatenate([[(t - self.t0) / TRIAL_S], np.where(closed, age, 0.0), np.where(closed, 0.0, age)]
                              ).astype(np.float32)

    @property
    def size(self) -> int:
        return 1 + 2 * self.n_grip * self.grippers


# ---- the network ------------------------------------------------------------------------------------

class QuickNet(nn.Module):
    def __init__(self, d_in: int, k: int, n_arm: int, n_grip: int, levels: int, hidden: int, layers: int):
        super().__init__()
        self.k, self.n_arm, self.n_grip, self.levels = k, n_arm, n_grip, levels
        mods: list = []
        d = d_in
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.body = nn.Sequential(*mods)
        self.arm = nn.Linear(d, k * n_arm)
        self.grip = nn.Linear(d, k * n_grip * levels)

    def forward(self, x):
        h = self.body(x)
        b = x.shape[0]
        return self.arm(h).view(b, self.k, self.n_arm), self.grip(h).view(b, self.k, self.n_grip, self.levels)


class QuickEnsemble(nn.Module):
    """``members`` QuickNets: in training each gives its own outputs (:meth:`each`), at run time
    their mean (arm targets averaged, gripper classes by the mean of their log-probabilities)."""

    def __init__(self, members: int, *args):
        super().__init__()
        self.members = nn.ModuleList(QuickNet(*args) for _ in range(members))

    def each(self, xs):
        return [m(x) for m, x in zip(self.members, xs)]

    def forward(self, x):
        outs = [m(x) for m in self.members]
        arm = torch.stack([a for a, _ in outs]).mean(0)
        grip = torch.stack([torch.log_softmax(g, -1) for _, g in outs]).mean(0)
        return arm, grip


def gripper_levels(values: np.ndarray, n: int) -> np.ndarray:
    """The few values a gripper is held at (closed, holding, open ...): 1-D k-means, then each
    cluster's median. A cluster's mean is pulled in by the ramps between levels: "open" came out
    0.947 where the takes open to 1.0, and a left gripper that opens to 0.95 narrows the handover
    (fast sim, the same weights on seeds 1000-1039: 34/40 with the means, 36/40 with the medians)."""
    v = np.asarray(values, np.float64).ravel()
    c = np.quantile(v, np.linspace(0.02, 0.98, n))
    for _ in range(30):
        lab = np.abs(v[:, None] - c[None, :]).argmin(1)
        c = np.array([v[lab == j].mean() if (lab == j).any() else c[j] for j in range(n)])
    lab = np.abs(v[:, None] - c[None, :]).argmin(1)
    return np.sort([np.median(v[lab == j]) if (lab == j).any() else c[j] for j in range(n)])


def _closed_below(levels: np.ndarray) -> float:
    """A command counts as "closed" below the midpoint of the lowest level and the next distinct one."""
    above = levels[levels > levels[0] + 0.05]
    return float((levels[0] + (above[0] if len(above) else levels[0] + 0.5)) / 2)


@dataclass
class QuickStats:
    """Normalization and the gripper levels (everything but the weights)."""

    q_mean: np.ndarray
    q_std: np.ndarray
    dq_mean: np.ndarray
    dq_std: np.ndarray
    d_mean: np.ndarray  # arm targets (absolute) or offsets from the state
    d_std: np.ndarray
    obj_mean: np.ndarray
    obj_std: np.ndarray
    levels: np.ndarray  # (n_grip, L)
    thresholds: np.ndarray  # (n_grip,) a gripper command below this closes it

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> QuickStats:
        return cls(**{k: np.asarray(v, np.float32) for k, v in d.items()})


def takes_reference(eps: Sequence[QuickEpisode], camera: str):
    """An empty-scene frame made from the takes themselves, for a rig that cannot render one (hardware):
    the per-pixel median of their first frames, with the pixels that change from take to take at the
    start (the arms) masked. It travels in the policy file, so the policy locates on the arms as here."""
    from rig.sim.reference import Reference  # a plain record (no MuJoCo)

    frames = [e.first_frame for e in eps]
    ref = median_reference(frames)
    var = np.stack([np.abs(f.astype(np.int16) - ref).max(-1) > 30 for f in frames]).mean(0)
    return Reference(camera, ref, var > 0.3, "median of the takes' first frames")


def object_features(eps: Sequence[QuickEpisode], cfg: QuickConfig, task: str, reference=None) -> tuple[np.ndarray, dict]:
    """(E, 2 * n_objects) per episode, and what was used, for the report.

    ``reference``: the rig's empty-scene frame of the locating camera (a ``Reference`` with its arm
    mask, or an array). Without one, the per-pixel median of the takes' first frames stands in
    (recorded frames only; takes whose arms do not start at the start pose then mislead it)."""
    if cfg.privileged:
        from rig.sim.scene import object_poses

        if any(e.seed is None for e in eps):
            raise TrainError("the privileged ceiling needs each episode's world seed (simulated takes only)")
        return np.array([[c for p in object_poses(task, e.seed) for c in p.pos[:2]] for e in eps], np.float32), \
            {"method": "privileged: the true object positions"}
    loc = Locator(cfg.locator, cfg.camera, cfg.n_objects)
    frames = [e.first_frame for e in eps]
    info: dict = {"method": cfg.locator}
    ref, mask = reference, None
    if ref is not None and hasattr(ref, "frame"):
        ref, mask = ref.frame, ref.arm_mask
        info["reference"] = getattr(reference, "source", "given")
    if loc.needs_reference and ref is None:
        r = takes_reference(eps, cfg.camera)
        ref, mask, info["reference"] = r.frame, r.arm_mask, r.source
    out, missed = [], []
    for e, f in zip(eps, frames):
        got = loc(f, ref, mask)
        if not got.found:
            missed.append(e.index)
        out.append(got.xy.ravel())
    info["not_found"] = missed
    return np.array(out, np.float32), info


# ---- the policy at run time ---------------------------------------------------------------------------

@dataclass
class QuickPolicy:
    """The policy interface of the closed loop (``cfg.k``, ``cfg.n``, ``cfg.cameras``, ``cfg.image_hw``,
    ``start_q``, ``reset()``, ``predict_chunk``), with its own state: the time since reset, the
    objects located in the first frame, the grippers' phase.

    ``reference``: the empty-scene frame of the locating camera (a :class:`rig.sim.reference.Reference`
    or an (H, W, 3) array), set before trials (``evaluate_in_sim`` captures it live)."""

    net: QuickNet
    stats: QuickStats
    qcfg: QuickConfig
    cfg: PolicyConfig
    joints: JointInfo
    task: str
    start_q: np.ndarray | None
    steps: int = 0
    train_s: float = 0.0
    episodes: list[int] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    reference: object = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        g = np.array(self.joints.gripper)
        self.grip_idx = np.flatnonzero(g)
        self.arm_idx = np.flatnonzero(~g)
        # the joints the net regresses (as offsets, or absolute targets): the arms, or every joint
        self.reg_idx = np.arange(len(g)) if self.qcfg.gripper == "regress" else self.arm_idx
        self.phase = PhaseTracker(len(self.grip_idx), self.qcfg.phase == "grippers")
        self._obj: np.ndarray | None = None
        self._chunk: np.ndarray | None = None  # the last prediction and when: the grippers' commands
        self._t_chunk = 0.0
        self._seed: int | None = None
        self.located: list = []  # per trial: what the locator found (for the report)
        self.locator_info: dict = {}
        self.snapshots: list = []

    @property
    def execute(self) -> int | None:
        return self.qcfg.execute

    @property
    def ensemble(self) -> float | None:
        return self.qcfg.ensemble

    @property
    def needs_reference(self) -> bool:
        return not self.qcfg.privileged and Locator(self.qcfg.locator).needs_reference

    def reset(self, seed: int | None = None) -> None:
        """A new trial: time starts again, the objects are located again from the next frame."""
        self.phase.reset()
        self._obj = None
        self._chunk = None
        if seed is not None:  # the policy source's own reset (no seed) keeps the trial's
            self._seed = seed

    def _objects(self, images: np.ndarray) -> np.ndarray:
        if self.qcfg.privileged:
            from rig.sim.scene import object_poses

            if self._seed is None:
                raise TrainError("the privileged policy needs the trial's world seed: reset(seed)")
            return np.array([c for p in object_poses(self.task, self._seed) for c in p.pos[:2]], np.float32)
        ref = self.reference
        frame, mask = ref, None
        if ref is not None and hasattr(ref, "frame"):
            frame, mask = ref.frame, ref.arm_mask
        got = Locator(self.qcfg.locator, self.qcfg.camera, self.qcfg.n_objects)(images[0], frame, mask)
        self.located.append({"seed": self._seed, "xy": got.xy.tolist(), "area": got.area.tolist()})
        return got.xy.ravel()

    def features(self, t: float, q: np.ndarray, dq: np.ndarray, obj: np.ndarray, command: np.ndarray) -> np.ndarray:
        """``command``: the grippers' last commanded values (the phase comes from them)."""
        s = self.stats
        return np.concatenate([(q - s.q_mean) / s.q_std, (dq - s.dq_mean) / s.dq_std,
                               (obj - s.obj_mean) / s.obj_std, self.phase(t, command < s.thresholds)]
                              ).astype(np.float32)

    def _command(self, t: float, q: np.ndarray) -> np.ndarray:
        """What the grippers are commanded now: the element of the last chunk for this moment
        (the loop sends the chunk's actions in order, one a tick); before any, where they are."""
        if self._chunk is None:
            return q[self.grip_idx]
        j = min(len(self._chunk) - 1, max(0, int(round((t - self._t_chunk) * RATE_HZ)) - 1))
        return self._chunk[j, self.grip_idx]

    def predict_chunk(self, images: np.ndarray, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        if self._obj is None:
            self._obj = self._objects(images)
        t = self.clock()
        x = self.features(t, q, dq, self._obj, self._command(t, q))
        with torch.no_grad():
            arm, grip = self.net(torch.from_numpy(x[None]))
        self._chunk = self.decode(q, arm[0].numpy(), grip[0].numpy())
        self._t_chunk = t
        return self._chunk

    def decode(self, q: np.ndarray, arm: np.ndarray, grip_logits: np.ndarray) -> np.ndarray:
        s = self.stats
        out = np.empty((self.cfg.k, self.cfg.n), np.float32)
        base = 0.0 if self.qcfg.absolute else q[self.reg_idx]
        out[:, self.reg_idx] = base + s.d_mean + arm * s.d_std
        if self.qcfg.gripper == "regress":
            return out
        cls = grip_logits.argmax(-1)  # (k, n_grip)
        out[:, self.grip_idx] = np.take_along_axis(s.levels[None, :, :], cls[..., None], -1)[..., 0]
        return out

    def state(self) -> dict:
        return {"kind": "quick", "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "stats": self.stats.to_dict(), "qcfg": asdict(self.qcfg), "cfg": self.cfg.to_dict(),
                "joints": {"names": list(self.joints.names), "gripper": list(self.joints.gripper)},
                "task": self.task, "start_q": None if self.start_q is None else np.asarray(self.start_q).tolist(),
                "steps": self.steps, "episodes": self.episodes}

    @classmethod
    def from_state(cls, st: dict) -> QuickPolicy:
        # a policy saved before these options existed ran one network, a chunk every K/2 ticks
        qcfg = QuickConfig(**{"members": 1, "execute": None, "ema": 0.0, **st["qcfg"]})
        cfg = PolicyConfig.from_dict(st["cfg"])
        stats = QuickStats.from_dict(st["stats"])
        joints = JointInfo(tuple(st["joints"]["names"]), tuple(st["joints"]["gripper"]))
        net = _make_net(qcfg, joints, stats)
        net.load_state_dict(st["net"])
        net.eval()
        start = st.get("start_q")
        return cls(net, stats, qcfg, cfg, joints, st["task"], None if start is None else np.asarray(start, np.float32),
                   st.get("steps", 0), episodes=list(st.get("episodes", [])))


def _make_net(qcfg: QuickConfig, joints: JointInfo, stats: QuickStats) -> QuickNet:
    n = len(joints.gripper)
    n_grip = int(sum(joints.gripper))
    d_in = 2 * n + len(stats.obj_mean) + PhaseTracker(n_grip, qcfg.phase == "grippers").size
    if qcfg.gripper == "regress":  # the grippers' values are regressed beside the arms
        args = (d_in, qcfg.k, n, 0, qcfg.levels, qcfg.hidden, qcfg.layers)
    else:
        args = (d_in, qcfg.k, n - n_grip, n_grip, qcfg.levels, qcfg.hidden, qcfg.layers)
    return QuickEnsemble(qcfg.members, *args) if qcfg.members > 1 else QuickNet(*args)


# ---- training -------------------------------------------------------------------------------------------

def sample_rows(eps: Sequence[QuickEpisode]) -> np.ndarray:
    """The rows (of the takes' concatenated ticks) training samples from: every row of a
    demonstration, a corrective take's from its takeover on (``label_from``)."""
    return np.flatnonzero(np.concatenate([np.arange(e.ticks) >= e.label_from for e in eps]))


def _phase_rows(e: QuickEpisode, tracker: PhaseTracker, grip_idx: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Phase at every tick of a take, from the command sent the tick before (at the first tick,
    the grippers' measured state, as live before the first prediction)."""
    tracker.reset()
    cmd = np.concatenate([e.q[:1, grip_idx], e.action[:-1, grip_idx]])
    return np.stack([tracker(float(t), c < thresholds) for t, c in zip(e.t_s, cmd)])


def train_quick(eps: Sequence[QuickEpisode], task: str, cfg: QuickConfig, *, reference=None,
                progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
                snapshots_s: Sequence[float] = ()) -> QuickPolicy:
    """Train the quick policy on ``eps`` (all of them: choose the takes before).

    ``snapshots_s``: training seconds at which a copy of the weights is kept (``policy.snapshots``:
    (seconds, steps, state)): the same run seen at earlier minutes, for a success-vs-time curve."""

    if not eps:
        raise TrainError("no takes to train the quick policy on")
    n_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train_quick(eps, task, cfg, reference, progress, should_stop, snapshots_s)
    finally:
        torch.set_num_threads(n_threads)


def _train_quick(eps, task, cfg, reference, progress, should_stop, snapshots_s) -> QuickPolicy:
    from rig.train.trainer import start_pose

    t0 = time.monotonic()
    device = pick_device(cfg.device)
    joints = eps[0].joints
    g = np.array(joints.gripper)
    grip_idx, arm_idx = np.flatnonzero(g), np.flatnonzero(~g)
    regress = cfg.gripper == "regress"
    reg_idx = np.arange(len(g)) if regress else arm_idx
    if reference is None and not cfg.privileged and Locator(cfg.locator).needs_reference:
        reference = takes_reference(eps, cfg.camera)  # kept with the policy: hardware renders none at run time
    obj, loc_info = object_features(eps, cfg, task, reference)
    q = np.concatenate([e.q for e in eps])
    dq = np.concatenate([e.dq for e in eps])
    chunks = np.concatenate([action_chunks(e.action, cfg.k) for e in eps])  # (N, K, n)
    ep_row = np.concatenate([np.full(e.ticks, r) for r, e in enumerate(eps)])
    levels = np.stack([gripper_levels(np.concatenate([e.action[:, i] for e in eps]), cfg.levels) for i in grip_idx])
    thresholds = np.array([_closed_below(lv) for lv in levels])
    tracker = PhaseTracker(len(grip_idx), cfg.phase == "grippers")
    phase = np.concatenate([_phase_rows(e, tracker, grip_idx, thresholds) for e in eps])
    off = chunks[:, :, reg_idx] - (0.0 if cfg.absolute else q[:, None, reg_idx])
    eps_ = 1e-3
    if cfg.velocity == "joint":
        dq_mean, dq_std = dq.mean(0), dq.std(0) + eps_
    elif cfg.velocity == "pooled":
        dq_mean, dq_std = np.zeros(dq.shape[1]), np.full(dq.shape[1], dq.std() + eps_)
    else:  # "none": a scale so large the inputs are zeros
        dq_mean, dq_std = np.zeros(dq.shape[1]), np.full(dq.shape[1], 1e9)
    stats = QuickStats(q.mean(0), q.std(0) + eps_, dq_mean, dq_std,
                       off.reshape(-1, len(reg_idx)).mean(0), off.reshape(-1, len(reg_idx)).std(0) + eps_,
                       obj.mean(0), obj.std(0) + eps_, levels, thresholds)
    stats = QuickStats(*(np.asarray(v, np.float32) for v in asdict(stats).values()))
    cls = np.abs(chunks[:, :, grip_idx][..., None] - levels[None, None, :, :]).argmin(-1)  # (N, K, n_grip)
    T = torch.from_numpy
    x_q = T(q.astype(np.float32)).to(device)
    x_dq = T(((dq - stats.dq_mean) / stats.dq_std).astype(np.float32)).to(device)
    x_obj = T(((obj - stats.obj_mean) / stats.obj_std).astype(np.float32)).to(device)[T(ep_row).to(device)]
    x_phase = T(phase.astype(np.float32)).to(device)
    y_arm = T(((off - stats.d_mean) / stats.d_std).astype(np.float32)).to(device)
    y_cls = T(cls.astype(np.int64)).to(device)
    q_mean, q_std = T(stats.q_mean).to(device), T(stats.q_std).to(device)
    rng = seeded(cfg.seed)
    net = _make_net(cfg, joints, stats).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    avg = copy.deepcopy(net) if cfg.ema > 0 else None
    avg_p = list(avg.parameters()) if avg is not None else []
    net_p = list(net.parameters())
    rows = sample_rows(eps)
    rows_t = T(rows).to(device)
    n = len(rows)

    class Steps:  # the quick recipe's step for the one step loop (rig.train.steps)
        def step(self, lr: float, s: int) -> float:
            idx = rows_t[T(rng.integers(0, n, cfg.batch)).to(device)]
            rest = torch.cat([x_dq[idx], x_obj[idx], x_phase[idx]], 1)
            xs = []
            for _ in range(cfg.members):  # the copycat guard: the state is not exact (a draw per member)
                qb = x_q[idx] + torch.randn_like(x_q[idx]) * cfg.q_noise
                xs.append(torch.cat([(qb - q_mean) / q_std, rest], 1))
            outs = net.each(xs) if cfg.members > 1 else [net(xs[0])]
            loss = 0.0
            for arm, grip in outs:
                loss = loss + torch.nn.functional.l1_loss(arm, y_arm[idx])
                if not regress:
                    loss = loss + torch.nn.functional.cross_entropy(grip.reshape(-1, cfg.levels), y_cls[idx].reshape(-1))
            loss = loss / cfg.members
            for pg in opt.param_groups:
                pg["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if avg is not None:  # the decay grows with the steps: a short run is not held at its start
                with torch.no_grad():
                    torch._foreach_lerp_(avg_p, net_p, 1.0 - min(cfg.ema, (1 + s) / (10 + s)))
            return float(loss.detach())

        def save(self):
            return copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()), rng.bit_generator.state

        def restore(self, saved) -> None:
            net.load_state_dict(saved[0])
            opt.load_state_dict(saved[1])
            rng.bit_generator.state = saved[2]
            if avg is not None:
                avg.load_state_dict(saved[0])

    snaps: list[tuple[float, int, dict]] = []

    def snapshot(mark: float, s: int) -> None:
        snaps.append((mark, s, {k: v.detach().clone().cpu() for k, v in (avg if avg is not None else net).state_dict().items()}))

    # a ceiling: a machine that got slower (time budget) or too slow for the step count
    plan = StepPlan(lr=cfg.lr, steps=cfg.steps, budget_s=cfg.budget_s, max_steps=cfg.max_steps, min_steps=50,
                    probe_steps=10, loss_decay=0.98,
                    ceiling_s=cfg.budget_s if cfg.steps is not None else 1.3 * cfg.budget_s)
    res = run_steps(Steps(), plan, t0=t0, progress=progress, should_stop=should_stop, marks_s=snapshots_s,
                    on_mark=snapshot)
    done, losses = res.steps, res.losses
    if avg is not None:
        net = avg
    net.eval().cpu()
    pcfg = PolicyConfig(n=len(g), k=cfg.k, cameras=() if cfg.privileged else (cfg.camera,),
                        image_hw=LOCATE_HW)
    starts = [e.as_episode() for e in eps]
    policy = QuickPolicy(net, stats, cfg, pcfg, joints, task, start_pose(starts), done, time.monotonic() - t0,
                         sorted(e.index for e in eps), losses, reference=reference)
    policy.locator_info = {k: v for k, v in loc_info.items() if isinstance(v, str | list)}
    policy.snapshots = [(m, n, {**policy.state(), "net": w, "steps": n}) for m, n, w in snaps]
    return policy


def quick_errors(policy: QuickPolicy, eps: Sequence[QuickEpisode], every: int = 5) -> dict:
    """Action errors on held-out takes (deg for arm joints, % for grippers), beside the two
    baselines "holding still" and "the mean action". Secondary figures: success is the headline."""
    obj, _ = object_features(eps, policy.qcfg, policy.task, policy.reference)
    scale = policy.joints.scale
    errs, holds, means = [], [], []
    mean_a = np.concatenate([e.action for e in eps]).mean(0)
    g = policy.grip_idx
    for e, o in zip(eps, obj):
        policy.phase.reset()
        ch = action_chunks(e.action, policy.cfg.k)
        cmd = np.concatenate([e.q[:1, g], e.action[:-1, g]])
        for t in range(e.ticks):  # the phase follows every tick, as in training; scored every few
            x = policy.features(float(e.t_s[t]), e.q[t], e.dq[t], o, cmd[t])
            if t % every:
                continue
            with torch.no_grad():
                arm, grip = policy.net(torch.from_numpy(x[None]))
            pred = policy.decode(e.q[t], arm[0].numpy(), grip[0].numpy())
            errs.append(np.abs(pred - ch[t]).mean(0))
            holds.append(np.abs(e.q[t][None] - ch[t]).mean(0))
            means.append(np.abs(mean_a[None] - ch[t]).mean(0))
    arm = ~np.array(policy.joints.gripper)
    per = np.mean(errs, 0) * scale
    hold = np.mean(holds, 0) * scale
    mean = np.mean(means, 0) * scale
    keys = policy.joints.keys()
    return {"per_joint": {k: round(float(v), 3) for k, v in zip(keys, per)},
            "joint_error": round(float(per[arm].mean()), 3), "gripper_error": round(float(per[~arm].mean()), 2),
            "hold_joint_error": round(float(hold[arm].mean()), 3), "hold_gripper_error": round(float(hold[~arm].mean()), 2),
            "mean_action_joint_error": round(float(mean[arm].mean()), 3),
            "mean_action_gripper_error": round(float(mean[~arm].mean()), 2)}


__all__ = ["JOINTS", "QuickConfig", "QuickEpisode", "QuickPolicy", "load_quick_episodes", "sample_rows", "train_quick",
           "quick_errors", "gripper_levels", "PhaseTracker"]

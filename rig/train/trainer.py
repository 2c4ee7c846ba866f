"""Seeded training of the visuomotor policy, validation on held-out episodes, prediction.

Determinism: with a fixed step count, the same seed gives the same weights on the same machine
(batch order, augmentation and initialisation all come from the seed). The steps run in the one
step loop (:mod:`rig.train.steps`): a time budget picks the step count from a short timing probe
whose changes are undone, so ``steps`` in the result reproduces the run exactly.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rig.train import TrainError, require_torch
from rig.train.data import EpisodeData, JointInfo, Samples, build_samples
from rig.train.model import Normalizer, Policy, PolicyConfig
from rig.train.steps import StepPlan, pick_device, run_steps, seeded

torch = require_torch()
PROBE_STEPS = 8  # timing probe length: fewer misjudge a machine whose load comes and goes


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    k: int = 20  # action chunk length in ticks (0.4 s at 50 Hz)
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    budget_s: float = 45.0  # training time of one run, when steps is None
    steps: int | None = None  # a fixed step count: reproducible regardless of machine speed
    max_steps: int = 20000
    val_fraction: float = 0.2
    augment_px: int = 4  # random image shifts: a few pixels of camera jitter
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    # A time-budgeted run stops at budget_s * overrun even if the machine got slower than the
    # timing probe said (beside a session: feedback on time beats the last few steps); None: never.
    overrun: float | None = None
    width: int = 32
    hidden: int = 256
    keypoints: int = 0  # spatial-softmax keypoints on the scene cameras (0: none)
    keypoint_cameras: tuple[str, ...] = ("top",)  # fixed views of the workspace; never shifted
    velocity: bool = True  # joint velocities as inputs


def split_episodes(indices: Sequence[int], seed: int, val_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """Held-out *episodes* (never frames of training episodes) for validation.

    An episode's side depends only on (seed, index), ranked by a hash: as episodes arrive the
    earlier ones mostly keep their side, so results stay comparable between retrains.
    """
    idx = sorted(indices)
    if len(idx) < 2:
        raise TrainError(f"quick-train needs at least 2 kept episodes (one to train on, one to validate on); "
                         f"the dataset has {len(idx)}. Record more takes")
    n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx))))
    rank = sorted(idx, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    val = sorted(rank[:n_val])
    return [i for i in idx if i not in val], val


@dataclass
class TrainedPolicy:
    model: Policy
    norm: Normalizer
    cfg: PolicyConfig
    joints: JointInfo
    steps: int
    train_s: float
    episodes: list[int]
    losses: list[tuple[int, float]] = field(default_factory=list)
    device: str = "cpu"
    stopped_early: bool = False
    start_q: np.ndarray | None = None  # where the training takes start (a rollout begins there)

    def state(self) -> dict:
        """Everything needed to run the policy again (torch.save-able)."""
        return {"kind": "visuomotor", "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "norm": self.norm.to_dict(), "cfg": self.cfg.to_dict(),
                "joints": {"names": list(self.joints.names), "gripper": list(self.joints.gripper)},
                "steps": self.steps, "episodes": self.episodes,
                "start_q": None if self.start_q is None else self.start_q.tolist()}

    @classmethod
    def from_state(cls, state: dict, device: str = "cpu") -> TrainedPolicy:
        cfg = PolicyConfig.from_dict(state["cfg"])
        model = Policy(cfg)
        model.load_state_dict(state["model"])
        model.to(device).eval()
        j = state["joints"]
        start = state.get("start_q")
        return cls(model, Normalizer.from_dict(state["norm"]), cfg, JointInfo(tuple(j["names"]), tuple(j["gripper"])),
                   state["steps"], 0.0, list(state["episodes"]), device=device,
                   start_q=None if start is None else np.asarray(start, np.float32))

    def predict_chunk(self, images: np.ndarray, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """One observation -> (K, n) actions in rig units. images: (C, H, W, 3) uint8; q, dq: (n,)."""
        with torch.no_grad():
            img = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)[None])).to(self.device)
            s = torch.from_numpy(self.norm.state(q, dq)[None]).to(self.device)
            out = self.model(img, s)[0].cpu().numpy()
        return q[None, :] + self.norm.d_mean + out * self.norm.d_std


class _Batches:
    """Samples on the training device; batches drawn from a seeded generator."""

    def __init__(self, s: Samples, norm: Normalizer, device: str, still: Sequence[str] = ()):
        self.s = s
        # random shifts would move what keypoint cameras locate: only the others are shifted
        self.moving = [i for i, c in enumerate(s.cameras) if c not in still]
        self.device = device
        t = torch.from_numpy
        self.q = t(norm.state(s.q, s.dq)).to(device)
        d = (s.chunk - s.q[:, None, :] - norm.d_mean) / norm.d_std
        self.target = t(d.astype(np.float32)).to(device)
        # channels first, once: the convolutions then read contiguous NCHW batches
        self.frames = [t(s.frames[c]).permute(0, 3, 1, 2).contiguous().to(device) for c in s.cameras]
        self.rows = [t(s.frame_rows[c]).to(device) for c in s.cameras]

    def get(self, idx, shift: tuple | None = None):
        idx_t = torch.as_tensor(idx, device=self.device)
        if self.frames:
            imgs = torch.stack([f[r[idx_t]] for f, r in zip(self.frames, self.rows)], dim=1)  # (B, C, 3, H, W)
            if shift is not None and self.moving:
                if len(self.moving) == imgs.shape[1]:
                    imgs = _shift(imgs, *shift)
                else:
                    imgs[:, self.moving] = _shift(imgs[:, self.moving], *shift)
        else:
            imgs = torch.zeros((len(idx), 0, 3, 1, 1), dtype=torch.uint8, device=self.device)
        return imgs, self.q[idx_t], self.target[idx_t]


def _shift(imgs, dy: np.ndarray, dx: np.ndarray):
    """Shift each sample's images by (dy, dx) pixels, edges replicated (random-shift augmentation)."""
    b, _, _, h, w = imgs.shape
    dev = imgs.device
    rows = (torch.as_tensor(dy, device=dev)[:, None] + torch.arange(h, device=dev)[None, :]).clamp(0, h - 1)
    cols = (torch.as_tensor(dx, device=dev)[:, None] + torch.arange(w, device=dev)[None, :]).clamp(0, w - 1)
    # two gathers along H then W (cheaper than one 2-D fancy index on a 5-D tensor)
    imgs = imgs.gather(3, rows[:, None, None, :, None].expand(-1, *imgs.shape[1:3], h, w))
    return imgs.gather(4, cols[:, None, None, None, :].expand(-1, *imgs.shape[1:4], w)).contiguous()


class _VisuomotorSteps:
    """The visuomotor recipe's step for the one step loop (:mod:`rig.train.steps`)."""

    def __init__(self, model, opt, batches: _Batches, rng: np.random.Generator, cfg: TrainConfig):
        self.model, self.opt, self.batches, self.rng, self.cfg = model, opt, batches, rng, cfg

    def step(self, lr: float, s: int) -> float:
        cfg, rng = self.cfg, self.rng
        n = len(self.batches.s)
        idx = rng.integers(0, n, size=min(cfg.batch, n))
        shift = None
        if cfg.augment_px:
            p = cfg.augment_px
            shift = (rng.integers(-p, p + 1, len(idx)), rng.integers(-p, p + 1, len(idx)))
        imgs, q, target = self.batches.get(idx, shift)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss = torch.nn.functional.l1_loss(self.model(imgs, q), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def save(self):
        return (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.opt.state_dict()),
                self.rng.bit_generator.state)

    def restore(self, saved) -> None:
        self.model.load_state_dict(saved[0])
        self.opt.load_state_dict(saved[1])
        self.rng.bit_generator.state = saved[2]


def train_policy(episodes: Sequence[EpisodeData], cfg: TrainConfig, *, init: TrainedPolicy | None = None,
                 progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 deadline: float | None = None) -> TrainedPolicy:
    """Train on ``episodes``. ``init`` warm-starts from an earlier policy (same cameras and shape).

    ``should_stop`` (polled between steps) aborts: the partly trained policy comes back with
    ``stopped_early``. ``deadline`` (time.monotonic) ends training early on an overloaded machine.
    """
    if not episodes:
        raise TrainError("no training episodes")
    t0 = time.monotonic()
    device = pick_device(cfg.device)
    samples = build_samples(episodes, cfg.k)
    if not samples.cameras:
        raise TrainError("the visuomotor policy learns from camera frames, but the episodes have no camera at all; "
                         "record with cameras, or use --policy quick with a camera that sees the objects")
    if len(samples) == 0:
        raise TrainError("the training episodes have no tick with a frame from every camera")
    norm = Normalizer.fit(samples.q, samples.dq, samples.chunk)
    pcfg = PolicyConfig(n=samples.q.shape[1], k=cfg.k, cameras=tuple(samples.cameras),
                        image_hw=tuple(next(iter(samples.frames.values())).shape[1:3]) if samples.frames else (60, 80),
                        width=cfg.width, hidden=cfg.hidden, keypoints=cfg.keypoints,
                        keypoint_cameras=tuple(cfg.keypoint_cameras), velocity=cfg.velocity)
    if cfg.keypoints and not set(cfg.keypoint_cameras) & set(pcfg.cameras):
        raise TrainError(f"keypoints asked for on cameras {list(cfg.keypoint_cameras)}, but the episodes have "
                         f"{list(pcfg.cameras)}; name a fixed camera that sees the workspace (--keypoint-cameras)")
    rng = seeded(cfg.seed)
    model = Policy(pcfg)
    if init is not None and init.cfg == pcfg:
        model.load_state_dict(init.model.state_dict())
    model.to(device).train()
    batches = _Batches(samples, norm, device, still=pcfg.keypoint_cameras if pcfg.keypoints else ())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = StepPlan(lr=cfg.lr, steps=cfg.steps, budget_s=cfg.budget_s, max_steps=cfg.max_steps, min_steps=10,
                    probe_steps=PROBE_STEPS, loss_decay=0.9,
                    ceiling_s=cfg.budget_s * cfg.overrun if cfg.steps is None and cfg.overrun is not None else None)
    res = run_steps(_VisuomotorSteps(model, opt, batches, rng, cfg), plan, t0=t0, progress=progress,
                    should_stop=should_stop, deadline=deadline)
    done, losses, stopped = res.steps, res.losses, res.stopped
    model.eval()
    return TrainedPolicy(model, norm, pcfg, episodes[0].joints, done, time.monotonic() - t0,
                         sorted(e.index for e in episodes), losses, device, stopped, start_pose(episodes))


def start_pose(episodes: Sequence[EpisodeData]) -> np.ndarray | None:
    """The median state at the first usable tick of each episode: where the takes begin."""
    firsts = [e.q[np.flatnonzero(e.valid)[0]] for e in episodes if e.valid.any()]
    return np.median(firsts, axis=0).astype(np.float32) if firsts else None


def predict(policy: TrainedPolicy, samples: Samples, batch: int = 256) -> np.ndarray:
    """(N, K, n) predicted actions in rig units for every sample."""
    if len(samples) == 0:
        return np.zeros((0, policy.cfg.k, policy.cfg.n), np.float32)
    b = _Batches(samples, policy.norm, policy.device)
    out = []
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            imgs, q, _ = b.get(np.arange(i, min(i + batch, len(samples))))
            out.append(policy.model(imgs, q).cpu().numpy())
    d = np.concatenate(out)
    return samples.q[:, None, :] + policy.norm.d_mean + d * policy.norm.d_std


@dataclass
class Evaluation:
    """Action errors on a set of episodes, per joint in physical units (deg, % for grippers)."""

    per_joint: dict[str, float]  # model
    mean_action: dict[str, float]  # baseline: always the training mean action
    hold: dict[str, float]  # baseline: the arm stays where it is
    joint_error: float  # mean over arm joints (deg)
    gripper_error: float  # mean over grippers (%)
    baseline_joint_error: float  # mean-action baseline, arm joints (deg)
    hold_joint_error: float
    loss: float  # mean |error| / offset std (the training loss' units)
    mean_action_loss: float
    per_episode: dict[int, float]  # episode -> normalized error (the model's "surprise")


def evaluate(policy: TrainedPolicy, samples: Samples, mean_action: np.ndarray) -> Evaluation:
    pred = predict(policy, samples)
    true = samples.chunk
    j = policy.joints
    scale = j.scale
    err = np.abs(pred - true)  # (N, K, n)
    per = err.mean(axis=(0, 1)) * scale
    base = np.abs(mean_action[None, None, :] - true).mean(axis=(0, 1)) * scale
    hold = np.abs(samples.q[:, None, :] - true).mean(axis=(0, 1)) * scale
    arm = ~np.array(j.gripper)
    grip = np.array(j.gripper)
    keys = j.keys()
    norm_err = (err / policy.norm.d_std).mean(axis=(1, 2))  # (N,)
    base_norm = (np.abs(mean_action[None, None, :] - true) / policy.norm.d_std).mean()
    per_ep = {int(e): float(norm_err[samples.episode == e].mean()) for e in np.unique(samples.episode)}
    return Evaluation(
        per_joint={k: float(v) for k, v in zip(keys, per)},
        mean_action={k: float(v) for k, v in zip(keys, base)},
        hold={k: float(v) for k, v in zip(keys, hold)},
        joint_error=float(per[arm].mean()) if arm.any() else float("nan"),
        gripper_error=float(per[grip].mean()) if grip.any() else float("nan"),
        baseline_joint_error=float(base[arm].mean()) if arm.any() else float("nan"),
        hold_joint_error=float(hold[arm].mean()) if arm.any() else float("nan"),
        loss=float(norm_err.mean()), mean_action_loss=float(base_norm), per_episode=per_ep)

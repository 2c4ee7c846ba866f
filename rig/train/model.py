"""The quick policy: a small CNN per camera (shared weights) and an MLP head -> K actions.

Sized to learn something useful in under a minute on one or two CPU cores: three
convolutions take a 60x80 frame to an 8x10 grid of 32 channels, flattened so *where* things are
(the cube, the fingers) survives; the joint state joins the image features and an MLP predicts
the next K actions as offsets from the present state (normalized), which is what a teleop
action mostly is: where the arm is, plus where it is heading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rig.train import require_torch

torch = require_torch()
nn = torch.nn


@dataclass(frozen=True)
class PolicyConfig:
    n: int = 14  # action/state values
    k: int = 20  # chunk length (ticks)
    cameras: tuple[str, ...] = ()
    image_hw: tuple[int, int] = (60, 80)
    width: int = 32  # conv channels
    feat: int = 64  # features per camera
    hidden: int = 256
    keypoints: int = 0  # spatial-softmax keypoints per scene camera (0: none)
    keypoint_cameras: tuple[str, ...] = ()  # the cameras that get them (a fixed view of the workspace)
    velocity: bool = True  # joint velocities as inputs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PolicyConfig:
        d = dict(d)
        d["cameras"] = tuple(d.get("cameras", ()))
        d["image_hw"] = tuple(d.get("image_hw", (60, 80)))
        d["keypoint_cameras"] = tuple(d.get("keypoint_cameras", ()))
        return cls(**d)


class Keypoints(nn.Module):
    """(B, 3, H, W) frames -> (B, 3K): where K learned colours are, to a fraction of a pixel.

    Each keypoint is a per-pixel linear colour detector followed by a spatial softmax: its
    centroid (x, y in [-1, 1]) moves continuously with the object, where a flattened grid only
    says which cell it is in, so the head can interpolate between the few object positions of
    the demonstrations (a 4 cm cube is one pixel of a 60x80 top view). The peak (largest softmax
    weight, scaled) says whether the colour is in view at all. Per-pixel and linear because full
    resolution is where a small object survives, and only that is cheap there on a CPU."""

    def __init__(self, k: int, hw: tuple[int, int]):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, 3) * 0.5)
        self.bias = nn.Parameter(torch.zeros(k))
        self.register_buffer("xs", torch.linspace(-1.0, 1.0, hw[1]))
        self.register_buffer("ys", torch.linspace(-1.0, 1.0, hw[0]))
        self.log_temp = nn.Parameter(torch.tensor(1.5))  # sharp from the start: 4800 pixels compete

    def forward(self, x):
        b, _, h, w = x.shape
        logits = torch.einsum("bchw,kc->bkhw", x, self.weight) + self.bias[:, None, None]
        p = torch.softmax(logits.flatten(2) * self.log_temp.exp(), dim=-1)  # (B, K, HW)
        peak = p.amax(-1) * (h * w) ** 0.5
        p = p.view(b, -1, h, w)
        return torch.cat([(p.sum(2) * self.xs).sum(-1), (p.sum(3) * self.ys).sum(-1), peak], dim=1)


class Encoder(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        w = cfg.width
        # A 4x4 stride-4 "patchify" first layer does most of the down-scaling at a fraction of the
        # cost of stacked stride-2 convolutions (about 30 ms per batch of 64x3 frames on one core).
        self.conv = nn.Sequential(
            nn.Conv2d(3, w // 2, 4, stride=4), nn.ReLU(),
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=1, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            out = self.conv(torch.zeros(1, 3, *cfg.image_hw)).numel()
        self.fc = nn.Sequential(nn.Linear(out, cfg.feat), nn.LayerNorm(cfg.feat), nn.ReLU())

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


class Policy(nn.Module):
    """obs (images uint8 per camera, normalized state) -> (B, K, n) normalized action offsets."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        # A learned tag per camera: one encoder serves all of them, the head tells them apart.
        self.cam_embed = nn.Parameter(torch.zeros(len(cfg.cameras), cfg.feat))
        self.kp_rows = [cfg.cameras.index(c) for c in cfg.keypoint_cameras if c in cfg.cameras] if cfg.keypoints else []
        self.keypoints = Keypoints(cfg.keypoints, cfg.image_hw) if self.kp_rows else None
        # A cube moves its keypoint by a few hundredths of the frame: standardized, the head sees
        # that as plainly as the joint state instead of needing weights 50x larger to notice it.
        self.kp_norm = nn.BatchNorm1d(3 * cfg.keypoints * len(self.kp_rows)) if self.kp_rows else None
        d = (cfg.feat * len(cfg.cameras) + 3 * cfg.keypoints * len(self.kp_rows)
             + (2 if cfg.velocity else 1) * cfg.n)  # + joint positions (and velocities)
        self.head = nn.Sequential(
            nn.Linear(d, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.k * cfg.n),
        )
        self.register_buffer("pix_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def forward(self, images, state):
        """images: (B, C, 3, H, W) uint8 (C cameras, channels first); state: (B, 2n) normalized q, dq."""
        b, c = images.shape[:2]
        x = images.reshape(b * c, *images.shape[2:]).float() / 255.0
        x = (x - self.pix_mean) / 0.25
        f = (self.encoder(x).view(b, c, -1) + self.cam_embed).flatten(1)
        if self.keypoints is not None:
            kx = x.view(b, c, *x.shape[1:])[:, self.kp_rows].flatten(0, 1)
            f = torch.cat([f, self.kp_norm(self.keypoints(kx).view(b, -1))], dim=1)
        if not self.cfg.velocity:
            state = state[:, : self.cfg.n]
        h = torch.cat([f, state], dim=1) if c else state
        return self.head(h).view(b, self.cfg.k, self.cfg.n)


_FIELDS = ("q_mean", "q_std", "dq_mean", "dq_std", "d_mean", "d_std")


@dataclass
class Normalizer:
    """State and action-offset statistics of the training episodes (rig units)."""

    q_mean: np.ndarray
    q_std: np.ndarray
    dq_mean: np.ndarray
    dq_std: np.ndarray
    d_mean: np.ndarray  # mean of (action[t+j] - q[t]) over j and t
    d_std: np.ndarray

    @classmethod
    def fit(cls, q: np.ndarray, dq: np.ndarray, chunk: np.ndarray) -> Normalizer:
        d = (chunk - q[:, None, :]).reshape(-1, q.shape[1])
        eps = 1e-3
        return cls(q.mean(0), q.std(0) + eps, dq.mean(0), dq.std(0) + eps, d.mean(0), d.std(0) + eps)

    def state(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """Normalized network input [q, dq] (float32), for one (n,) or many (N, n) states."""
        return np.concatenate([(q - self.q_mean) / self.q_std, (dq - self.dq_mean) / self.dq_std], -1).astype(np.float32)

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in _FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(*(np.asarray(d[k], np.float32) for k in _FIELDS))

"""Small rig datasets for the LeRobot export/import tests: ticks at 50 Hz, two cameras at 25 fps
with textured, moving frames, a config naming the follower joints, a camera latency and drops."""

from __future__ import annotations

import time

import numpy as np

from drivers.cameras.frame import Frame
from recorder import Dataset
from recorder.codec import decode_jpeg

MS = 1_000_000
N = 4  # values per tick: 3 joints + gripper
FIELDS = {
    "tick": ((), "i8"), "t_deadline_ns": ((), "i8"), "t_end_ns": ((), "i8"),
    "leader_q": ((N,), "f4"), "follower_q": ((N,), "f4"), "follower_dq": ((N,), "f4"),
    "follower_current": ((N,), "f4"), "action": ((N,), "f4"), "missed": ((), "i4"), "engage": ((), "f4"),
}
CONFIG = {
    "name": "test-pair", "rate_hz": 50,
    "arms": [
        {"name": "leader", "role": "leader", "joints": [{"name": "waist"}, {"name": "grip", "gripper": True}]},
        {"name": "follower", "role": "follower",
         "joints": [{"name": "waist"}, {"name": "shoulder"}, {"name": "elbow"}, {"name": "gripper", "gripper": True}]},
    ],
    "cameras": [{"name": "cam_high", "fps": 25}, {"name": "cam_wrist", "fps": 25}],
}
CAMS = ("cam_high", "cam_wrist")
LATENCY = {"cam_high": 3 * MS}
H, W = 48, 64


def scene(i: int, cam: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 3 + i + 40 * cam) % 256, (y * 4) % 256, np.full_like(x, 90)], -1).astype(np.uint8)
    img[10:22, 5 + i % 40 : 17 + i % 40] = 240
    return img


def record(ds: Dataset, n_ticks: int = 60, success: bool | None = True, task: str = "transfer cube",
           drop_every: int = 0, cams=CAMS, status: str = "complete") -> int:
    """One take: ticks every 20 ms; frames every 40 ms, 5 ms after a tick; ``drop_every`` skips
    driver frame indices (a drop). Returns the episode index."""
    w = ds.new_episode(task=task, operator="ada", config=CONFIG,
                       extra={"rig": "test-pair", "camera_latency_ns": LATENCY})
    w.add_stream("joints", FIELDS, rate_hz=50)
    for c in cams:
        w.add_camera(c, fps=25)
    w.start()
    base = time.monotonic_ns()
    rng = np.random.default_rng(n_ticks)
    for i in range(n_ticks):
        q = (np.sin(np.arange(N) + i * 0.1) + rng.normal(0, 0.01, N)).astype(np.float32)
        t = base + i * 20 * MS
        w.append("joints", t, tick=i, t_deadline_ns=t, t_end_ns=t + MS, leader_q=q * 1.01, follower_q=q,
                 follower_dq=q * 0.5, follower_current=q * 10, action=q * 1.01, missed=int(i % 17 == 5),
                 engage=min(1.0, i / 10))
    k = 0
    for f in range(n_ticks // 2):
        if drop_every and f % drop_every == drop_every - 1:
            k += 1  # the driver counted a frame the host never got
        for j, c in enumerate(cams):
            w.add_frame(Frame(c, k, base + f * 40 * MS + 5 * MS, scene(f, j), t_device_ns=10 * f))
        k += 1
    w.stop(success=success, status=status)
    return w.index


def zero_tick_episode(ds: Dataset) -> int:
    w = ds.new_episode(task="transfer cube", config=CONFIG)
    w.add_stream("joints", FIELDS, rate_hz=50)
    w.start()
    w.stop(success=True)
    return w.index


def rig_frames(ds: Dataset, index: int, cam: str, rows: np.ndarray) -> np.ndarray:
    ep = ds.episode(index)
    blobs = ep.read_jpeg(cam)
    return np.stack([decode_jpeg(blobs[r]) for r in rows])

"""Read kept episodes into arrays a small policy trains on.

Each sample is one control tick: the follower joint state and the latest frame of every camera
at or before that tick (down-scaled), mapped to the next K actions (an action chunk, as in ACT;
past the end of the episode the last action repeats: the arm holds). Frames are decoded once, at
reduced size straight from the JPEG (libjpeg scales in the DCT), and kept per episode in an
:class:`EpisodeCache` so a retrain after a new episode only decodes the new one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recorder import DamagedEpisodeError, Dataset, RecorderError, align_frames_to_ticks
from rig.config import DEFAULT_RATE_HZ
from rig.downscale import decode_small, jpeg_size, reduction
from rig.train import TrainError

JOINTS = "joints"
_CHUNK_GUARD = 100  # ticks before an implausible one are not used (their action chunk would reach it)
DEFAULT_IMAGE_HW = (60, 80)  # 320x240 sim frames decode at 1/4 scale to exactly this


@dataclass(frozen=True)
class JointInfo:
    """Names and units of the 14 (or n) action values, from the rig config stored in an episode."""

    names: tuple[str, ...]
    gripper: tuple[bool, ...]

    @property
    def scale(self) -> np.ndarray:
        """Rig units -> physical units: radians -> degrees, normalized gripper -> percent."""
        return np.array([100.0 if g else 180.0 / np.pi for g in self.gripper])

    @property
    def units(self) -> tuple[str, ...]:
        return tuple("%" if g else "deg" for g in self.gripper)

    def keys(self) -> list[str]:
        """Names with their unit in them (`left_waist_deg`, `left_gripper_pct`)."""
        return [f"{n}_{'pct' if g else 'deg'}" for n, g in zip(self.names, self.gripper)]

    @classmethod
    def from_config(cls, raw: dict[str, Any] | None, n: int) -> JointInfo:
        names, grip = [], []
        for arm in (raw or {}).get("arms", []):
            if arm.get("role") != "follower":
                continue
            side = arm.get("side") or arm.get("name", "arm")
            js = arm.get("joints", [])
            for j in [j for j in js if not j.get("gripper")] + [j for j in js if j.get("gripper")]:
                names.append(f"{side}_{j.get('name', 'joint')}")
                grip.append(bool(j.get("gripper")))
        if len(names) != n:  # no usable snapshot: generic names, ALOHA's gripper slots if they fit
            names = [f"j{i}" for i in range(n)]
            grip = [n == 14 and i in (6, 13) for i in range(n)]
        return cls(tuple(names), tuple(grip))


@dataclass
class EpisodeData:
    """One kept episode, ready to sample from."""

    index: int
    task: str
    seed: int | None
    success: bool | None
    rate_hz: float
    q: np.ndarray  # (T, n) follower joint state, rig units
    dq: np.ndarray  # (T, n) follower joint velocity, rig units per second
    action: np.ndarray  # (T, n) follower targets sent each tick
    t_s: np.ndarray  # (T,) seconds since the first tick
    frames: dict[str, np.ndarray]  # cam -> (F, H, W, 3) uint8
    frame_of_tick: dict[str, np.ndarray]  # cam -> (T,) row of frames (-1: none yet)
    joints: JointInfo
    key: tuple = ()  # what identifies this version of the episode on disk (cache validity)
    t0_ns: int = 0  # monotonic time of the first tick (t_s counts from here)

    @property
    def ticks(self) -> int:
        return len(self.q)

    @property
    def implausible(self) -> np.ndarray:
        """Ticks whose state or action cannot be real (a corrupt bus read, a broken file)."""
        lim = np.where(np.array(self.joints.gripper), 1.5, 2 * np.pi * 1.05)
        low = np.where(np.array(self.joints.gripper), -0.5, -2 * np.pi * 1.05)
        bad = np.zeros(self.ticks, bool)
        for x in (self.q, self.action):
            bad |= ~np.all(np.isfinite(x) & (x <= lim) & (x >= low), axis=1)
        return bad

    @property
    def valid(self) -> np.ndarray:
        """Ticks with a frame from every camera, a plausible state and a plausible action chunk ahead."""
        ok = np.ones(self.ticks, bool)
        for rows in self.frame_of_tick.values():
            ok &= rows >= 0
        bad = self.implausible
        if bad.any():  # unusable: a bad tick, and ticks whose action chunk would reach one
            ok &= ~bad
            for b in np.flatnonzero(bad):
                ok[max(0, b - _CHUNK_GUARD):b] = False
        return ok

    def with_actions(self, action: np.ndarray) -> EpisodeData:
        """A copy with other actions (tests corrupt episodes this way)."""
        return EpisodeData(self.index, self.task, self.seed, self.success, self.rate_hz, self.q, self.dq,
                           np.asarray(action, np.float32), self.t_s, self.frames, self.frame_of_tick, self.joints,
                           self.key, self.t0_ns)


def kept_episodes(dataset: Dataset, task: str | None = None) -> list[int]:
    """Indices of complete (kept) episodes, of ``task`` if given; discarded/recovered/recording are left out."""
    out = []
    infos, damage = dataset.scan()  # an episode whose metadata is damaged is named and left out
    for d in damage:
        print(f"rig: skipping {d}", file=sys.stderr)
    for info in infos:
        if info.status != "complete":
            continue
        if task and info.task != task:
            continue
        if info.stream_counts.get(JOINTS, 0) < 2:
            continue
        out.append(info.index)
    return out


def load_episode(dataset: Dataset, index: int, *, cameras: Sequence[str] | None = None,
                 image_hw: tuple[int, int] = DEFAULT_IMAGE_HW, threads: int = 2) -> EpisodeData:
    try:
        ep = dataset.episode(index)
        attrs = ep.attrs
        s = ep.read_stream(JOINTS)
    except DamagedEpisodeError:
        raise  # EpisodeCache skips it with one line
    except (RecorderError, KeyError) as exc:
        raise TrainError(f"episode {index} of {dataset.path} has no readable {JOINTS!r} stream ({exc}); "
                         "discard it with `rig episodes DATASET --discard N`") from None
    cfg = attrs.get("config") or {}
    rate = float(cfg.get("rate_hz", DEFAULT_RATE_HZ)) if isinstance(cfg, dict) else DEFAULT_RATE_HZ
    t_ns = s["t_ns"].astype(np.int64)
    keep = np.flatnonzero(t_ns > 0)
    rows, t_grid = _tick_grid(s, keep, rate)
    q = s["follower_q"][rows].astype(np.float32)
    dq = s["follower_dq"][rows].astype(np.float32) if "follower_dq" in s else np.zeros_like(q)
    action = s["action"][rows].astype(np.float32)
    cams = list(cameras) if cameras is not None else ep.cameras
    frames, frame_rows = {}, {}
    for cam in cams:
        if cam not in ep.cameras:
            raise TrainError(f"episode {index} has no camera {cam!r} (it has {ep.cameras}); train on the cameras "
                             "every episode has")
        blobs = ep.read_jpeg(cam)
        if not blobs:
            frames[cam] = np.zeros((0, *image_hw, 3), np.uint8)
            frame_rows[cam] = np.full(len(rows), -1, np.int64)
            continue
        w, h = jpeg_size(blobs[0])
        r = reduction(w, h, image_hw)
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                imgs = list(pool.map(decode_small, blobs, [image_hw] * len(blobs), [r] * len(blobs)))
        else:
            imgs = [decode_small(b, image_hw, r) for b in blobs]
        frames[cam] = np.stack(imgs)
        frame_rows[cam] = align_frames_to_ticks(t_grid, ep.frame_times(cam)["t_ns"]).indices
    return EpisodeData(
        index=index, task=attrs.get("task", ""), seed=attrs.get("seed"), success=attrs.get("success"),
        rate_hz=rate, q=q, dq=dq, action=action, t_s=(t_grid - t_grid[0]) / 1e9 if len(t_grid) else np.zeros(0),
        frames=frames, frame_of_tick=frame_rows, joints=JointInfo.from_config(cfg, q.shape[1]),
        key=(attrs.get("stop_monotonic_ns"), attrs.get("status"), len(keep)),
        t0_ns=int(t_grid[0]) if len(t_grid) else 0)


def _tick_grid(s: dict[str, np.ndarray], keep: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows on the regular tick grid, and the time of each grid tick.

    A loaded machine skips deadlines (the loop counts them rather than running late). An action
    chunk means the next K *ticks* of time, as in the closed loop, so each skipped tick repeats
    the row before it (the followers held that target) and is timed at its own deadline.
    """
    if "tick" not in s or len(keep) < 2:
        return keep, s["t_ns"][keep].astype(np.int64)
    tick = s["tick"][keep].astype(np.int64)
    if np.any(np.diff(tick) <= 0):  # not a clean counter: use the rows as they are
        return keep, s["t_ns"][keep].astype(np.int64)
    grid = np.arange(tick[0], tick[-1] + 1)
    pos = np.searchsorted(tick, grid, side="right") - 1
    period = int(round(1e9 / rate))
    field = next((f for f in ("t_deadline_ns", "deadline_ns") if f in s), "t_ns")
    base = s[field][keep].astype(np.int64)
    return keep[pos], base[pos] + (grid - tick[pos]) * period


@dataclass
class EpisodeCache:
    """Decoded episodes by index; reloads one only when it changed on disk."""

    cameras: Sequence[str] | None = None
    image_hw: tuple[int, int] = DEFAULT_IMAGE_HW
    threads: int = 2
    episodes: dict[int, EpisodeData] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)  # damaged episodes: never trained on as zeros

    def load(self, path: str | Path, task: str | None = None) -> list[EpisodeData]:
        from rig.train.corrective import from_tick, label_starts  # policy trials: rig/trials.py

        dataset = Dataset(path)
        starts = label_starts(dataset, kept_episodes(dataset, task))
        wanted = [i for i, start in starts.items() if start is not None]  # a trial nobody corrected: no labels
        out = []
        for i in wanted:
            a = dataset.info(i)
            have = self.episodes.get(i)
            if have is None or have.key[1:] != (a.status, a.stream_counts.get(JOINTS)):
                try:
                    have = self.episodes[i] = load_episode(dataset, i, cameras=self.cameras,
                                                           image_hw=self.image_hw, threads=self.threads)
                except DamagedEpisodeError as exc:
                    if self.skipped.get(i) != str(exc):
                        print(f"rig: skipping {exc}", file=sys.stderr)
                    self.skipped[i] = str(exc)
                    continue
            if starts[i]:  # a corrective take: the operator's actions from the takeover on
                have = from_tick(have, dataset.episode(i).attrs)
            if have is not None:
                out.append(have)
        for i in set(self.episodes) - set(wanted):
            del self.episodes[i]
        if out and self.cameras is None:  # train on the cameras every kept episode has
            common = set(out[0].frames)
            for e in out[1:]:
                common &= set(e.frames)
            self.cameras = sorted(common)
            out = [_only_cameras(e, self.cameras) for e in out]
        return out


def _only_cameras(e: EpisodeData, cams: Iterable[str]) -> EpisodeData:
    cams = list(cams)
    if list(e.frames) == cams:
        return e
    e.frames = {c: e.frames[c] for c in cams}
    e.frame_of_tick = {c: e.frame_of_tick[c] for c in cams}
    return e


@dataclass
class Samples:
    """Episodes flattened for batching: every valid tick is a sample."""

    cameras: list[str]
    q: np.ndarray  # (N, n) state at each sample
    dq: np.ndarray  # (N, n) velocity at each sample
    chunk: np.ndarray  # (N, K, n) the next K actions
    frame_rows: dict[str, np.ndarray]  # cam -> (N,) row into frames[cam]
    frames: dict[str, np.ndarray]  # cam -> (M, H, W, 3) all frames of these episodes
    episode: np.ndarray  # (N,) episode index of each sample
    tick: np.ndarray  # (N,) tick within its episode

    def __len__(self) -> int:
        return len(self.q)


def action_chunks(action: np.ndarray, k: int) -> np.ndarray:
    """(T, n) -> (T, K, n): row t holds actions t..t+K-1, the last action repeated past the end."""
    t = len(action)
    idx = np.minimum(np.arange(t)[:, None] + np.arange(k)[None, :], t - 1)
    return action[idx]


def build_samples(episodes: Sequence[EpisodeData], k: int) -> Samples:
    if not episodes:
        raise TrainError("no episodes to train on")
    cams = list(episodes[0].frames)
    qs, dqs, chunks, eps, ticks = [], [], [], [], []
    rows = {c: [] for c in cams}
    frames = {c: [] for c in cams}
    offset = dict.fromkeys(cams, 0)
    for e in episodes:
        ok = np.flatnonzero(e.valid)
        qs.append(e.q[ok])
        dqs.append(e.dq[ok])
        chunks.append(action_chunks(e.action, k)[ok])
        eps.append(np.full(len(ok), e.index))
        ticks.append(ok)
        for c in cams:
            rows[c].append(e.frame_of_tick[c][ok] + offset[c])
            frames[c].append(e.frames[c])
            offset[c] += len(e.frames[c])
    cat = np.concatenate
    return Samples(cams, cat(qs), cat(dqs), cat(chunks), {c: cat(rows[c]) for c in cams},
                   {c: cat(frames[c]) if frames[c] else np.zeros((0, 1, 1, 3), np.uint8) for c in cams},
                   cat(eps), cat(ticks))

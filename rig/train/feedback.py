"""Feedback a collector can act on: per-episode checks and scores (the curve, its trend and the
projection are the report's: :mod:`rig.train.report`).

Per-episode flags combine what the model says with checks that name a cause:
- the model cannot explain the episode: its action error is far above the typical episode's;
- actions disagree with similar states: where other episodes were in nearly the same state,
  they did something else (actions shuffled in time, or belonging to another take);
- a gripper never closed where most episodes close it;
- an idle stretch in the middle of the take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rig.train.data import EpisodeData

MODEL_RATIO = 2.0  # an episode's model error this many times the typical one: "cannot explain"
CONSISTENCY_RATIO = 3.0  # disagreement with neighbours this many times the typical episode's
IDLE_S = 3.0  # a still stretch this long between the first and last motion is reported
IDLE_WINDOW_S = 1.0
IDLE_RANGE_RAD = math.radians(1.0)  # all arm joints within 1 degree over the window: still
IDLE_RANGE_GRIPPER = 0.02
GRIPPER_CLOSED = 0.35  # normalized (0 closed .. 1 open): below this the gripper counts as closed
CHUNK_OFFSETS = (0, 5, 10, 19)  # ticks ahead compared by the consistency check
OFFSET_FLOOR_RAD = math.radians(1.0)  # action differences below ~1 degree are not told apart
OFFSET_FLOOR_GRIPPER = 0.05
MIN_GROUP = 5  # episodes of a split needed before "typical model error" means something


@dataclass
class EpisodeScore:
    index: int
    split: str  # "train" or "val"
    model_error: float | None = None  # normalized action error (training-loss units)
    model_ratio: float | None = None  # / the typical episode's of the same split
    consistency: float | None = None  # disagreement with nearest states of other episodes
    consistency_ratio: float | None = None
    grippers_closed: dict[str, bool] = field(default_factory=dict)
    idle: list[tuple[float, float]] = field(default_factory=list)  # (start s, end s) mid-take
    reasons: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict:
        return {"index": self.index, "split": self.split, "model_error": self.model_error,
                "model_ratio": self.model_ratio, "consistency": self.consistency,
                "consistency_ratio": self.consistency_ratio, "grippers_closed": self.grippers_closed,
                "idle": [list(x) for x in self.idle], "reasons": self.reasons}


def idle_stretches(e: EpisodeData, min_s: float = IDLE_S) -> list[tuple[float, float]]:
    """Still stretches of at least ``min_s`` between the first and the last motion of the take."""
    a = e.action
    if e.implausible.any():
        a = a[: np.argmax(e.implausible)]  # up to the first broken tick
    n = len(a)
    w = max(2, int(round(IDLE_WINDOW_S * e.rate_hz)))
    if n < w + 1:
        return []
    grip = np.array(e.joints.gripper)
    tol = np.where(grip, IDLE_RANGE_GRIPPER, IDLE_RANGE_RAD)
    # moving range over a window, from a sliding view (no Python loop over ticks)
    win = np.lib.stride_tricks.sliding_window_view(a, w, axis=0)  # (n-w+1, dims, w)
    still_win = np.all(win.max(-1) - win.min(-1) <= tol, axis=1)
    still = np.zeros(n, bool)
    for k in np.flatnonzero(still_win):  # a still window makes all its ticks still
        still[k:k + w] = True
    moving = np.flatnonzero(~still)
    if moving.size == 0:
        return [(0.0, float(e.t_s[-1]))] if e.t_s[-1] >= min_s else []
    first, last = moving[0], moving[-1]
    out = []
    k = first
    while k <= last:
        if still[k]:
            j = k
            while j <= last and still[j]:
                j += 1
            t0, t1 = float(e.t_s[k]), float(e.t_s[j - 1])
            if t1 - t0 >= min_s:
                out.append((round(t0, 1), round(t1, 1)))
            k = j
        else:
            k += 1
    return out


GRASP_CLOSED = 0.3  # a gripper command below this closes it, above GRASP_OPEN opens it (hysteresis)
GRASP_OPEN = 0.6


def gripper_closings(e) -> dict[str, int]:
    """How many times each gripper was commanded closed in the take (a retried grasp closes twice)."""
    a = e.action
    out = {}
    for i, (name, g) in enumerate(zip(e.joints.names, e.joints.gripper)):
        if not g:
            continue
        state, n = None, 0
        for v in a[:, i]:
            if v < GRASP_CLOSED and state != "closed":
                n += 1
                state = "closed"
            elif v > GRASP_OPEN:
                state = "open"
        out[name] = int(n)
    return out


def retried_grasps(episodes) -> dict[int, str]:
    """Takes whose gripper closed more often than in most takes: a grasp that missed and was tried
    again. A policy without memory cannot tell the retry from the descent: such takes teach it to
    close too high. Episode index -> the reason, in words."""
    counts = {e.index: gripper_closings(e) for e in episodes}
    if not counts:
        return {}
    names = next(iter(counts.values())).keys()
    typical = {n: int(np.median([c[n] for c in counts.values()])) for n in names}
    out = {}
    for i, c in counts.items():
        extra = [f"the {n.replace('_', ' ')} closed {c[n]} times (most takes: {typical[n]})"
                 for n in names if c[n] > typical[n]]
        if extra:
            out[i] = "retried grasp: " + "; ".join(extra)
    return out


def grippers_closed(e: EpisodeData) -> dict[str, bool]:
    a = e.action[~e.implausible]
    return {name: bool(a.size and a[:, i].min() < GRIPPER_CLOSED)
            for i, (name, g) in enumerate(zip(e.joints.names, e.joints.gripper)) if g}


def robust_scales(episodes: Sequence[EpisodeData], chunk: int = max(CHUNK_OFFSETS) + 1) -> dict[str, np.ndarray]:
    """Per-joint scales for comparing states and actions, robust to a few bad episodes and with
    floors, so a joint that hardly moves in these takes does not turn sensor noise into signal."""
    from rig.train.data import action_chunks

    grip = np.array(episodes[0].joints.gripper)
    q = np.concatenate([e.q[e.valid] for e in episodes])
    dq = np.concatenate([e.dq[e.valid] for e in episodes])
    off = np.concatenate([(action_chunks(e.action, chunk) - e.q[:, None, :])[e.valid].reshape(-1, q.shape[1])
                          for e in episodes])

    def mad(x):
        return 1.4826 * np.median(np.abs(x - np.median(x, 0)), 0)

    return {"q": np.maximum(q.std(0), np.where(grip, 0.1, 0.05)),
            "dq": np.maximum(dq.std(0), np.where(grip, 0.5, 0.2)),
            "off": np.maximum(mad(off), np.where(grip, OFFSET_FLOOR_GRIPPER, OFFSET_FLOOR_RAD))}


def consistency(episodes: Sequence[EpisodeData], every: int = 5) -> dict[int, float]:
    """Per episode: how far its actions are from those of the nearest state in other episodes.

    For every ``every``-th tick the nearest state (joint positions and velocities, scaled) in
    each other episode is found, and the action offsets a[t+j]-q[t] of both are compared (in
    units of the offsets' robust spread). Median over the other episodes, then over the ticks.
    """
    from rig.train.data import action_chunks

    if len(episodes) < 2:
        return {e.index: 0.0 for e in episodes}
    sc = robust_scales(episodes)
    sel_j = np.array(CHUNK_OFFSETS)
    feats, offs = [], []
    for e in episodes:
        t = np.arange(0, e.ticks, every)
        t = t[e.valid[t]] if len(t) else t
        q, dq = e.q[t], e.dq[t]
        feats.append(np.concatenate([q / sc["q"], dq / sc["dq"]], 1).astype(np.float32))
        ch = action_chunks(e.action, max(CHUNK_OFFSETS) + 1)[t][:, sel_j, :]
        offs.append(((ch - q[:, None, :]) / sc["off"]).reshape(len(t), -1).astype(np.float32))
    out = {}
    for a, e in enumerate(episodes):
        per_other = []
        for b in range(len(episodes)):
            if b == a or not len(feats[b]) or not len(feats[a]):
                continue
            d2 = (feats[a] ** 2).sum(1)[:, None] + (feats[b] ** 2).sum(1)[None, :] - 2 * feats[a] @ feats[b].T
            nn = np.argmin(d2, axis=1)
            per_other.append(np.abs(offs[a] - offs[b][nn]).mean(1))
        # the median over the other episodes: one bad episode does not make its neighbours look bad
        out[e.index] = float(np.median(np.median(np.stack(per_other), axis=0))) if per_other else 0.0
    return out


def score_episodes(episodes: Sequence[EpisodeData], split: dict[int, str],
                   model_errors: dict[int, float]) -> list[EpisodeScore]:
    cons = consistency(episodes)
    closed = {e.index: grippers_closed(e) for e in episodes}
    scores = []
    by_split: dict[str, list[float]] = {}
    for i, err in model_errors.items():
        by_split.setdefault(split.get(i, "train"), []).append(err)
    for e in episodes:
        s = EpisodeScore(e.index, split.get(e.index, "train"))
        err = model_errors.get(e.index)
        group = by_split.get(s.split, [])
        if err is not None:
            s.model_error = round(err, 4)
            if len(group) >= MIN_GROUP:  # a typical value needs a few episodes to compare with
                s.model_ratio = round(err / max(float(np.median(group)), 1e-6), 2)
        c = cons.get(e.index)
        if c is not None:
            s.consistency = round(c, 4)
            others = [v for i, v in cons.items() if i != e.index]  # typical: of the *other* episodes
            typical = float(np.median(others)) if others else 0.0
            s.consistency_ratio = round(c / max(typical, 1e-6), 2) if len(episodes) >= 3 else None
        s.grippers_closed = closed[e.index]
        s.idle = idle_stretches(e)
        # reasons, most specific first
        bad = np.flatnonzero(e.implausible)
        if bad.size:
            s.reasons.append(f"implausible joint values at {bad.size} tick(s) from t={e.t_s[bad[0]]:.1f} s (a corrupt "
                             "bus read?): those ticks are left out of training; check the arm with `rig doctor`")
        for name, ok in s.grippers_closed.items():
            others = [closed[o.index][name] for o in episodes if o.index != e.index]
            if not ok and others and sum(others) >= len(others) / 2:
                s.reasons.append(f"the {name.replace('_', ' ')} never closed (it closes in "
                                 f"{sum(others)} of {len(others)} other episodes)")
        for t0, t1 in s.idle:
            s.reasons.append(f"idle for {t1 - t0:.1f} s mid-take (t={t0:.1f}-{t1:.1f} s)")
        if s.consistency_ratio is not None and s.consistency_ratio > CONSISTENCY_RATIO:
            s.reasons.append(f"actions disagree with similar states in other episodes ({s.consistency_ratio:.1f}x "
                             "the usual): shuffled, late, or from another take?")
        if s.model_ratio is not None and s.model_ratio > MODEL_RATIO:
            s.reasons.append(f"the model cannot explain its actions (error {s.model_ratio:.1f}x the typical "
                             f"{s.split} episode)")
        scores.append(s)
    return scores

"""One quick-train pass over a dataset: train, validate, score episodes, learning curve.

Stages, each reported as soon as it is done (the first feedback does not wait for the curve):
1. load the kept episodes (decoded once, cached), split them into train / held-out episodes;
2. train on the training episodes; per-joint validation error on the held-out ones;
3. score every episode and flag the ones the model cannot explain, with reasons;
4. learning curve: real sub-trainings on 25/50/75 % of the training episodes (same step count
   as the full run), validated on the same held-out episodes; a fitted trend and a projection.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rig.train.data import EpisodeCache, EpisodeData, build_samples
from rig.train.feedback import EpisodeScore, fit_trend, projection, score_episodes
from rig.train.trainer import Evaluation, TrainConfig, TrainedPolicy, evaluate, split_episodes, train_policy

CURVE_FRACTIONS = (0.25, 0.5, 0.75)
SCORE_EVERY = 8  # training episodes are scored on every 8th tick (a prediction pass costs time)


@dataclass
class TrainReport:
    dataset: str
    task: str | None
    episodes: list[int]
    train_episodes: list[int]
    val_episodes: list[int]
    seed: int
    steps: int = 0
    device: str = "cpu"
    val: dict[str, Any] | None = None  # Evaluation as a dict
    losses: list[tuple[int, float]] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    flagged: list[tuple[int, str]] = field(default_factory=list)
    learning_curve: list[tuple[int, float]] | None = None  # (training episodes, val joint error deg)
    trend: dict[str, float] | None = None
    projection: str | None = None
    more_episodes: float | None = None
    target: float | None = None
    success: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stage: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["more_episodes"] is not None and not math.isfinite(d["more_episodes"]):
            d["more_episodes"] = None
        return d

    # ---- text for people ----------------------------------------------------------------------
    def summary_lines(self) -> list[str]:
        out = [f"dataset {self.dataset}: {len(self.episodes)} kept episodes; trained on {len(self.train_episodes)}, "
               f"validated on held-out episodes {self.val_episodes} ({self.steps} steps, {self.device})"]
        v = self.val
        if v:
            out.append(f"validation action error: arm joints {v['joint_error']:.2f} deg, grippers "
                       f"{v['gripper_error']:.1f} %  (predicting the mean action: {v['baseline_joint_error']:.2f} deg; "
                       f"holding still: {v['hold_joint_error']:.2f} deg)")
            out.append(f"loss {v['loss']:.3f} vs {v['mean_action_loss']:.3f} for the mean action")
            width = max(len(k) for k in v["per_joint"])
            out.append("per joint:")
            for k, e in v["per_joint"].items():
                out.append(f"  {k:<{width}}  {e:7.2f}   (mean action {v['mean_action'][k]:7.2f})")
        if self.flagged:
            out.append("flagged episodes (likely bad demonstrations):")
            out += [f"  episode {i}: {r}" for i, r in self.flagged]
        elif self.scores:
            out.append("no episode flagged")
        if self.learning_curve:
            pts = ", ".join(f"{n} ep: {e:.2f}" for n, e in self.learning_curve)
            out.append(f"learning curve (val joint error, deg): {pts}")
        if self.projection:
            out.append(f"projection: {self.projection}")
        if self.success:
            s = self.success
            out.append(f"closed-loop success in the simulated world: {s['successes']}/{s['trials']} "
                       f"({100 * s['rate']:.0f} %), seeds {s['seeds'][0]}..{s['seeds'][-1]}")
            d = s.get("demonstrations")
            if d:
                out.append(f"  the scripted demonstrations through the same trials: {d['successes']}/{d['trials']} "
                           "(what right actions score)")
        if self.timings:
            out.append("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        return out


ProgressFn = Callable[[str, float, TrainReport], None]


def _eval_dict(ev: Evaluation) -> dict[str, Any]:
    d = dataclasses.asdict(ev)
    d["per_episode"] = {int(k): v for k, v in d["per_episode"].items()}
    return d


def _mean_action(episodes: list[EpisodeData]) -> np.ndarray:
    return np.concatenate([e.action for e in episodes]).mean(0)


def curve_sizes(n_train: int, fractions=CURVE_FRACTIONS) -> list[int]:
    return sorted({max(1, round(f * n_train)) for f in fractions} - {n_train})


def run_pipeline(dataset: str | Path, task: str | None = None, cfg: TrainConfig | None = None, *,
                 curve: bool = True, target: float | None = None, cache: EpisodeCache | None = None,
                 init: TrainedPolicy | None = None, progress: ProgressFn | None = None,
                 should_stop: Callable[[], bool] | None = None, only_success: bool = False,
                 episodes: list[EpisodeData] | None = None) -> tuple[TrainReport, TrainedPolicy | None]:
    """The whole pass. ``progress(stage, fraction, report)`` is called as results appear.

    ``episodes`` replaces reading the dataset (tests pass corrupted copies this way).
    ``only_success`` trains on episodes labelled successful only.
    Returns the report and the policy trained on all training episodes.
    """
    cfg = cfg or TrainConfig()
    t0 = time.monotonic()
    cache = cache or EpisodeCache()
    eps = episodes if episodes is not None else cache.load(dataset, task)
    if only_success:  # episodes labelled failed (or not labelled) are left out
        eps = [e for e in eps if e.success is True]
    by_index = {e.index: e for e in eps}
    train_idx, val_idx = split_episodes(list(by_index), cfg.seed, cfg.val_fraction)
    report = TrainReport(str(dataset), task, sorted(by_index), train_idx, val_idx, cfg.seed, target=target)
    report.timings["load_s"] = round(time.monotonic() - t0, 2)
    sizes = curve_sizes(len(train_idx))
    if init is not None:  # a warm-started model is not comparable with fresh sub-trainings: retrain it fresh too
        sizes.append(len(train_idx))
    n_runs = 1 + (len(sizes) if curve else 0)

    def tell(stage: str, frac: float) -> None:
        report.stage = stage
        if progress is not None:
            progress(stage, min(1.0, frac), report)

    tell("training", 0.0)
    train_eps = [by_index[i] for i in train_idx]
    val_eps = [by_index[i] for i in val_idx]
    policy = train_policy(train_eps, cfg, init=init, should_stop=should_stop,
                          progress=lambda f: tell("training", f / n_runs))
    if policy.stopped_early and should_stop is not None and should_stop():
        return report, None
    report.steps, report.device, report.losses = policy.steps, policy.device, policy.losses
    report.timings["train_s"] = round(policy.train_s, 2)

    t1 = time.monotonic()
    mean_a = _mean_action(train_eps)
    val_samples = build_samples(val_eps, cfg.k)
    ev = evaluate(policy, val_samples, mean_a)
    report.val = _eval_dict(ev)
    # in-sample errors of the training episodes, on a subset of ticks
    train_samples = build_samples(train_eps, cfg.k)
    sub = np.flatnonzero(train_samples.tick % SCORE_EVERY == 0)
    ev_train = evaluate(policy, _subset(train_samples, sub), mean_a)
    errors = {**ev_train.per_episode, **ev.per_episode}
    split = {i: "train" for i in train_idx} | {i: "val" for i in val_idx}
    scores: list[EpisodeScore] = score_episodes(eps, split, errors)
    report.scores = [s.to_dict() for s in scores]
    report.flagged = [(s.index, "; ".join(s.reasons)) for s in scores if s.flagged]
    report.timings["score_s"] = round(time.monotonic() - t1, 2)
    report.timings["first_feedback_s"] = round(time.monotonic() - t0, 2)
    tell("validated", 1 / n_runs)

    if curve:
        t2 = time.monotonic()
        points: list[tuple[int, float]] = []
        sub_cfg = dataclasses.replace(cfg, steps=policy.steps)  # same recipe, same step count
        for r, n in enumerate(sizes):
            subset = train_eps[:n]  # episodes in recording order: the curve replays collection
            p = train_policy(subset, sub_cfg, should_stop=should_stop,
                             progress=lambda f, r=r: tell("learning curve", (1 + r + f) / n_runs))
            if p.stopped_early and should_stop is not None and should_stop():
                return report, policy
            e = evaluate(p, val_samples, _mean_action(subset))
            points.append((n, round(e.joint_error, 4)))
        if init is None:
            points.append((len(train_idx), round(ev.joint_error, 4)))
        report.learning_curve = points
        trend = fit_trend(points)
        report.trend = None if trend is None else {"a": trend.a, "b": trend.b}
        report.projection, report.more_episodes = projection(trend, len(train_idx), ev.joint_error, target,
                                                             val_fraction=cfg.val_fraction)
        report.timings["curve_s"] = round(time.monotonic() - t2, 2)
    report.timings["total_s"] = round(time.monotonic() - t0, 2)
    tell("done", 1.0)
    return report, policy


def _subset(s, rows: np.ndarray):
    """The samples at ``rows`` (frames are shared, not copied)."""
    return dataclasses.replace(s, q=s.q[rows], dq=s.dq[rows], chunk=s.chunk[rows],
                               frame_rows={c: r[rows] for c, r in s.frame_rows.items()},
                               episode=s.episode[rows], tick=s.tick[rows])


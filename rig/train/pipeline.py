"""One quick-train pass over a dataset: train, validate, score episodes, learning curve.

Stages, each reported as soon as it is done (the first feedback does not wait for the curve):
1. load the kept episodes (decoded once, cached), split them into train / held-out episodes;
2. train on the training episodes; per-joint validation error on the held-out ones;
3. score every episode and flag the ones the model cannot explain, with reasons;
4. learning curve: real sub-trainings on a share of the training episodes (the report's
   CURVE_FRACTIONS, same step count as the full run), validated on the same held-out episodes; a
   fitted trend and a projection (:mod:`rig.train.report`, shared with the quick policy).
The report's text and success figures are the one report's (:func:`rig.train.report.summary_lines`).
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
from rig.train.feedback import EpisodeScore, score_episodes
from rig.train.report import curve_sizes, error_projection, fit_trend, summary_lines
from rig.train.trainer import Evaluation, TrainConfig, TrainedPolicy, evaluate, split_episodes, train_policy

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
    success: dict[str, Any] | None = None  # real-time trials (a figure: rig.train.report.figure)
    demonstrations: dict[str, Any] | None = None  # the scripted demonstrations through the same trials
    timings: dict[str, float] = field(default_factory=dict)
    stage: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["more_episodes"] is not None and not math.isfinite(d["more_episodes"]):
            d["more_episodes"] = None
        return d

    def summary_lines(self) -> list[str]:
        """The one report's text (rig.train.report.summary_lines)."""
        return summary_lines(self.to_dict())


ProgressFn = Callable[[str, float, TrainReport], None]


def _eval_dict(ev: Evaluation) -> dict[str, Any]:
    d = dataclasses.asdict(ev)
    d["per_episode"] = {int(k): v for k, v in d["per_episode"].items()}
    return d


def _mean_action(episodes: list[EpisodeData]) -> np.ndarray:
    return np.concatenate([e.action for e in episodes]).mean(0)


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
        report.trend = None if trend is None else {"a": trend.a, "b": trend.b, "link": trend.link}
        report.projection, report.more_episodes = error_projection(trend, len(train_idx), ev.joint_error, target,
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


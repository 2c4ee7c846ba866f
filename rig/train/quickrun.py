"""Quick-train measured in success: the quick policy, its closed-loop success, the takes.

One pass over a dataset:
1. load the kept takes; name the takes that hurt (retried grasps, failures, idle takes, outliers)
   and train on the rest (the report says which and why);
2. train the quick policy (:mod:`rig.train.quick`) within the budget;
3. a first success figure from fast trials in a direct MuJoCo loop, labelled "fast sim estimate",
   on seeds no take used (FAST_TRIALS by default: an interval within ±15 points);
4. the success-versus-takes curve (the same recipe on the report's CURVE_FRACTIONS of the takes)
   and its projection, "about N more takes to reach 80 %", or why the intervals are too wide;
5. optional: the privileged ceiling (true object positions, labelled), the effect of leaving each
   group of takes out, and real-time trials through the emulated buses (``evaluate_in_sim``).
Loss and per-joint errors stay as secondary lines, beside "holding still" and "the mean action".
Every success figure carries its trial count and 95 % interval; the report's shape and text are
the one report's (:mod:`rig.train.report`).
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

from rig.train import TrainError
from rig.train.fastsim import fast_trials
from rig.train.feedback import IDLE_S, idle_stretches, retried_grasps
from rig.train.quick import (
    QuickConfig,
    QuickEpisode,
    QuickPolicy,
    load_quick_episodes,
    quick_errors,
    train_quick,
)
from rig.train.report import (
    CURVE_FRACTIONS,
    FAST_TRIALS,
    TARGET_RATE,
    curve_point,
    curve_sizes,
    project_curve,
    summary_lines,
    trials_figure,
)
from rig.train.stats import KIND_LABELS

GROUPS = ("retried grasp", "failure", "idle", "outlier")
ProgressFn = Callable[[str, float, dict], None]


@dataclass
class QuickRunConfig:
    quick: QuickConfig = field(default_factory=QuickConfig)
    fast_trials: int = FAST_TRIALS  # trials of the fast estimate (0: none); each costs about 1.3 s
    seed0: int = 1000  # world seed of the first trial (the takes' seeds are 0...)
    trial_s: float = 20.0
    curve: bool = True
    ceiling: bool = False  # the privileged ceiling (simulated rig)
    leave_out: bool = False  # measure each group of takes that hurt
    target: float = TARGET_RATE
    keep_all: bool = False  # train on every kept take, the ones that hurt included
    replay_check: bool = True  # simulated rig: replay the takes labelled failure (are their actions wrong?)


def takes_that_hurt(eps: list[QuickEpisode]) -> dict[str, dict[int, str]]:
    """Group -> {episode: reason}. Retried grasps and idle stretches come from the takes' own
    actions, failures from the world's success check, outliers from a start far from the others."""
    out: dict[str, dict[int, str]] = {g: {} for g in GROUPS}
    out["retried grasp"] = retried_grasps(eps)
    for e in eps:
        if e.success is False:
            out["failure"][e.index] = "the task was not done at the end of the take (the world's success check)"
        idle = idle_stretches(e.as_episode(), IDLE_S)
        if idle:
            t0, t1 = idle[0]
            out["idle"][e.index] = f"idle for {t1 - t0:.1f} s mid-take (t={t0:.1f}-{t1:.1f} s)"
    if len(eps) >= 5:  # a take that does not start where the others do (arms elsewhere, a late start)
        starts = np.stack([e.q[0] for e in eps])
        med = np.median(starts, 0)
        dist = np.abs(starts - med).max(1)
        typical = max(float(np.median(dist)), 0.02)
        for e, d in zip(eps, dist):
            if d > 10 * typical and d > 0.2:
                out["outlier"][e.index] = f"starts {math.degrees(d):.0f} deg away from where the other takes start"
    return out


def judge_takes(eps: list[QuickEpisode], sim_task: str | None) -> tuple[dict[str, dict[int, str]], dict[int, bool]]:
    """:func:`takes_that_hurt`, and on the simulated rig (``sim_task``) each take labelled failure
    replayed on time from its seed: one whose actions do the task is not a failure (the world fell
    behind real time while recording and was judged before it got there)."""
    hurt = takes_that_hurt(eps)
    done: dict[int, bool] = {}
    if sim_task is not None and hurt["failure"]:
        from rig.train.fastsim import replay_takes

        failed = [e for e in eps if e.index in hurt["failure"] and e.seed is not None]
        done = replay_takes(sim_task, [(e.index, int(e.seed), e.q[0], e.action) for e in failed])
        for i, ok in done.items():
            if ok:
                del hurt["failure"][i]
            else:
                hurt["failure"][i] += "; its actions, replayed on time, do not do it either"
    return hurt, done


def fast_label(trials: int) -> str:
    """The fast estimate's label: "early" below FAST_TRIALS trials (the app's first estimate after a
    take; its interval is wide, and the figure's n and interval say how wide)."""
    return KIND_LABELS["fastsim"] + (f" (early: {trials} trials)" if trials < FAST_TRIALS else "")


def _brief(fig: dict[str, Any]) -> dict[str, Any]:
    """A figure without its per-trial rows (the leave-out comparisons)."""
    return {k: v for k, v in fig.items() if k != "per_trial"}


def run_quick(dataset: str | Path, task: str | None, rc: QuickRunConfig, *, reference=None,
              progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
              episodes: list[QuickEpisode] | None = None) -> tuple[dict, QuickPolicy | None]:
    """The whole pass; ``progress(stage, fraction, report)`` as results appear."""
    from rig.sim.tasks import TASKS, simulated_task

    t0 = time.monotonic()
    qc = rc.quick
    eps = episodes if episodes is not None else load_quick_episodes(dataset, task, qc.camera,
                                                                    need_camera=not qc.privileged)
    if not eps:
        raise TrainError(f"{dataset} has no kept takes{f' of task {task!r}' if task else ''}: record and keep some first")
    sim_task = simulated_task(task, (e.task for e in eps))
    rep: dict[str, Any] = {"policy": "quick", "dataset": str(dataset), "task": sim_task or task,
                           "episodes": [e.index for e in eps], "config": dataclasses.asdict(qc), "timings": {}}

    def tell(stage: str, frac: float) -> None:
        rep["stage"] = stage
        if progress is not None:
            progress(stage, min(1.0, frac), rep)

    if all(e.success is None for e in eps) and (rc.fast_trials or rc.curve):
        raise TrainError("these takes carry no success label and their task has no success check, so closed-loop "
                         f"success cannot be measured: record on the simulated rig ({', '.join(TASKS)}), or "
                         "train with --fast-trials 0 --no-curve for the action errors only")
    t1 = time.monotonic()
    hurt, replayed = judge_takes(eps, sim_task if rc.replay_check else None)
    if replayed:
        rep["replayed_failures"] = {str(i): ok for i, ok in replayed.items()}
        rep["timings"]["replay_s"] = round(time.monotonic() - t1, 1)
    if not rc.keep_all and not any(e.success for e in eps) and len(hurt["failure"]) == len(eps):
        raise TrainError(f"none of the {len(eps)} takes in {dataset} succeeded (the world's success check at the end of "
                         "each take), so there is nothing right to learn from: record takes that finish the task")
    rep["takes_that_hurt"] = {g: {str(i): r for i, r in d.items()} for g, d in hurt.items()}
    left_out = ("failure", "outlier") if qc.keep_retried else ("retried grasp", "failure", "outlier")
    drop = set() if rc.keep_all else {i for g in left_out for i in hurt[g]}
    train_eps = [e for e in eps if e.index not in drop]
    rep["trained_on"] = [e.index for e in train_eps]
    rep["left_out"] = {str(i): next(g for g in left_out if i in hurt[g]) for i in sorted(drop)}
    if len(train_eps) < 2:
        raise TrainError(f"only {len(train_eps)} usable take(s) after leaving out retried grasps, failures and outliers "
                         f"({len(eps)} kept); record more takes that finish the task")
    if sim_task is None and (rc.fast_trials or rc.curve or rc.ceiling):
        raise TrainError(f"closed-loop success needs a task with a success check (the simulated rig's "
                         f"{', '.join(TASKS)}); give --task, or train with --fast-trials 0 --no-curve")
    if reference is None and sim_task is not None and not qc.privileged and qc.locator == "difference":
        from rig.sim.reference import capture_reference

        reference = capture_reference(sim_task, qc.camera, start_q=np.median([e.q[0] for e in train_eps], 0))
    rep["timings"]["load_s"] = round(time.monotonic() - t0, 1)

    tell("training", 0.0)
    policy = train_quick(train_eps, sim_task or task or "", qc, reference=reference, should_stop=should_stop,
                         progress=lambda f: tell("training", 0.5 * f))
    rep["training"] = {"steps": policy.steps, "train_s": round(policy.train_s, 1), "device": qc.device,
                       "takes": len(train_eps), "losses": policy.losses}
    rep["locator"] = policy.locator_info
    rep["timings"]["train_s"] = round(policy.train_s, 1)
    if should_stop is not None and should_stop():
        return rep, None
    seeds = list(range(rc.seed0, rc.seed0 + rc.fast_trials))
    if rc.fast_trials and sim_task is not None:
        t1 = time.monotonic()
        rep["success"] = trials_figure("fastsim", fast_trials(policy.state(), sim_task, seeds, rc.trial_s),
                                       label=fast_label(rc.fast_trials))
        rep["timings"]["fast_trials_s"] = round(time.monotonic() - t1, 1)
        rep["curve"] = [curve_point(len(train_eps), rep["success"])]
        tell("estimated", 0.6)

    def sub_rate(sub: list[QuickEpisode], cfg: QuickConfig) -> tuple[dict, QuickPolicy]:
        p = train_quick(sub, sim_task or "", cfg, reference=reference, should_stop=should_stop)
        return trials_figure("fastsim", fast_trials(p.state(), sim_task, seeds, rc.trial_s),
                             label=fast_label(rc.fast_trials)), p

    fixed = dataclasses.replace(qc, steps=policy.steps)  # the same recipe and step count at every size
    held = None
    if rc.curve and sim_task is not None and rc.fast_trials:
        sizes = curve_sizes(len(train_eps), CURVE_FRACTIONS, least=2)
        pts = []
        for r, n in enumerate(sizes):
            if should_stop is not None and should_stop():
                return rep, policy
            res, p = sub_rate(train_eps[:n], fixed)  # takes in recording order: the curve replays collection
            pts.append(curve_point(n, res))
            held = (p, train_eps[n:])
            tell("success curve", 0.6 + 0.3 * (r + 1) / len(sizes))
        rep["curve"] = pts + rep.get("curve", [])
    if "curve" in rep:
        rep["projection"], rep["more_takes"] = project_curve(rep["curve"], len(train_eps), rc.target)
        rep["target"] = rc.target
    # secondary: action errors on takes the scoring model never saw (the largest curve point's)
    if held is not None and held[1]:
        rep["errors"] = {"on": "takes the model did not train on", **quick_errors(held[0], held[1])}
    else:
        rep["errors"] = {"on": "the training takes (no held-out takes without the curve)", **quick_errors(policy, train_eps)}
    if rc.ceiling and sim_task is not None and rc.fast_trials:
        res, _ = sub_rate(train_eps, dataclasses.replace(fixed, privileged=True))
        rep["ceiling"] = {**res, "label": "privileged ceiling: the same policy given the true object positions "
                                          f"({res['label']})"}
    if rc.leave_out and sim_task is not None and rc.fast_trials:
        base, _ = sub_rate(eps, fixed)
        out = {"all takes": {"takes": len(eps), **_brief(base)}}
        for g in GROUPS:
            if hurt[g]:
                rest = [e for e in eps if e.index not in hurt[g]]
                if len(rest) >= 2:
                    res, _ = sub_rate(rest, fixed)
                    out[f"without {g}"] = {"takes": len(rest), "left_out": sorted(hurt[g]), **_brief(res),
                                           "change": round(res["rate"] - base["rate"], 3)}
        rep["leave_out"] = out
    rep["timings"]["total_s"] = round(time.monotonic() - t0, 1)
    tell("done", 1.0)
    return rep, policy


__all__ = ["GROUPS", "QuickRunConfig", "judge_takes", "run_quick", "summary_lines", "takes_that_hurt"]

"""The one training report: success figures with their trial counts and 95 % intervals, the
success-versus-takes curve, one trend fit, one projection, and the text for people.

Both recipes write into a report of this shape (the quick policy: :mod:`rig.train.quickrun`; the
visuomotor policy: :mod:`rig.train.pipeline`) and print it with :func:`summary_lines`; the app's
panel reads the same fields. A success figure is a dict made by :func:`figure` from a
:class:`rig.train.stats.SuccessFigure`: ``kind``, ``label``, ``successes``, ``trials`` and ``n``
(the same count), ``rate``, ``ci95`` (the Wilson interval), ``text``, and where known the world
seeds and each trial's outcome. A curve point is a figure with ``takes``.

The report's figures (keys), best signal first: ``arm_trials`` (trials on the arms),
``success_realtime`` (real-time trials through the buses), ``success`` (the fast sim estimate of
the quick policy, or the visuomotor policy's real-time trials), ``ceiling`` (the privileged
ceiling), ``demonstrations`` (the scripted demonstrations: a reference, never the policy's figure).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np

from rig.train.stats import KINDS, MAX_PROJECTABLE_WIDTH, SuccessFigure, trials_for_halfwidth

CURVE_FRACTIONS = (0.25, 0.5)  # the curve's sub-trainings: this share of the training takes (and all of them)
TARGET_RATE = 0.8
# Fast sim trials cost about 1.3 s each: the default estimate is narrow enough to project from
# (±15 points at worst, 39 trials) and to tell 65 % from 90 %.
FAST_TRIALS = 40
EARLY_TRIALS = 10  # the app's first estimate after a take (its latency matters more): labelled early
DEMO_LABEL = "the scripted demonstrations through the same trials"
FIGURE_KEYS = ("arm_trials", "success_realtime", "success", "ceiling", "demonstrations")


def curve_sizes(n_train: int, fractions: Sequence[float] = CURVE_FRACTIONS, least: int = 1) -> list[int]:
    """The sub-training sizes of the curve (the full set is the last point, not listed)."""
    return sorted({max(least, round(f * n_train)) for f in fractions} - {n_train})


# ---- figures ------------------------------------------------------------------------------------------

def figure(kind: str, successes: int, trials: int, *, label: str | None = None, seeds: Iterable[int] | None = None,
           per_trial: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    """One success figure as the report holds it (JSON-ready)."""
    d = SuccessFigure(kind, int(successes), int(trials)).to_dict()
    if label:
        d["label"] = label
    if seeds is not None:
        d["seeds"] = [int(s) for s in seeds]
    if per_trial is not None:
        d["per_trial"] = per_trial
    d.update(extra)
    return d


def trials_figure(kind: str, rows: Sequence[Any], label: str | None = None, **extra: Any) -> dict[str, Any]:
    """A figure from trial outcomes (objects with ``seed``, ``success``, ``t_success_s``; a dataclass
    keeps all its fields in ``per_trial``)."""
    per = [{**(asdict(r) if is_dataclass(r) and not isinstance(r, type) else
               {"t_success_s": getattr(r, "t_success_s", None)}),
            "seed": int(r.seed), "success": bool(r.success)} for r in rows]
    return figure(kind, sum(p["success"] for p in per), len(per), label=label, seeds=[p["seed"] for p in per],
                  per_trial=per, **extra)


def as_figure(d: dict[str, Any]) -> SuccessFigure:
    return SuccessFigure(d["kind"], int(d["successes"]), int(d["trials"]))


def curve_point(takes: int, fig: dict[str, Any]) -> dict[str, Any]:
    """A point of the success-vs-takes curve: the figure measured with ``takes`` training takes."""
    return {"takes": int(takes), **{k: v for k, v in fig.items() if k != "per_trial"}}


def figures(rep: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The report's success figures, best signal first (see :data:`rig.train.stats.KINDS`); each
    with its ``text`` and ``label`` (a bare SuccessFigure.to_dict() of an older writer gets them)."""
    found = [(k, {**as_figure(rep[k]).to_dict(), **rep[k]}) for k in FIGURE_KEYS
             if isinstance(rep.get(k), dict) and {"kind", "successes", "trials"} <= set(rep[k])]
    return sorted(found, key=lambda kv: (KINDS.index(kv[1]["kind"]), FIGURE_KEYS.index(kv[0])))


def seeds_text(fig: dict[str, Any]) -> str:
    s = fig.get("seeds")
    return f", seeds {s[0]}..{s[-1]}" if s else ""


# ---- one trend, one projection --------------------------------------------------------------------------

@dataclass(frozen=True)
class Trend:
    """link(y) = a + b * log(takes), least squares: ``link`` "log" for an error (a power law),
    "logit" for a success rate (kept off 0 and 1)."""

    a: float
    b: float
    link: str = "log"

    def __call__(self, n: float) -> float:
        y = self.a + self.b * math.log(n)
        return math.exp(y) if self.link == "log" else 1.0 / (1.0 + math.exp(-y))

    def takes_for(self, goal: float) -> float:
        if self.b == 0:
            return math.inf
        return math.exp((_link(self.link, goal) - self.a) / self.b)


def _link(link: str, y: float) -> float:
    if link == "log":
        return math.log(y)
    y = min(max(y, 0.03), 0.97)
    return math.log(y / (1 - y))


def fit_trend(points: Sequence[tuple[float, float]], link: str = "log") -> Trend | None:
    """The trend of (takes, value) points; None with fewer than two sizes."""
    pts = [(n, y) for n, y in points if n > 0 and math.isfinite(y) and (link != "log" or y > 0)]
    if len({n for n, _ in pts}) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.array([_link(link, v) for _, v in pts])
    b, a = np.polyfit(x, y, 1)
    return Trend(float(a), float(b), link)


def _more(trend: Trend, goal: float, have: float, held_out: float = 0.0) -> float:
    """More takes to reach ``goal`` on the trend; counts of training takes scaled up by the share
    that validation holds out."""
    keep = max(1e-6, 1 - held_out)
    return max(1.0, math.ceil(trend.takes_for(goal) / keep - have / keep - 1e-6))


def error_projection(trend: Trend | None, n_train: int, current: float, target: float | None, unit: str = "deg",
                     val_fraction: float = 0.2) -> tuple[str, float | None]:
    """The visuomotor recipe's projection on its action error: a sentence and the number of more
    episodes (None: not projectable)."""
    if trend is None:
        return "not enough episodes for a trend yet (it needs two training-set sizes)", None
    goal = target if target is not None else current / 2
    what = f"{goal:.2f} {unit}" if target is not None else f"half the present error ({goal:.2f} {unit})"
    if current <= goal:
        return f"target reached: {current:.2f} {unit} <= {goal:.2f} {unit}", 0.0
    if -trend.b < 0.02:
        return (f"the error is not falling as episodes are added (trend n^-{max(-trend.b, 0):.2f}): more of the "
                "same will not reach " + what + "; look at the flagged episodes, vary the demonstrations"), None
    more = _more(trend, goal, n_train, val_fraction)
    if more > 1000:
        return f"more than 1000 more episodes to reach {what} at this trend (n^-{-trend.b:.2f})", more
    return f"about {int(more)} more episodes to reach {what} (trend n^-{-trend.b:.2f})", more


def success_projection(points: Sequence[tuple[int, SuccessFigure]], have: int,
                       target: float = TARGET_RATE) -> tuple[str, float | None]:
    """How many more takes reach ``target`` on the success-vs-takes trend: a sentence and the
    number (None when the figures cannot say). A figure whose interval is wider than
    MAX_PROJECTABLE_WIDTH gives no number: the sentence says so and how many trials would."""
    pts = [(n, f) for n, f in points if f.trials]
    if not pts:
        return "no success measured yet", None
    last = pts[-1][1]
    wide = [f for _, f in pts if not f.projectable]
    if wide:
        need = trials_for_halfwidth(MAX_PROJECTABLE_WIDTH / 2)
        return (f"the interval is too wide to project ({wide[0].text()}): it needs at least {need} trials per "
                f"point (--fast-trials {FAST_TRIALS})"), None
    rate = last.rate or 0.0
    if rate >= target:
        return f"target reached: {last.text()} >= {100 * target:.0f} %", 0.0
    trend = fit_trend([(n, f.rate or 0.0) for n, f in pts], "logit")
    if trend is None:
        return f"one point so far ({last.text()} with {have} takes): the trend needs two", None
    if trend.b <= 0.05:
        return (f"success is not rising with more takes ({', '.join(f'{n}: {100 * (f.rate or 0):.0f} %' for n, f in pts)}): "
                f"more of the same will not reach {100 * target:.0f} %; look at the takes that hurt"), None
    more = _more(trend, target, have)
    if more > 1000:
        return f"more than 1000 more takes to reach {100 * target:.0f} % at this trend", more
    return f"about {int(more)} more takes to reach {100 * target:.0f} % (trend from {len(pts)} points)", more


def project_curve(curve: Sequence[dict[str, Any]], have: int, target: float = TARGET_RATE) -> tuple[str, float | None]:
    """:func:`success_projection` of a report's curve points."""
    return success_projection([(int(p["takes"]), as_figure(p)) for p in curve], have, target)


# ---- text for people ---------------------------------------------------------------------------------

def figure_line(fig: dict[str, Any]) -> str:
    return f"{fig['label']}: {fig['text']}{seeds_text(fig)}"


def stopped_line(fig: dict[str, Any], task: str | None) -> str | None:
    """Where a figure's failed trials stopped: how many never reached each of the task's stages
    (in the task's order), the collector's "which part do my takes not teach yet"."""
    stopped = [t["stopped_before"] for t in fig.get("per_trial", ()) if t.get("stopped_before")]
    if not stopped:
        return None
    from rig.sim.tasks import TASKS, get_task

    order = [st.name for st in get_task(task).stages] if task in TASKS else []
    counts = Counter(stopped)
    names = sorted(counts, key=lambda n: (order.index(n) if n in order else len(order), n))
    return (f"  where the failed trials stopped ({fig['label']}): "
            + ", ".join(f"{counts[n]} before \"{n}\"" for n in names))


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """The report for people, either recipe: success first (the best signal leading, every figure
    with its n and 95 % interval), the curve and its projection, then the secondary lines."""
    out = []
    figs = figures(rep)
    for i, (_, f) in enumerate(figs):
        if i == 0 and f["kind"] != "demo":
            out.append(f"closed-loop success: {f['text']}, {f['label']}{seeds_text(f)}"
                       + (" (no take used them)" if f.get("seeds") else ""))
        else:
            out.append(f"  {figure_line(f)}" + (" (what right actions score)" if f["kind"] == "demo" else ""))
        stopped = stopped_line(f, rep.get("task"))
        if stopped:
            out.append(stopped)
    if "val_episodes" in rep:  # the visuomotor recipe: action errors on held-out episodes
        out += _visuomotor_lines(rep)
    if rep.get("curve"):
        out.append("success vs takes: " + ", ".join(f"{p['takes']} takes {p['text']}" for p in rep["curve"]))
    if rep.get("projection"):
        out.append(f"projection: {rep['projection']}")
    if "training" in rep:
        out += _quick_lines(rep)
    if rep.get("timings"):
        out.append("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in rep["timings"].items()))
    return out


def _visuomotor_lines(rep: dict[str, Any]) -> list[str]:
    out = [f"dataset {rep['dataset']}: {len(rep['episodes'])} kept episodes; trained on {len(rep['train_episodes'])}, "
           f"validated on held-out episodes {rep['val_episodes']} ({rep['steps']} steps, {rep['device']})"]
    v = rep.get("val")
    if v:
        out.append(f"validation action error: arm joints {v['joint_error']:.2f} deg, grippers "
                   f"{v['gripper_error']:.1f} %  (predicting the mean action: {v['baseline_joint_error']:.2f} deg; "
                   f"holding still: {v['hold_joint_error']:.2f} deg)")
        out.append(f"loss {v['loss']:.3f} vs {v['mean_action_loss']:.3f} for the mean action")
        width = max(len(k) for k in v["per_joint"])
        out.append("per joint:")
        for k, e in v["per_joint"].items():
            out.append(f"  {k:<{width}}  {e:7.2f}   (mean action {v['mean_action'][k]:7.2f})")
    if rep.get("flagged"):
        out.append("flagged episodes (likely bad demonstrations):")
        out += [f"  episode {i}: {r}" for i, r in rep["flagged"]]
    elif rep.get("scores"):
        out.append("no episode flagged")
    if rep.get("learning_curve"):
        pts = ", ".join(f"{n} ep: {e:.2f}" for n, e in rep["learning_curve"])
        out.append(f"learning curve (val joint error, deg): {pts}")
    return out


def _quick_lines(rep: dict[str, Any]) -> list[str]:
    out = []
    t = rep.get("training", {})
    out.append(f"trained on {t.get('takes')} of {len(rep['episodes'])} kept takes ({t.get('steps')} steps, "
               f"{t.get('train_s')} s, {t.get('device')})")
    left_out = rep.get("left_out", {})  # take -> the group it was left out for
    for g, d in rep.get("takes_that_hurt", {}).items():
        if d:
            gone = sorted((i for i in d if i in left_out), key=int)
            if len(gone) == len(d):
                how = " (left out)"
            elif gone:
                why = "/".join(sorted({left_out[i] for i in gone}))
                how = f" (trained on; {', '.join(gone)} left out as {why})"
            else:
                how = "" if g == "idle" else " (trained on)"
            out.append(f"takes that hurt, {g}: {', '.join(sorted(d, key=int))}{how}")
    lo = rep.get("leave_out")
    if lo:
        out.append("leaving takes out: " + "; ".join(f"{k} ({v['takes']} takes) {v['text']}" for k, v in lo.items()))
    e = rep.get("errors")
    if e:
        out.append(f"action error ({e['on']}): arm joints {e['joint_error']:.2f} deg, grippers {e['gripper_error']:.1f} % "
                   f"(holding still: {e['hold_joint_error']:.2f} deg, {e['hold_gripper_error']:.1f} %; the mean action: "
                   f"{e['mean_action_joint_error']:.2f} deg, {e['mean_action_gripper_error']:.1f} %)")
    if t.get("losses"):
        out.append(f"loss {t['losses'][-1][1]:.3f} at step {t['losses'][-1][0]}")
    loc = rep.get("locator")
    if loc:
        out.append(f"objects located by: {loc.get('method')}"
                   + (f" against {loc['reference']}" if loc.get("reference") else "")
                   + (f"; not found in takes {loc['not_found']}" if loc.get("not_found") else ""))
    return out


__all__ = ["CURVE_FRACTIONS", "DEMO_LABEL", "EARLY_TRIALS", "FAST_TRIALS", "FIGURE_KEYS", "TARGET_RATE", "Trend", "as_figure",
           "curve_point", "curve_sizes", "error_projection", "figure", "figure_line", "figures", "fit_trend",
           "project_curve", "success_projection", "summary_lines", "trials_figure"]

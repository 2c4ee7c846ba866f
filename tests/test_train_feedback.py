"""Feedback: corrupted episodes are flagged with a reason; the learning curve comes from real
sub-trainings; the trend and projection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

from rig.train.data import EpisodeCache, build_samples  # noqa: E402
from rig.train.feedback import idle_stretches, score_episodes  # noqa: E402
from rig.train.pipeline import run_pipeline  # noqa: E402
from rig.train.report import Trend, curve_sizes, error_projection, fit_trend  # noqa: E402
from rig.train.trainer import TrainConfig, evaluate, train_policy  # noqa: E402

CFG = TrainConfig(steps=25, seed=0)


@pytest.fixture(scope="module")
def episodes(sim_dataset):
    return EpisodeCache().load(sim_dataset)


@pytest.fixture(scope="module")
def clean(episodes):
    """One full pass over the clean takes, learning curve included."""
    return run_pipeline("sim", cfg=CFG, curve=True, episodes=episodes)


def _flags(episodes):
    report, _ = run_pipeline("sim", cfg=CFG, curve=False, episodes=episodes)
    return dict(report.flagged), report


def test_clean_takes_are_not_flagged_for_their_actions(episodes, clean):
    report, _ = clean
    flags = dict(report.flagged)
    assert len(report.scores) == len(episodes)
    assert not any("disagree" in r or "cannot explain" in r for r in flags.values()), flags


def test_actions_shuffled_in_time_are_flagged(episodes):
    rng = np.random.default_rng(0)
    bad = episodes[1]
    shuffled = bad.with_actions(bad.action[rng.permutation(bad.ticks)])
    flags, _ = _flags([episodes[0], shuffled, *episodes[2:]])
    assert bad.index in flags, flags
    assert "disagree with similar states" in flags[bad.index]
    assert not any("disagree" in r for i, r in flags.items() if i != bad.index), flags


def test_actions_from_another_episode_are_flagged(episodes):
    bad, donor = episodes[2], episodes[0]
    n = min(bad.ticks, donor.ticks)
    swapped = dataclasses.replace(bad, q=bad.q[:n], dq=bad.dq[:n], action=donor.action[:n].copy(),
                                  t_s=bad.t_s[:n], frame_of_tick={c: r[:n] for c, r in bad.frame_of_tick.items()})
    flags, _ = _flags([*episodes[:2], swapped, *episodes[3:]])
    assert bad.index in flags and "disagree" in flags[bad.index], flags


def test_an_idle_stretch_and_a_gripper_that_never_closed_are_named(episodes):
    e = episodes[3]
    # The recorded operator may itself pause on a busy machine, so the actions are made here: the
    # waist sweeps 0.15 rad and back once a second (never still), and every joint holds from 1 s to 4.5 s
    # of the 6 s take, on the take's own clock. What is reported must be that hold, where it is.
    a = np.repeat(e.action[:1], e.ticks, axis=0)
    a[:, 0] += 0.3 * np.abs(e.t_s % 1.0 - 0.5)
    assert not idle_stretches(e.with_actions(a))
    held = np.flatnonzero((e.t_s >= 1.0) & (e.t_s < 4.5))
    a[held] = a[held[0]]
    [(t0, t1)] = idle_stretches(e.with_actions(a))
    assert t0 <= e.t_s[held[0]] + 0.05 and t1 >= e.t_s[held[-1]] - 0.05  # the whole hold
    assert t1 - t0 < e.t_s[held[-1]] - e.t_s[held[0]] + 0.3  # and only the hold
    others_close = [x for x in episodes if x.action[:, 13].min() < 0.35]
    if len(others_close) < 2:
        pytest.skip("the short takes end before the right gripper closes")
    b = e.with_actions(np.where(np.arange(14) == 13, np.maximum(a, 0.9), a))
    eps = [*episodes[:3], b]
    scores = {s.index: s for s in score_episodes(eps, {}, {})}  # the model-free checks
    reasons = "; ".join(scores[e.index].reasons)
    assert "right gripper never closed" in reasons, reasons
    assert f"idle for {t1 - t0:.1f} s mid-take (t={t0:.1f}-{t1:.1f} s)" in reasons, reasons


def test_learning_curve_comes_from_real_sub_trainings(episodes, clean):
    report, policy = clean
    n_train = len(report.train_episodes)
    sizes = [n for n, _ in report.learning_curve]
    assert sizes == [*curve_sizes(n_train), n_train] and len(sizes) >= 2
    # the smallest point is exactly a separate training on the first episodes, same step count
    by = {e.index: e for e in episodes}
    sub = [by[i] for i in report.train_episodes[: sizes[0]]]
    p = train_policy(sub, dataclasses.replace(CFG, steps=policy.steps))
    val = build_samples([by[i] for i in report.val_episodes], CFG.k)
    err = evaluate(p, val, np.concatenate([e.action for e in sub]).mean(0)).joint_error
    assert report.learning_curve[0][1] == pytest.approx(err, rel=1e-4)
    assert report.learning_curve[-1][1] == pytest.approx(report.val["joint_error"], rel=1e-4)
    assert report.projection and report.trend is not None


def test_trend_and_projection():
    curve = [(n, 8.0 * n ** -0.5) for n in (5, 10, 15, 20)]
    t = fit_trend(curve)  # log err = a + b log n
    assert np.exp(t.a) == pytest.approx(8.0, rel=1e-6) and t.b == pytest.approx(-0.5, rel=1e-6)
    text, more = error_projection(t, 20, t(20), target=1.0, val_fraction=0.2)
    # 8 / sqrt(n) = 1 at n = 64 training episodes = 80 in all; 20 training = 25 in all
    assert more == 55 and text.startswith("about 55 more episodes to reach 1.00 deg")
    flat, more = error_projection(Trend(np.log(2.0), 0.0), 20, 2.0, target=1.0)
    assert more is None and "not falling" in flat
    done, more = error_projection(t, 20, 0.9, target=1.0)
    assert more == 0 and "reached" in done
    assert fit_trend([(4, 1.0)]) is None

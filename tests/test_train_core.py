"""One training core: the step loop both recipes run, the one report (every success figure with
its n and 95 % interval, a projection that refuses when the interval is too wide), and the fast
simulator shaping targets with the control loop's own function, for the rig its config describes."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from rig.config import load_config
from rig.session import RigSession, wait_until
from rig.shaping import TargetLimits, shape_target
from rig.sources import PolicySource
from rig.ticks import SOURCES, TickQueue
from rig.train.report import (
    FAST_TRIALS,
    curve_point,
    figure,
    figures,
    project_curve,
    success_projection,
    summary_lines,
    trials_figure,
)
from rig.train.stats import MAX_PROJECTABLE_WIDTH, SuccessFigure, trials_for_halfwidth, wilson
from tests.rigs import pair_buses, pair_config

# ---- the one report --------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Trial:
    seed: int
    success: bool
    t_success_s: float | None
    ticks: int = 1000


def _report() -> dict:
    fast = trials_figure("fastsim", [_Trial(1000 + i, i % 4 != 0, 3.0 if i % 4 else None) for i in range(40)])
    return {"policy": "quick", "dataset": "d.zarr", "episodes": list(range(50)),
            "success": fast,
            "success_realtime": trials_figure("realtime", [_Trial(2000 + i, i < 13, 5.0) for i in range(20)]),
            "demonstrations": trials_figure("demo", [_Trial(2000 + i, True, 4.0) for i in range(20)],
                                            label="the scripted demonstrations through the same trials"),
            "ceiling": {**figure("fastsim", 38, 40), "label": "privileged ceiling (fast sim estimate)"},
            "curve": [curve_point(10, figure("fastsim", 12, 40)), curve_point(20, figure("fastsim", 22, 40)),
                      curve_point(38, fast)],
            "training": {"takes": 38, "steps": 5000, "train_s": 300.0, "device": "cpu", "losses": [(5000, 0.1)]},
            "timings": {"total_s": 400.0}}


def test_every_success_figure_carries_its_n_and_wilson_interval_in_json_and_text():
    rep = json.loads(json.dumps(_report()))  # as the JSON report holds it
    figs = [f for _, f in figures(rep)] + rep["curve"]
    assert len(figs) == 4 + 3
    for f in figs:
        assert f["n"] == f["trials"] > 0 and f["kind"] in ("realtime", "fastsim", "demo") and f["label"]
        lo, hi = wilson(f["successes"], f["trials"])
        assert f["ci95"] == [pytest.approx(lo), pytest.approx(hi)] and lo <= f["rate"] <= hi
    assert rep["success"]["per_trial"][1] == {"seed": 1001, "success": True, "t_success_s": 3.0, "ticks": 1000}
    lines = summary_lines(rep)
    # the best signal leads (real time before the fast estimate), each figure written one way
    assert lines[0] == ("closed-loop success: 13/20 = 65 % (95 % CI 43-82 %, n=20), real-time trials (simulated "
                        "world, through the buses), seeds 2000..2019 (no take used them)")
    assert lines[1].startswith("  fast sim estimate: 30/40 = 75 % (95 % CI 60-86 %, n=40)")
    assert any(s.startswith("  the scripted demonstrations through the same trials: 20/20") for s in lines)
    curve = next(s for s in lines if s.startswith("success vs takes"))
    assert curve.count("n=40") == 3 and "10 takes 12/40 = 30 % (95 % CI" in curve


def test_the_report_says_which_takes_that_hurt_were_trained_on():
    """Retried grasps kept (a task's recipe): the report must not say they were left out."""
    hurt = {"retried grasp": {"2": "r", "36": "r"}, "failure": {"6": "f", "36": "f"}, "idle": {"9": "i"},
            "outlier": {}}
    kept = summary_lines({**_report(), "takes_that_hurt": hurt, "left_out": {"6": "failure", "36": "failure"}})
    assert "takes that hurt, retried grasp: 2, 36 (trained on; 36 left out as failure)" in kept
    assert "takes that hurt, failure: 6, 36 (left out)" in kept and "takes that hurt, idle: 9" in kept
    left = summary_lines({**_report(), "takes_that_hurt": hurt,
                          "left_out": {"2": "retried grasp", "36": "retried grasp", "6": "failure"}})
    assert "takes that hurt, retried grasp: 2, 36 (left out)" in left


def test_the_report_says_where_the_failed_trials_stopped_in_the_tasks_order():
    from rig.train.fastsim import FastTrial

    rows = [FastTrial(3000 + i, False, None, stop) for i, stop in
            enumerate(["the peg in the socket"] * 3 + ["both parts lifted"] * 2)] + [FastTrial(3010, True, 9.0)]
    rep = {**_report(), "task": "insertion", "success": trials_figure("fastsim", rows)}
    rep.pop("success_realtime")
    lines = summary_lines(rep)
    assert lines[0].startswith("closed-loop success: 1/6")
    assert lines[1] == ('  where the failed trials stopped (fast sim estimate): 2 before "both parts lifted", '
                        '3 before "the peg in the socket"')


def test_the_projection_refuses_when_the_interval_is_too_wide():
    # the case: 13/20 cannot tell 65 % from 80 %; no number of takes is invented from it
    wide = [(9, SuccessFigure("fastsim", 3, 10)), (18, SuccessFigure("fastsim", 3, 10)),
            (37, SuccessFigure("realtime", 13, 20))]
    text, more = success_projection(wide, 37)
    assert more is None and text.startswith("the interval is too wide to project (3/10 = 30 % (95 % CI 11-60 %")
    assert f"--fast-trials {FAST_TRIALS}" in text
    # the same rates measured on the default number of fast trials: a number
    narrow = [(n, SuccessFigure("fastsim", round(f.rate * FAST_TRIALS), FAST_TRIALS)) for n, f in
              [(9, SuccessFigure("fastsim", 3, 10)), (18, SuccessFigure("fastsim", 5, 10)),
               (37, SuccessFigure("fastsim", 13, 20))]]
    text, more = success_projection(narrow, 37)
    assert more is not None and text.startswith(f"about {int(more)} more takes to reach 80 %")
    # a rate at the target on too few trials is not "reached" either
    assert success_projection([(20, SuccessFigure("fastsim", 9, 10))], 20)[1] is None
    # from the report's own curve points
    assert project_curve(_report()["curve"], 38)[1] is not None


def test_the_default_fast_estimate_is_narrow_enough_to_project_at_any_rate():
    assert FAST_TRIALS >= trials_for_halfwidth(0.15) == 39
    for k in range(FAST_TRIALS + 1):
        lo, hi = wilson(k, FAST_TRIALS)
        assert hi - lo <= MAX_PROJECTABLE_WIDTH
        assert SuccessFigure("fastsim", k, FAST_TRIALS).projectable


# ---- the target shaping: one function for the tick and the fast simulator --------------------------------


class _FarPolicy:
    """Always asks for a waist far beyond its joint limit (3 rad; the limit is 1): the tick's clamps decide."""

    def __init__(self, n: int = 4):
        self.cfg = type("Cfg", (), {"n": n, "k": 10, "cameras": (), "image_hw": (4, 4)})()
        self.start_q = None
        self.target = np.zeros(n, np.float32)
        self.target[0] = 3.0
        self.target[n - 1] = 0.5

    def reset(self, seed: int | None = None) -> None:
        pass

    def predict_chunk(self, images, q, dq):
        return np.repeat(self.target[None], self.cfg.k, 0)


def test_the_tick_moves_the_followers_targets_by_the_shared_shaping_function(emulated, tmp_path):
    leader, follower = pair_buses(emulated)
    cfg = pair_config(tmp_path, leader, follower, engage_seconds=0.2)
    sink = TickQueue(10_000)
    policy = _FarPolicy()
    with RigSession(cfg, ports={"leader": leader.port, "follower": follower.port}, sink=sink) as s:
        loop = s.teleop
        s.start(6.0)
        assert wait_until(lambda: loop.engaged, 5)
        loop.use(PolicySource(policy), engage_s=0.0)
        assert wait_until(lambda: loop.target[0] > 0.999, 5)
        loop.stop()
        s.wait()
    recs = sink.drain()
    lim = TargetLimits.of(cfg.followers, cfg.safety)
    assert lim.upper[0] == 1.0 and lim.max_step[0] == cfg.safety.max_step_rad
    first = next(i for i, r in enumerate(recs) if SOURCES[r.source] == "policy")
    target = recs[first - 1].action.astype(np.float64)
    moved = 0
    for r in recs[first:]:
        if SOURCES[r.source] != "policy":
            break
        if r.missed & 0b10:  # the follower's read missed (bit 1, after the one leader's): the arm holds
            assert np.allclose(r.action, target, atol=1e-6)
            continue
        want = policy.target.astype(np.float64)
        shape_target(want, target, lim.lower, lim.upper, lim.max_step)
        assert np.allclose(r.action, target, atol=1e-6), (r.tick, r.action, target)
        moved += 1
    assert moved >= math.ceil(1.0 / cfg.safety.max_step_rad)  # several clamped steps up to the limit
    assert target[0] == pytest.approx(1.0) and recs[-1].action[0] == pytest.approx(1.0)  # at the limit, never beyond


class _HoldFar(_FarPolicy):
    """The simulated rig's 14 values: asks both waists beyond their limits."""

    def __init__(self):
        from rig.sim.scene import START_ARM_POSE

        super().__init__(14)
        self.start_q = np.array([*START_ARM_POSE, 0.5] * 2, np.float32)
        self.target = self.start_q.copy()
        self.target[[0, 7]] = 3.0


def test_the_fast_simulator_shapes_with_the_ticks_function_at_the_configs_rate(monkeypatch):
    pytest.importorskip("mujoco")
    import rig.shaping
    from rig.train.fastsim import _trial

    calls: list[tuple] = []
    real = rig.shaping.shape_target

    def spy(want, target, lower, upper, max_step):
        before = want.copy(), target.copy()
        real(want, target, lower, upper, max_step)
        calls.append((*before, target.copy(), lower, upper, max_step))

    monkeypatch.setattr(rig.shaping, "shape_target", spy)
    cfg = load_config("sim-aloha")
    lim = TargetLimits.of(cfg.followers, cfg.safety)
    assert len(lim.lower) == sum(a.n_values for a in cfg.followers) == 14
    for rate in (cfg.rate_hz, 25.0):
        calls.clear()
        policy = _HoldFar()
        clock = [0.0]
        policy.clock = lambda clock=clock: clock[0]
        _trial(policy, dataclasses.replace(cfg, rate_hz=rate), "transfer_cube", 0, 1.0, clock)
        assert len(calls) == int(rate)  # one shaping per tick of the config's rate, for a 1 s trial
        for want, before, after, lower, upper, max_step in calls:
            assert np.array_equal(lower, lim.lower) and np.array_equal(upper, lim.upper)
            assert np.array_equal(max_step, lim.max_step)
            assert np.allclose(want, policy.target)
            expect_want, expect = want.copy(), before.copy()
            real(expect_want, expect, lim.lower, lim.upper, lim.max_step)
            assert np.array_equal(after, expect)
        waist = [c[2][0] for c in calls]
        assert max(np.diff(waist)) == pytest.approx(cfg.safety.max_step_rad)  # the step clamp, as the tick
        assert max(waist) <= lim.upper[0]  # and the joint limit


# ---- the one step loop -----------------------------------------------------------------------------------


def test_the_step_loop_undoes_its_timing_probe_and_keeps_marks():
    torch = pytest.importorskip("torch")
    from rig.train.steps import StepPlan, run_steps, seeded

    def make():
        rng = seeded(3)
        net = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
        x = torch.randn(64, 4)
        y = x.sum(1, keepdim=True)

        class Steps:
            def step(self, lr, s):
                idx = torch.from_numpy(rng.integers(0, 64, 16))
                noise = torch.randn(16, 1) * 0.01  # the global torch RNG, as the quick recipe's noise
                loss = torch.nn.functional.mse_loss(net(x[idx]) + noise, y[idx])
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad()
                loss.backward()
                opt.step()
                return float(loss.detach())

            def save(self):
                import copy
                return copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()), rng.bit_generator.state

            def restore(self, saved):
                net.load_state_dict(saved[0])
                opt.load_state_dict(saved[1])
                rng.bit_generator.state = saved[2]

        return net, Steps()

    net, steps = make()
    marks: list[tuple[float, int]] = []
    timed = run_steps(steps, StepPlan(lr=1e-2, steps=None, budget_s=0.3, max_steps=200, min_steps=20),
                      marks_s=(0.0,), on_mark=lambda m, s: marks.append((m, s)))
    assert 20 <= timed.steps == timed.planned <= 200 and marks == [(0.0, 0)]
    assert timed.losses[-1][0] == timed.steps and timed.losses[-1][1] < timed.losses[0][1]
    # the count the budget chose, run again as a fixed count from the same seed: the same weights
    net2, steps2 = make()
    fixed = run_steps(steps2, StepPlan(lr=1e-2, steps=timed.steps, budget_s=0.0, max_steps=200))
    assert fixed.steps == timed.steps
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    stopped = run_steps(make()[1], StepPlan(lr=1e-2, steps=50, budget_s=0.0, max_steps=50), should_stop=lambda: True)
    assert stopped.stopped and stopped.steps == 0


def test_trials_on_the_arms_lead_the_report_when_there_are_any():
    rep = {**_report(), "arm_trials": SuccessFigure("arms", 3, 5).to_dict()}  # as the trials record it
    lines = summary_lines(rep)
    assert lines[0] == "closed-loop success: 3/5 = 60 % (95 % CI 23-88 %, n=5), trials on the arms"
    assert lines[1].startswith("  real-time trials (simulated world, through the buses): 13/20")

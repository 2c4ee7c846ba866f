"""Quick-train benchmark: stop-to-feedback latency, teleop loop timing beside training, and the
closed-loop success rate in the simulated world.

    python benchmarks/bench_train.py --dataset50 data/tc50.zarr --json bench_train.json
    python benchmarks/bench_train.py --record --data /tmp/bench-train      # records the data first

    python benchmarks/bench_train.py --dataset50 data/tc50.zarr --only quick --json quick.json

Sections (all by default; pick with --only quick,latency,loop,success,demo):
- quick: the quick policy (``rig train``'s default), in one run: closed-loop success against
  training minutes (snapshots of one --quick-budget run) and against takes (--takes, e.g. 10, 20,
  50, each trained for the same step count), fast-sim estimates (--fast-trials, seeds 1000...)
  and real-time trials through the emulated buses (--trials) for the full run, the privileged
  ceiling, and the scripted demonstrations through the same trials, side by side.
- latency: 10 kept episodes of 20 s. A BackgroundTrainer (nice 10, one thread, as beside a
  session) trains on 9; then the 10th is kept and notify_new_episode() called: the time until the
  status carries a result on 10 episodes is "stop to first feedback" (goal <= 60 s). The cold
  start (no episode decoded yet, 10 episodes) is reported too.
- loop: the teleop loop of the simulated rig for --loop-seconds, alone and with the
  BackgroundTrainer training the whole time: p50/p99 period error, achieved rate, skipped ticks.
- success: train on all kept episodes of --dataset50 with the quick budget and with --long-budget,
  run each closed-loop in the simulated world on --trials seeded trials (seeds 1000...).
- demo: the same trials driven by each seed's scripted demonstration (ScriptedPolicy) through the
  same loop: what right actions score, the reference for the policies' rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the top camera only: the quick policy locates the cube in it, and two cores keep the world real-time
CONFIG = Path(__file__).resolve().parent / "sim-aloha-top.toml"
sys.path.insert(0, str(ROOT))


def record(path: Path, episodes: int, seconds: float) -> None:
    """Record until ``episodes`` complete takes exist (a loaded machine can fault a take)."""
    from recorder import Dataset

    while True:
        have = [e for e in Dataset(path).episodes() if e.status == "complete"] if (path / "zarr.json").exists() else []
        if len(have) >= episodes:
            return
        seed = len(Dataset(path).indices()) if (path / "zarr.json").exists() else 0
        n = min(5, episodes - len(have))
        print(f"recording {n} episodes of {seconds:g} s into {path} (seed {seed})", flush=True)
        subprocess.run([sys.executable, "-m", "rig", "record", "--config", str(CONFIG), "--task", "transfer_cube",
                        "--episodes", str(n), "--seconds", str(seconds),
                        "--reset-seconds", "1", "--seed", str(seed), "--dataset", str(path)], cwd=ROOT,
                       stdin=subprocess.DEVNULL)


def subset(src: Path, dst: Path, n: int) -> list[int]:
    """A copy of ``src`` keeping its first ``n`` complete episodes."""
    from recorder import Dataset

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    ds = Dataset(dst)
    keep = [e.index for e in ds.episodes() if e.status == "complete"][:n]
    for i in ds.indices():
        if i not in keep:
            ds.discard(i, delete=True)
    if len(keep) < n:
        raise SystemExit(f"{src} has only {len(keep)} complete episodes; {n} needed")
    return keep


def wait_for(trainer, pred, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = trainer.status()
        if pred(s):
            return s
        if s.state == "error":
            raise SystemExit(f"quick-train failed: {s.message}")
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f} s; status: {trainer.status()}")


def bench_latency(src: Path, work: Path, budget: float) -> dict:
    from recorder import Dataset
    from rig.train.background import BackgroundTrainer

    path = work / "ten.zarr"
    keep = subset(src, path, 10)
    ds = Dataset(path)
    ds.discard(keep[-1])
    has_result = ("validated", "learning curve", "done")
    with BackgroundTrainer(path, budget_s=budget) as trainer:
        t0 = time.monotonic()
        first = wait_for(trainer, lambda s: s.stage in has_result and s.episodes == 9, 900)
        cold_9 = time.monotonic() - t0
        wait_for(trainer, lambda s: s.state == "done", 900)
        t_stop = time.monotonic()
        ds.set_status(keep[-1], "complete")  # the 10th take is kept...
        trainer.notify_new_episode()  # ...and the session tells the trainer
        # the quick policy's first success estimate (takes with a success check and one success),
        # then the first feedback of any kind (the visuomotor pass's errors, when success is not
        # measurable): each timed from the keep
        est = wait_for(trainer, lambda s: s.success_episodes == 10 or
                       (s.state == "done" and s.episodes == 10 and s.success is None), 900)
        t_estimate = time.monotonic() - t_stop if est.success is not None else None
        fb = wait_for(trainer, lambda s: (s.stage in has_result or s.success_episodes == 10) and s.episodes == 10, 900)
        t_feedback = min(time.monotonic() - t_stop, t_estimate or float("inf"))
        done = wait_for(trainer, lambda s: s.state == "done" and s.episodes == 10 and s.runs >= 2, 1800)
        t_done = time.monotonic() - t_stop
    rep = done.report or {}
    return {"episodes": 10, "budget_s": budget, "cold_first_feedback_9_episodes_s": round(cold_9, 1),
            "stop_to_first_feedback_s": round(t_feedback, 1),
            "stop_to_first_success_estimate_s": None if t_estimate is None else round(t_estimate, 1),
            "first_success_estimate": est.success and {k: est.success[k] for k in ("successes", "trials", "label")}, "stop_to_learning_curve_s": round(t_done, 1),
            "val_joint_error_deg": fb.val_joint_error_deg, "mean_action_error_deg": fb.mean_action_error_deg,
            "flagged": fb.flagged, "learning_curve": done.learning_curve, "projection": done.projection,
            "steps": rep.get("steps"), "timings": rep.get("timings"), "first_9": first.val_joint_error_deg}


def _teleop(seconds: float) -> dict:
    from rig.config import load_config
    from rig.session import RigSession
    from rig.teleop import TeleopFault

    # own shared-memory ring names: another simulated rig on this machine must not collide
    with RigSession(load_config("sim-aloha"), world_options={"ring_prefix": f"rig-bench-{os.getpid()}-"}) as s:
        try:
            return s.run(seconds)
        except TeleopFault as exc:  # a machine loaded by others can fault the loop: record it, go on
            out = s.teleop.stats.summary() if s.teleop is not None else {}
            out["fault"] = str(exc)[:160]
            return out


def bench_loop(src: Path, work: Path, seconds: float) -> dict:
    from rig.train.background import BackgroundTrainer

    path = work / "loop.zarr"
    subset(src, path, 10)
    out = {}
    for label in ("alone", "with_trainer", "alone_again", "with_trainer_again"):
        trainer = None
        if label.startswith("with_trainer"):
            trainer = BackgroundTrainer(path, budget_s=10 * seconds)  # trains through the whole run
            trainer.start()
            wait_for(trainer, lambda s: s.state == "training" and s.stage == "training", 300)
        try:
            r = _teleop(seconds)
        finally:
            if trainer is not None:
                busy = trainer.status()
                trainer.stop()
        pe = r.get("period_error_ms", {})
        out[label] = {"p50_ms": round(pe.get("p50", float("nan")), 3), "p99_ms": round(pe.get("p99", float("nan")), 3),
                      "max_ms": round(pe.get("max", float("nan")), 2), "rate_hz": round(r.get("achieved_rate_hz", 0), 2),
                      "skipped_ticks": r.get("skipped_ticks"), "ticks": r.get("ticks"), "fault": r.get("fault"),
                      "loadavg": round(os.getloadavg()[0], 1)}
        if trainer is not None:
            out[label]["trainer"] = f"{busy.state}/{busy.stage} {100 * busy.progress:.0f} %"
        print(f"  loop {label}: {out[label]}", flush=True)
    return out


def bench_success(src: Path, budgets: list[float | int], trials: int, seconds: float | None) -> dict:
    """Each budget is seconds (float) or a fixed step count (int, for the reproducible long run)."""
    from rig.train.pipeline import run_pipeline
    from rig.train.rollout import evaluate_in_sim
    from rig.train.trainer import TrainConfig

    out = {}
    for budget in budgets:
        t0 = time.monotonic()
        cfg = TrainConfig(steps=budget) if isinstance(budget, int) else TrainConfig(budget_s=budget)
        rep, policy = run_pipeline(src, "transfer_cube", cfg, curve=False)
        train_s = time.monotonic() - t0
        eps_s = seconds or 20.0
        print(f"  budget {budget}: {rep.steps} steps, val {rep.val['joint_error']:.2f} deg; "
              f"{trials} trials...", flush=True)
        res = evaluate_in_sim(policy, "transfer_cube", trials, 1000, eps_s,
                              progress=lambda i, r: print(f"    trial {i}: {'ok' if r.success else '--'}", flush=True))
        key = f"steps_{budget}" if isinstance(budget, int) else f"budget_{budget:g}s"
        out[key] = {
            "episodes": len(rep.episodes), "steps": rep.steps, "train_wall_s": round(train_s, 1),
            "val_joint_error_deg": round(rep.val["joint_error"], 3),
            "val_gripper_error_pct": round(rep.val["gripper_error"], 2),
            "hold_joint_error_deg": round(rep.val["hold_joint_error"], 3),
            "trials": res.trials, "successes": res.successes, "success_rate": res.rate,
            "rollout_p99_period_error_ms": round(res.p99_period_error_ms, 2),
            "skipped_ticks": sum(t.skipped_ticks for t in res.per_trial)}
        print(f"  -> {out[key]}", flush=True)
    return out


def bench_quick(src: Path, budget: float, minutes: list[float], takes: list[int], fast: int, trials: int,
                seconds: float) -> dict:
    """The quick policy: success vs training minutes and vs takes, beside the demonstrations."""
    import dataclasses

    import numpy as np

    from rig.sim.reference import capture_reference
    from rig.train.fastsim import LABEL, fast_trials
    from rig.train.quick import QuickConfig, load_quick_episodes, train_quick
    from rig.train.quickrun import judge_takes
    from rig.train.rollout import ScriptedPolicy, evaluate_in_sim

    seeds = list(range(1000, 1000 + fast))
    eps = load_quick_episodes(src, "transfer_cube")
    hurt, replayed = judge_takes(eps, "transfer_cube")
    drop = {i for g in ("retried grasp", "failure", "outlier") for i in hurt[g]}
    usable = [e for e in eps if e.index not in drop]
    out: dict = {"takes_recorded": len(eps), "takes_used": [e.index for e in usable],
                 "left_out": {g: sorted(d) for g, d in hurt.items()}, "fast_seeds": seeds,
                 "replayed_failures": replayed, "load_at_start": os.getloadavg(),
                 "realtime_seeds": list(range(1000, 1000 + trials)), "budget_s": budget}
    ref = capture_reference("transfer_cube", start_q=np.median([e.q[0] for e in usable], 0))

    def rate(state) -> dict:
        rows = fast_trials(state, "transfer_cube", seeds, seconds)
        return {"successes": sum(r.success for r in rows), "trials": len(rows),
                "outcomes": {r.seed: r.success for r in rows}, "label": LABEL}

    # one run of the full budget on every usable take, seen at earlier minutes too
    cfg = QuickConfig(budget_s=budget, steps=None)
    t0 = time.monotonic()
    policy = train_quick(usable, "transfer_cube", cfg, reference=ref, snapshots_s=[60 * m for m in minutes])
    print(f"  full run: {policy.steps} steps in {policy.train_s:.0f} s on {len(usable)} takes", flush=True)
    out["vs_minutes"] = []
    for m_s, steps, state in policy.snapshots + [(policy.train_s, policy.steps, policy.state())]:
        r = rate(state)
        out["vs_minutes"].append({"minutes": round(m_s / 60, 2), "steps": steps, **r})
        print(f"  {m_s / 60:.1f} min ({steps} steps): {r['successes']}/{r['trials']} {LABEL}", flush=True)
    out["full_train_wall_s"] = round(time.monotonic() - t0, 1)
    # the same recipe and step count on the first N takes
    fixed = dataclasses.replace(cfg, steps=policy.steps)
    out["vs_takes"] = []
    for n in takes:
        if n >= len(usable):
            sub_eps, p = usable, policy
        else:
            sub_eps = [e for e in eps[:n] if e.index not in drop]
            p = train_quick(sub_eps, "transfer_cube", fixed, reference=ref)
        r = rate(p.state())
        out["vs_takes"].append({"takes_recorded": min(n, len(eps)), "takes_used": len(sub_eps), **r})
        print(f"  {n} takes ({len(sub_eps)} used): {r['successes']}/{r['trials']}", flush=True)
    ceiling = train_quick(usable, "transfer_cube", dataclasses.replace(fixed, privileged=True))
    out["privileged_ceiling"] = {**rate(ceiling.state()), "label": f"privileged ceiling: true object positions, {LABEL}"}
    print(f"  privileged ceiling: {out['privileged_ceiling']['successes']}/{fast}", flush=True)
    out["demonstrations_fast"] = rate({"kind": "scripted", "task": "transfer_cube"})
    if trials:
        res = evaluate_in_sim(policy, "transfer_cube", trials, 1000, seconds,
                              progress=lambda i, r: print(f"    real-time trial {i}: {'ok' if r.success else '--'}",
                                                          flush=True))
        out["realtime"] = {"successes": res.successes, "trials": res.trials, "rate": res.rate,
                           "outcomes": {t.seed: t.success for t in res.per_trial},
                           "label": "real-time trials through the emulated buses"}
        demo = evaluate_in_sim(ScriptedPolicy("transfer_cube"), "transfer_cube", trials, 1000, seconds)
        out["demonstrations_realtime"] = {"successes": demo.successes, "trials": demo.trials,
                                          "outcomes": {t.seed: t.success for t in demo.per_trial}}
    return out


def bench_demo(trials: int, seconds: float) -> dict:
    from rig.train.rollout import ScriptedPolicy, evaluate_in_sim

    res = evaluate_in_sim(ScriptedPolicy("transfer_cube"), "transfer_cube", trials, 1000, seconds,
                          progress=lambda i, r: print(f"    trial {i}: {'ok' if r.success else '--'}", flush=True))
    t = [r.t_success_s for r in res.per_trial if r.success]
    return {"trials": res.trials, "successes": res.successes, "success_rate": res.rate,
            "t_success_s_min_max": [min(t), max(t)] if t else None,
            "rollout_p99_period_error_ms": round(res.p99_period_error_ms, 2),
            "skipped_ticks": sum(r.skipped_ticks for r in res.per_trial)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/bench-train"))
    ap.add_argument("--dataset50", type=Path, default=None, help="50 scripted transfer-cube episodes of 20 s")
    ap.add_argument("--record", action="store_true", help="record the dataset first (about 20 min)")
    ap.add_argument("--only", default="quick,latency,loop,success,demo")
    ap.add_argument("--quick-budget", type=float, default=600.0, help="quick: seconds of the full training run")
    ap.add_argument("--minutes", default="1,2.5,5", help="quick: snapshots of the full run (minutes)")
    ap.add_argument("--takes", default="10,20,50", help="quick: takes of the success-vs-takes curve")
    ap.add_argument("--fast-trials", type=int, default=20, help="quick: fast-sim trials per point")
    ap.add_argument("--budget", type=float, default=45.0)
    ap.add_argument("--long-steps", type=int, default=8000, help="the longer run: a fixed step count")
    ap.add_argument("--skip-quick", action="store_true", help="success: only the longer run")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--trial-seconds", type=float, default=20.0)
    ap.add_argument("--loop-seconds", type=float, default=30.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    src = args.dataset50 or args.data / "tc50.zarr"
    if args.record:
        record(src, 50, 20.0)
    only = set(args.only.split(","))
    res: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "loadavg_at_start": os.getloadavg()}, "dataset": str(src)}
    if "quick" in only:
        print("quick: the quick policy, success vs minutes and vs takes", flush=True)
        res["quick"] = bench_quick(src, args.quick_budget, [float(m) for m in args.minutes.split(",") if m],
                                   [int(n) for n in args.takes.split(",") if n], args.fast_trials, args.trials,
                                   args.trial_seconds)
        if args.json:  # the longest section: keep its figures even if a later one fails
            args.json.write_text(json.dumps(res, indent=1, default=str))
    if "latency" in only:
        print("latency: 10 episodes, background trainer", flush=True)
        res["latency"] = bench_latency(src, args.data, args.budget)
        print(f"  {res['latency']}", flush=True)
    if "loop" in only:
        print("loop: teleop period error with and without the background trainer", flush=True)
        res["loop"] = bench_loop(src, args.data, args.loop_seconds)
    if "success" in only:
        print("success: closed-loop transfer-cube in the simulated world", flush=True)
        budgets = ([] if args.skip_quick else [args.budget]) + [args.long_steps]
        res["success"] = bench_success(src, budgets, args.trials, args.trial_seconds)
    if "demo" in only:
        print("demo: the scripted demonstrations through the same trials", flush=True)
        res["demo"] = bench_demo(args.trials, args.trial_seconds)
        print(f"  -> {res['demo']}", flush=True)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

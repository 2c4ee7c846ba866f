"""`rig train DATASET`: quick-train headless, with progress and a final report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rig.commands.argtypes import nonnegative_int, positive_float, positive_int


def register(subparsers) -> None:
    from rig.train.report import FAST_TRIALS

    p = subparsers.add_parser("train", help="quick-train a small policy on a dataset and report how good it is")
    p.add_argument("dataset", type=Path, help="dataset directory (zarr)")
    p.add_argument("--task", default=None, help="only episodes of this task (sim: also the task evaluated)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the full report as JSON")
    p.add_argument("--policy", choices=("quick", "visuomotor"), default="quick",
                   help="quick (default): objects located in the first frame, joint state, phase, a decided gripper; "
                        "success measured closed-loop. visuomotor: the end-to-end CNN policy on every camera frame")
    p.add_argument("--budget", type=positive_float, default=None, metavar="S",
                   help="training seconds of the main run instead of a step count (default: quick 5 000 steps, at "
                        "most 600 s; visuomotor 45 s); the curve repeats its step count")
    p.add_argument("--fast-trials", type=nonnegative_int, default=FAST_TRIALS, metavar="N",
                   help="quick: trials of the fast estimate (a direct MuJoCo loop, faster than real time) on unseen "
                        f"seeds, for the success figure and the success-vs-takes curve (default {FAST_TRIALS}: a 95 %% "
                        "interval within ±15 points, about 1.3 s a trial; 0: none)")
    p.add_argument("--ceiling", action="store_true",
                   help="quick, simulated rig: also the privileged ceiling (the same policy given the true object "
                        "positions)")
    p.add_argument("--leave-out", action="store_true",
                   help="quick: retrain without each group of takes that hurt and report the success of each")
    p.add_argument("--keep-all-takes", action="store_true",
                   help="quick: train on every kept take (retried grasps, failures and outliers are left out by default)")
    p.add_argument("--retried", choices=("keep", "leave-out"), default=None,
                   help="quick: train on takes with a retried grasp, or leave them out (default: the task's recipe)")
    p.add_argument("--locator", default="difference", metavar="HOW",
                   help="quick: how objects are located: difference (default; against an empty-scene reference, no "
                        "colour) or colour:red|green|blue (an explicit colour prior)")
    p.add_argument("--camera", default="top", help="quick: the fixed camera that locates the objects (default top)")
    p.add_argument("--target-rate", type=float, default=0.8, metavar="R",
                   help="quick: success rate the projection aims at (default 0.8)")
    p.add_argument("--steps", type=positive_int, default=None, help="a fixed step count instead of a time budget (reproducible)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-success", action="store_true", help="only episodes labelled successful")
    p.add_argument("--no-curve", action="store_true", help="skip the learning curve (its sub-trainings)")
    p.add_argument("--target", type=float, default=None, metavar="DEG",
                   help="arm-joint error to project towards (default: half the present error)")
    p.add_argument("--eval-trials", type=nonnegative_int, default=0, metavar="N",
                   help="simulated rig: run the policy closed-loop on N seeded trials and report the success rate")
    p.add_argument("--eval-seconds", type=float, default=None, metavar="S",
                   help="length of one trial (default: quick, the sim task's trial length; visuomotor, the "
                        "longest training episode)")
    p.add_argument("--eval-seed", type=int, default=1000, help="world seed of the first trial (default 1000)")
    p.add_argument("--keypoints", type=int, default=0, metavar="N",
                   help="N learned keypoints (spatial softmax) on the scene camera: locates small objects "
                        "to a fraction of a pixel, at about 1.7x the training time per step (default 0: off)")
    p.add_argument("--keypoint-cameras", default="top", metavar="CAMS",
                   help="comma-separated fixed cameras that get keypoints (default top)")
    p.add_argument("--no-velocity", action="store_true", help="leave joint velocities out of the policy's inputs")
    p.add_argument("--ensemble", type=float, default=None, metavar="M",
                   help="closed-loop: ACT's temporal ensembling, predicting every tick and averaging the "
                        "overlapping chunks, older ones weighted exp(-M*age) (ACT uses 0.01)")
    p.add_argument("--eval-demo", action="store_true",
                   help="simulated rig: also run the scripted demonstrations through the same trials (the "
                        "harness' reference: what right actions score)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--save", type=Path, default=None, metavar="PATH", help="save the trained policy as a policy file (what `rig collect --policy` and `p` load)")
    p.set_defaults(func=run)


class _Progress:
    def __init__(self) -> None:
        self.stage = ""
        self.last = -1.0
        self.t0 = time.monotonic()

    def __call__(self, stage: str, frac: float, report) -> None:
        if stage != self.stage or frac - self.last >= 0.1 or (frac >= 1.0 > self.last) or stage == "done":
            if stage != self.stage and stage == "validated":
                for line in report.summary_lines()[1:]:
                    if line.startswith(("learning curve", "projection", "timings")):
                        continue
                    print(f"  {line}", flush=True)
            print(f"[{time.monotonic() - self.t0:6.1f} s] {stage}: {100 * frac:3.0f} %", flush=True)
            self.stage, self.last = stage, frac


def _sim_task(args, episodes) -> str | None:
    from rig.sim.tasks import simulated_task

    return simulated_task(args.task, (e.task for e in episodes))


def run(args: argparse.Namespace) -> int:
    from rig.train import TrainError, require_torch

    _check_dataset(args.dataset)  # before torch's import: a wrong path is told at once
    torch = require_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.policy == "quick":
        return run_quick(args)
    if args.budget is None:
        args.budget = 45.0
    from rig.train.data import EpisodeCache
    from rig.train.pipeline import run_pipeline
    from rig.train.trainer import TrainConfig

    if (args.eval_demo or args.ensemble is not None) and args.eval_trials <= 0:
        raise TrainError("--eval-demo and --ensemble act on the closed-loop trials: add --eval-trials N")
    cams = tuple(c.strip() for c in args.keypoint_cameras.split(",") if c.strip())
    cfg = TrainConfig(seed=args.seed, budget_s=args.budget, steps=args.steps, device=args.device,
                      keypoints=max(0, args.keypoints), keypoint_cameras=cams, velocity=not args.no_velocity)
    cache = EpisodeCache()
    how = f"{args.steps} steps" if args.steps else f"budget {args.budget:g} s"
    print(f"quick-train on {args.dataset} ({how} per run, seed {args.seed})", flush=True)
    report, policy = run_pipeline(args.dataset, args.task, cfg, curve=not args.no_curve, target=args.target,
                                  cache=cache, progress=_Progress(), only_success=args.only_success)
    if args.eval_trials > 0:
        from rig.train.rollout import evaluate_in_sim

        eps = list(cache.episodes.values())
        task = _sim_task(args, eps)
        if task is None:
            from rig.sim.tasks import TASKS

            raise TrainError(f"--eval-trials needs a simulated task ({', '.join(TASKS)}): give --task, or "
                             "train on episodes recorded on the simulated rig")
        seconds = args.eval_seconds or max(float(e.t_s[-1]) for e in eps)
        print(f"closed-loop: {args.eval_trials} trials of {task}, {seconds:.0f} s each", flush=True)
        def trial(i, r) -> None:
            outcome = f"success at {r.t_success_s:.1f} s" if r.success else "failure"
            print(f"  trial {i + 1} (seed {r.seed}): {outcome}", flush=True)

        res = evaluate_in_sim(policy, task, args.eval_trials, args.eval_seed, seconds, ensemble=args.ensemble,
                              progress=trial)
        from rig.train.report import DEMO_LABEL, trials_figure

        report.success = trials_figure("realtime", res.per_trial, wall_s=res.wall_s)
        if args.eval_demo:
            from rig.train.rollout import ScriptedPolicy

            print("the scripted demonstrations, through the same trials:", flush=True)
            demo = evaluate_in_sim(ScriptedPolicy(task), task, args.eval_trials, args.eval_seed, seconds,
                                   progress=trial)
            report.demonstrations = trials_figure("demo", demo.per_trial, label=DEMO_LABEL)
    print()
    from rig.trials import figure_from_dict

    lead = _lead(args, [figure_from_dict(getattr(report, "success", None), "realtime")])
    print("\n".join(report.summary_lines()))
    if args.eval_trials <= 0:
        print("(closed-loop success in the simulated world: add --eval-trials N)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report.to_dict(), **lead}, indent=1))
        print(f"report: {args.json}")
    if args.save is not None:
        from rig.train.policy_file import save_policy

        save_policy(policy, args.save, dataset=args.dataset)  # the one format `rig collect --policy` loads
        print(f"policy: {args.save}")
    sys.stdout.flush()
    return 0


def _lead(args: argparse.Namespace, estimates: list) -> dict:
    """The report leads with the best success signal the rig has (rig/trials.py): trials on the
    arms of the policy they ran (the file --save names, else quick-train's latest: read before
    this run replaces it), then real time, then the fast sim estimate. Printed; returned for the JSON."""
    from rig.train.latest import latest_policy_path
    from rig.trials import current_figures, lead_line, policy_digest

    file = args.save if args.save is not None and args.save.exists() else latest_policy_path(args.dataset)
    arms, best = current_figures(args.dataset, file, estimates)
    if best is None or best is arms:  # a simulated figure leads the summary below already: said once
        print(lead_line(best))
    if arms is not None and arms.trials:
        print(f"  (trials on the arms are those of {file}, sha256 {policy_digest(file)[:12]}: the policy before "
              "this training)" if best is arms else f"  trials on the arms of {file}: {arms.text()}")
    return {"success_best": best.to_dict() if best is not None else None,
            "success_arms": arms.to_dict() if arms is not None else None}


def _check_dataset(path: Path) -> None:
    from recorder import Dataset
    from rig.train import TrainError

    if not (Path(path) / "zarr.json").exists():
        raise TrainError(f"{path} is not a dataset (no zarr.json): give the directory `rig record` wrote")
    infos = [e for e in Dataset(path).episodes() if e.status == "complete"]
    if infos and not any(e.stream_counts.get("joints", 0) for e in infos):
        raise TrainError(f"{path} has no joint streams in its kept takes; check them with `rig inspect`")


def run_quick(args: argparse.Namespace) -> int:
    """`rig train --policy quick` (the default): success first."""
    from rig.sim.tasks import TASKS, apply_recipe, get_task
    from rig.train import TrainError
    from rig.train.quick import QuickConfig
    from rig.train.quickrun import QuickRunConfig, run_quick, summary_lines
    from rig.train.trainer import pick_device

    if args.ensemble is not None or args.keypoints:
        raise TrainError("--ensemble and --keypoints belong to --policy visuomotor")
    if args.eval_demo and args.eval_trials <= 0:
        raise TrainError("--eval-demo acts on the closed-loop trials: add --eval-trials N")
    device = pick_device(args.device)  # --device cuda without a GPU: one clear line
    # a step count by default (the same policy on a loaded machine), --budget for a time instead
    steps = args.steps if args.steps is not None or args.budget is not None else (
        4 * QuickConfig.steps if device.startswith("cuda") else QuickConfig.steps)  # a GPU: a longer run
    budget = args.budget if args.budget is not None else QuickConfig.budget_s
    locator = args.locator
    if locator != "difference" and not locator.startswith("colour:"):
        raise TrainError(f"unknown --locator {locator!r}: difference, or colour:red|green|blue (an explicit colour prior)")
    if args.task is None:
        args.task = _task_of(args.dataset)
    # the task's objects (how many the locator finds) and recipe; the command line's flags win
    flags = {} if args.retried is None else {"keep_retried": args.retried == "keep"}
    qc = apply_recipe(QuickConfig(), args.task, seed=args.seed, budget_s=budget, steps=steps, device=device,
                      camera=args.camera, locator=locator, hidden=1024 if device.startswith("cuda") else 512, **flags)
    rc = QuickRunConfig(quick=qc, fast_trials=max(0, args.fast_trials), seed0=args.eval_seed,
                        curve=not args.no_curve and args.fast_trials > 0, ceiling=args.ceiling,
                        leave_out=args.leave_out, target=args.target_rate, keep_all=args.keep_all_takes)
    if args.eval_seconds:
        rc.trial_s = args.eval_seconds
    elif args.task in TASKS:
        rc.trial_s = get_task(args.task).trial_s
    how = f"{steps} steps" if steps else f"budget {budget:g} s"
    print(f"quick-train ({args.policy}) on {args.dataset} ({how}, {device}, seed {args.seed})", flush=True)
    t0 = time.monotonic()
    last = [""]

    def progress(stage: str, frac: float, rep: dict) -> None:
        if stage != last[0]:
            last[0] = stage
            line = f"[{time.monotonic() - t0:6.1f} s] {stage}"
            if stage == "estimated" and rep.get("success"):
                s = rep["success"]
                line += f": {s['text']} ({s['label']})"
            print(line, flush=True)

    report, policy = run_quick(args.dataset, args.task, rc, progress=progress)
    if args.eval_trials > 0 and policy is not None:
        from rig.train.rollout import evaluate_in_sim

        task = report["task"]
        print(f"real-time trials through the buses: {args.eval_trials} trials of {task}", flush=True)

        def trial(i, r) -> None:
            outcome = f"success at {r.t_success_s:.1f} s" if r.success else "failure"
            print(f"  trial {i + 1} (seed {r.seed}): {outcome}", flush=True)

        res = evaluate_in_sim(policy, task, args.eval_trials, args.eval_seed, rc.trial_s, progress=trial)
        from rig.train.report import DEMO_LABEL, trials_figure

        report["success_realtime"] = trials_figure("realtime", res.per_trial, wall_s=res.wall_s)
        report["locator"]["live"] = policy.located[-args.eval_trials:]
        if args.eval_demo:
            from rig.train.rollout import ScriptedPolicy

            demo = evaluate_in_sim(ScriptedPolicy(task), task, args.eval_trials, args.eval_seed, rc.trial_s,
                                   progress=trial)
            report["demonstrations"] = trials_figure("demo", demo.per_trial, label=DEMO_LABEL)
    print()
    from rig.trials import figure_from_dict

    report.update(_lead(args, [figure_from_dict(report.get("success_realtime"), "realtime"),
                               figure_from_dict(report.get("success"), "fastsim")]))
    print("\n".join(summary_lines(report)))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=_jsonable))
        print(f"report: {args.json}")
    if args.save is not None and policy is not None:
        from rig.train.policy_file import save_policy

        save_policy(policy, args.save, dataset=args.dataset)  # the one format `rig collect --policy` loads
        print(f"policy: {args.save}")
    sys.stdout.flush()
    return 0


def _task_of(path: Path) -> str | None:
    from recorder import Dataset
    from rig.sim.tasks import simulated_task

    return simulated_task(None, (e.task for e in Dataset(path).episodes() if e.status == "complete"))


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)

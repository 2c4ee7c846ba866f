"""Quick-train on every task: does the recipe learn each, from 50 default-config takes?

For each ``--data TASK=DATASET`` (takes recorded with `rig record --task TASK`), `rig train` with
its defaults runs once per training seed (--seeds) and per choice about retried grasps
(--retried: keep, leave-out, or the task's recipe), and scores the policy on --trials fast-sim
trials from --eval-seed (seeds no take used). Each figure is printed with its n and 95 % Wilson
interval, the two training seeds pooled beside them, and everything is written to --json.

    rig record --task insertion --episodes 50 --dataset /tmp/ins50.zarr
    python benchmarks/bench_tasks.py --data insertion=/tmp/ins50.zarr --seeds 0,1 \\
        --retried keep,leave-out --json benchmarks/results/tasks.json

Trainings run --jobs at a time, each on one torch thread (nice 10) for the default step count (with
a time ceiling no busy machine reaches): a busy machine changes the minutes, never the policy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rig.train.quick import QuickConfig  # noqa: E402
from rig.train.stats import SuccessFigure  # noqa: E402


def train_once(task: str, data: str, seed: int, retried: str, args: argparse.Namespace, out: Path) -> dict:
    tag = f"{task}-s{seed}-{retried}"
    report = out / f"{tag}.json"
    cmd = ["nice", "-n", "10", sys.executable, "-m", "rig", "train", data, "--task", task, "--seed", str(seed),
           "--fast-trials", str(args.trials), "--eval-seed", str(args.eval_seed), "--no-curve", "--threads", "1",
           # the default step count, with a ceiling a busy machine cannot reach: the same policy however loaded
           "--steps", str(QuickConfig.steps), "--budget", "7200", "--json", str(report),
           "--save", str(out / f"{tag}.pt")]
    if retried != "recipe":
        cmd += ["--retried", retried]
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    (out / f"{tag}.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        return {"task": task, "seed": seed, "retried": retried, "error": (run.stdout + run.stderr)[-600:]}
    rep = json.loads(report.read_text())
    s = rep["success"]
    return {"task": task, "seed": seed, "retried": retried, "successes": int(s["successes"]),
            "trials": int(s["trials"]), "trained_on": len(rep["trained_on"]), "left_out": rep["left_out"],
            "training_s": rep["timings"].get("train_s"), "wall_s": round(time.monotonic() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, metavar="TASK=DATASET")
    ap.add_argument("--seeds", default="0,1", help="training seeds (default 0,1)")
    ap.add_argument("--retried", default="recipe", help="keep, leave-out and/or recipe, comma-separated")
    ap.add_argument("--trials", type=int, default=50, help="fast-sim trials per policy (default 50)")
    ap.add_argument("--eval-seed", type=int, default=3000, help="world seed of the first trial (default 3000)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="/tmp/bench-tasks", help="reports and logs of each training")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(*d.split("=", 1), int(s), r) for d in args.data for r in args.retried.split(",")
            for s in args.seeds.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda r: train_once(*r, args, out), runs))
    print(f"fast sim, {args.trials} trials per policy from seed {args.eval_seed}; 95 % Wilson intervals")
    pooled: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if "error" in r:
            print(f"  {r['task']:12} seed {r['seed']} retried {r['retried']:9} FAILED: {r['error'][-200:]}")
            continue
        fig = SuccessFigure("fastsim", r["successes"], r["trials"])
        r["figure"] = fig.text()
        print(f"  {r['task']:12} seed {r['seed']} retried {r['retried']:9} {fig.text()}  "
              f"(trained on {r['trained_on']} takes, {r['training_s']} s)")
        p = pooled.setdefault((r["task"], r["retried"]), [0, 0])
        p[0] += r["successes"]
        p[1] += r["trials"]
    summary = {}
    for (task, retried), (k, n) in pooled.items():
        fig = SuccessFigure("fastsim", k, n)
        summary[f"{task}/{retried}"] = fig.text()
        print(f"  {task:12} both seeds, retried {retried:9} {fig.text()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"trials": args.trials, "eval_seed": args.eval_seed, "runs": rows,
                                         "pooled": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

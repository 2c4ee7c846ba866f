"""Do corrective takes help more than plain ones? The collector's question, answered on the
simulated rig from one start: a dataset D and its policy P.

1. Two copies of D. Into one, N corrective takes (`rig record --corrective --policy P`: P drives,
   the scripted corrector takes over when it falls behind the demonstrations); into the other, N
   plain scripted takes (`rig record`). Both on the same N collection seeds, none of them D's.
2. Retrain each copy with the same recipe, training seed and step count (`rig train --save`).
3. Real-time success of P (the start), and of each retrained policy, on the same M unseen
   evaluation seeds (`rig trial`, judged by the world), each with its 95 % Wilson interval.

Printed, and written to --json. Full size (hours here): see docs/policy-on-arms.md; a tiny run
proves the pipeline end to end:

    python benchmarks/bench_corrective.py --dataset D --policy P --takes 2 --steps 50 --trials 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder import Dataset  # noqa: E402
from rig.train.stats import SuccessFigure  # noqa: E402


def rig(*args: str) -> str:
    """Run one rig command (its own process: a fresh world and loop each time); its stdout."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"bench_corrective: `rig {' '.join(args)}` failed (exit {out.returncode}):\n"
                 f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
    print(f"  rig {args[0]} ... {time.monotonic() - t0:.0f} s", flush=True)
    return out.stdout


def trials(dataset: Path, policy: Path, n: int, seed: int, report: Path) -> SuccessFigure:
    rig("trial", str(dataset), "--policy", str(policy), "--trials", str(n), "--seed", str(seed),
        "--reset-seconds", "0.5", "--json", str(report))
    r = json.loads(report.read_text())["success"]
    return SuccessFigure("arms", int(r["successes"]), int(r["trials"]))


def takes_summary(path: Path, before: set[int]) -> dict:
    """What the N new takes of one arm are: corrective, plain, the policy's own finishes."""
    ds = Dataset(path)
    new = [ds.episode(i).attrs for i in ds.indices() if i not in before]
    return {"takes": len(new), "corrective": sum(bool(a.get("corrective")) for a in new),
            "policy_finished": sum(a.get("trial") == "policy" and not a.get("corrective") and a.get("success") is True
                                   for a in new),
            "successful": sum(a.get("success") is True for a in new)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, required=True, help="D: the scripted takes P was trained on")
    p.add_argument("--policy", type=Path, required=True, help="P: the policy file trained on D (rig train D --save P)")
    p.add_argument("--takes", type=int, default=15, help="N: corrective takes, and plain takes (default 15)")
    p.add_argument("--collect-seed", type=int, default=30_000, help="the N collection seeds start here")
    p.add_argument("--trials", type=int, default=40, help="M: evaluation trials per policy (default 40)")
    p.add_argument("--eval-seed", type=int, default=40_000, help="the M evaluation seeds start here")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's budget)")
    p.add_argument("--train-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads for training (default: torch's)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_corrective"), help="scratch folder (replaced)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "corrective.json")
    args = p.parse_args(argv)

    used = {Dataset(args.dataset).episode(i).attrs.get("seed") for i in Dataset(args.dataset).indices()}
    clash = used & (set(range(args.collect_seed, args.collect_seed + args.takes))
                    | set(range(args.eval_seed, args.eval_seed + args.trials)))
    if args.collect_seed < args.eval_seed + args.trials and args.eval_seed < args.collect_seed + args.takes:
        sys.exit("bench_corrective: the collection and evaluation seeds overlap; move --eval-seed")
    if clash:
        sys.exit(f"bench_corrective: seeds {sorted(clash)[:5]} are D's own; choose other --collect-seed/--eval-seed")
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    train = ["--no-curve", "--fast-trials", "0", "--seed", str(args.train_seed),
             *(["--steps", str(args.steps)] if args.steps else []),
             *(["--threads", str(args.threads)] if args.threads else [])]
    t0 = time.monotonic()
    figures: dict[str, SuccessFigure] = {}
    collected: dict[str, dict] = {}
    print(f"start: {args.policy} on {args.trials} unseen seeds from {args.eval_seed}", flush=True)
    start_data = args.work / "start.zarr"
    shutil.copytree(args.dataset, start_data)
    figures["start"] = trials(start_data, args.policy, args.trials, args.eval_seed, args.work / "start.json")
    for arm in ("corrective", "plain"):
        data = args.work / f"{arm}.zarr"
        shutil.copytree(args.dataset, data)
        before = set(Dataset(data).indices())
        print(f"{arm}: {args.takes} takes from seed {args.collect_seed}, retrain, {args.trials} trials", flush=True)
        extra = ["--corrective", "--policy", str(args.policy)] if arm == "corrective" else []
        rig("record", "--dataset", str(data), "--episodes", str(args.takes), "--seed", str(args.collect_seed),
            "--reset-seconds", "0.5", *extra)
        collected[arm] = takes_summary(data, before)
        policy = args.work / f"{arm}.policy.pt"
        rig("train", str(data), "--save", str(policy), *train)
        figures[arm] = trials(data, policy, args.trials, args.eval_seed, args.work / f"{arm}.json")
    print(f"\nfrom {args.dataset} ({len(used)} takes) and {args.policy}; success on {args.trials} unseen seeds "
          f"(real time, judged by the world):")
    for name, fig in figures.items():
        got = f"  (+{collected[name]['takes']} takes: {collected[name]})" if name in collected else ""
        print(f"  {name:>10}: {fig.text()}{got}")
    ahead = figures["corrective"].interval[0] > figures["plain"].interval[1]
    print("corrective ahead of plain beyond both intervals" if ahead else
          "the intervals overlap: no difference shown at this many trials")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "dataset": str(args.dataset), "policy": str(args.policy), "takes": args.takes,
        "collect_seeds": [args.collect_seed, args.collect_seed + args.takes - 1],
        "eval_seeds": [args.eval_seed, args.eval_seed + args.trials - 1], "train_seed": args.train_seed,
        "steps": args.steps, "collected": collected, "success": {k: v.to_dict() for k, v in figures.items()},
        "corrective_ahead": ahead, "wall_s": round(time.monotonic() - t0, 1)}, indent=1))
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

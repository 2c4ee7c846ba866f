"""`rig collect` (and `rig` alone): the collector's terminal app on a rig (default: the simulated
ALOHA). The app starts the world and the teleop loop itself; every exit path, a crash in the app
included, ends in the rig's safe shutdown."""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
from pathlib import Path

from rig.commands.argtypes import nonnegative_float
from rig.config import DEFAULT_DATASET


def register(sub) -> None:
    p = sub.add_parser("collect", help="the collector's app: live rig health, one-key takes, instant replay")
    p.add_argument("--config", default=None, help="built-in config name or TOML path (default sim-aloha)")
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help=f"Zarr dataset (default {DEFAULT_DATASET})")
    p.add_argument("--task", default=None, help="task text stored with each episode (sim: also the sim task)")
    p.add_argument("--seconds", type=nonnegative_float, default=None,
                   help="target length of a take; recording stops there (0: stop with space only; default: the "
                        "sim task's trial length, else 20)")
    p.add_argument("--reset-seconds", type=nonnegative_float, default=1.0, help="pause after a take before the next is ready")
    p.add_argument("--operator", default="", help="who is collecting (stored with each episode)")
    p.add_argument("--seed", type=int, default=None, help="sim: seed of the first take (default from config)")
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=None,
                   help="run quick-train in the background (default: on when torch is installed and the rig "
                        "has followers)")
    p.add_argument("--policy", type=Path, default=None, metavar="PATH",
                   help="the policy `p` runs on the followers (default: quick-train's latest, DATASET.policy.pt)")
    p.set_defaults(func=run)


def train_default() -> bool:
    """Quick-train is on by default only where torch is installed (found, not imported: seconds)."""
    return importlib.util.find_spec("torch") is not None


def _interrupt(*_):
    raise KeyboardInterrupt


def run(args) -> int:
    from rig.config import load_config
    from rig.takes import preflight
    from rig.tui.controller import CollectOptions  # textual and friends: only for this command
    from rig.tui.engine import CollectorProcess, yield_cpu_to_rig

    if args.seconds is not None and args.seconds < 0:
        print("rig: --seconds must be >= 0", file=sys.stderr)
        return 2
    config = load_config(args.config)
    if args.policy is not None:
        from rig.train.policy_file import read_policy_file

        # a file `p` could not run: one line now, not after the rig started (exit 2)
        read_policy_file(args.policy, retrain=f"`rig train {args.dataset} --save {args.policy}`")
    preflight(config)  # e.g. a hardware gripper not plugged in: one line, no app
    # Quick-train learns the followers' actions: a handheld rig alone has none to learn.
    train = args.train if args.train is not None else (train_default() and bool(config.followers))
    options = CollectOptions(config=args.config, dataset=args.dataset, task=args.task, seconds=args.seconds,
                             reset_seconds=args.reset_seconds, operator=args.operator, seed=args.seed, train=train,
                             policy=args.policy)
    collector = CollectorProcess(options)  # the rig runs in its own process; this one draws the app
    yield_cpu_to_rig()
    # A kill or a closed terminal unwinds like Ctrl-C, through the finally below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        from rig.tui.app import CollectorApp
        app = CollectorApp(collector, train=options.train)
        app.run()
    finally:
        # The app closes the rig on q/e; this covers crashes, Ctrl-C and kills that reach Python.
        report = collector.close()
    if collector.fault:
        print(f"rig: {collector.fault}", file=sys.stderr)
    kept = collector.kept
    followers = (f"followers: {', '.join(f'{k} {v}' for k, v in report.items()) or 'not opened'}; "
                 if config.followers else "")  # a handheld rig alone has none
    print(f"rig: session closed; {followers}{kept} episode(s) kept in {options.dataset}")
    return 2 if collector.fault else 0

"""`rig record`: headless recording of N takes of S seconds, with a reset pause between them."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from recorder import Dataset, RecorderError
from recorder.recovery import check_incomplete
from rig.config import DEFAULT_DATASET, load_config
from rig.handheld import GripperSource
from rig.recording import TakeRecorder
from rig.session import RigSession


def register(sub) -> None:
    p = sub.add_parser("record", help="record episodes headless (simulated rig: the scripted operator performs)")
    p.add_argument("--config", default=None, help="built-in config name or TOML path (default sim-aloha)")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each episode")
    p.add_argument("--task", default=None, help="task text stored with each episode (sim: also the sim task)")
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help=f"Zarr dataset (default {DEFAULT_DATASET})")
    p.add_argument("--reset-seconds", type=float, default=2.0, help="pause between episodes")
    p.add_argument("--operator", default="", help="who is collecting (stored with each episode)")
    p.add_argument("--seed", type=int, default=None, help="sim: seed of the first episode (default from config)")
    p.add_argument("--button", action="store_true",
                   help="handheld: the gripper's record button starts and stops each take (--seconds caps it)")
    p.set_defaults(func=run)


def _interrupt(*_):
    raise KeyboardInterrupt


def run(args) -> int:
    config = load_config(args.config)
    if args.episodes < 1 or args.seconds <= 0:
        print("rig: --episodes must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    world_opts = {}
    sim_task = config.sim.task if config.sim else None
    if config.sim and args.task in ("transfer_cube", "insertion"):
        sim_task = world_opts["task"] = args.task
    task = args.task or sim_task or config.name
    check_incomplete(args.dataset, interactive=sys.stdin.isatty())
    dataset = Dataset(args.dataset) if (args.dataset / "zarr.json").exists() else Dataset.create(args.dataset)
    signal.signal(signal.SIGTERM, _interrupt)
    seed0 = args.seed if args.seed is not None else (config.sim.seed if config.sim else 0)
    kept = 0
    toggled = threading.Event()
    with RigSession(config, world_options=world_opts) as session:
        for warning in session.warnings:
            print(f"rig: warning: {warning}", file=sys.stderr)
        sources = []
        if session.gripper is not None:
            sources.append(GripperSource(session.gripper, config.gripper, on_toggle=toggled.set))
        n = session.teleop.n if session.teleop is not None else 0
        takes = TakeRecorder(dataset, config, n, session.cameras, sources=sources)
        if session.teleop is not None:
            session.teleop.sink = takes.ticks
        world = session.world
        try:
            if session.teleop is not None:
                session.start()
            for i in range(args.episodes):
                seed = seed0 + i
                if world is not None:
                    world.set_operator(False)
                    world.reset(sim_task, seed)
                if args.button:
                    print(f"press the gripper's record button to start episode {i + 1} of {args.episodes}",
                          flush=True)
                    _wait_toggle(session, takes, toggled, None)
                else:
                    _sleep_watching(session, takes, args.reset_seconds if i or world else config.safety.engage_seconds)
                index = takes.begin(task=task, operator=args.operator, extra={"seed": seed} if world else None)
                if world is not None:
                    world.set_operator(True, True)
                print(f"episode {index}: recording {args.seconds:g} s ...", flush=True)
                if args.button:
                    _wait_toggle(session, takes, toggled, args.seconds)
                else:
                    _sleep_watching(session, takes, args.seconds)
                success = world.success() if world is not None else None
                result = takes.end(success=success)
                kept += 1
                frames = {c: s["written"] for c, s in result.stats["cameras"].items()}
                rows = {name: st["written"] for name, st in result.stats["streams"].items()}
                label = "" if success is None else (" success" if success else " failure")
                print(f"episode {index}: complete, {result.duration_s:.1f} s, rows {rows}, frames {frames},{label} "
                      f"(readable {result.stop_to_readable_s * 1e3:.0f} ms after stop)", flush=True)
        except KeyboardInterrupt:
            print("\ninterrupted: the current episode is kept as 'recovered'", file=sys.stderr)
        finally:
            takes.close()
    print(f"{kept} episode(s) in {args.dataset}")
    return 0


def _wait_toggle(session: RigSession, takes: TakeRecorder, toggled: threading.Event, cap_s: float | None) -> None:
    """Wait for the next press of the record button (or ``cap_s``), watching for faults."""
    toggled.clear()
    end = None if cap_s is None else time.monotonic() + cap_s
    while not toggled.is_set():
        remaining = 0.5 if end is None else min(0.5, end - time.monotonic())
        if remaining <= 0:
            return
        _sleep_watching(session, takes, remaining, until=toggled)


def _sleep_watching(session: RigSession, takes: TakeRecorder, seconds: float,
                    until: threading.Event | None = None) -> None:
    """Wait, but stop at once if the loop faulted or the recorder failed (e.g. a full disk)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (until is not None and until.is_set()):
        if session.teleop is not None and session.teleop.fault is not None:
            raise session.teleop.fault
        if takes.error is not None:
            raise RecorderError(f"recording stopped: {takes.error}")
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))

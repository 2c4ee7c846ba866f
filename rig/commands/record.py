"""`rig record`: headless recording of N takes of S seconds, with a reset pause between them."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from recorder import Dataset
from rig.commands.argtypes import nonnegative_float, positive_float, positive_int
from rig.config import DEFAULT_DATASET, load_config
from rig.takes import Takes, preflight


def register(sub) -> None:
    p = sub.add_parser("record", help="record episodes headless (simulated rig: the scripted operator performs)")
    p.add_argument("--config", default=None, help="built-in config name or TOML path (default sim-aloha)")
    p.add_argument("--episodes", type=positive_int, default=1)
    p.add_argument("--seconds", type=positive_float, default=None,
                   help="length of each episode (default: the sim task's trial length, else 20)")
    p.add_argument("--task", default=None, help="task text stored with each episode (sim: also the sim task)")
    p.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help=f"Zarr dataset (default {DEFAULT_DATASET})")
    p.add_argument("--reset-seconds", type=nonnegative_float, default=2.0, help="pause between episodes")
    p.add_argument("--operator", default="", help="who is collecting (stored with each episode)")
    p.add_argument("--seed", type=int, default=None, help="sim: seed of the first episode (default from config)")
    p.add_argument("--button", action="store_true",
                   help="handheld: the gripper's record button starts and stops each take (--seconds caps it)")
    p.add_argument("--corrective", action="store_true",
                   help="simulated rig: the policy drives each take and the scripted corrector takes over with the "
                        "leaders when it falls behind the demonstrations (a corrective take); a take the policy "
                        "finishes by itself is kept as a trial")
    p.add_argument("--policy", type=Path, default=None, metavar="PATH",
                   help="with --corrective: the policy file (default: quick-train's latest beside the dataset)")
    p.set_defaults(func=run)


def _interrupt(*_):
    raise KeyboardInterrupt


def run(args) -> int:
    config = load_config(args.config)
    if args.button and config.gripper is None:
        print(f"rig: --button needs a handheld gripper, and {config.source} has no [gripper] table", file=sys.stderr)
        return 2
    preflight(config)  # a hardware gripper that is not plugged in: one line, before anything starts
    pressed = threading.Event()
    takes = Takes(config, args.dataset, task=args.task, operator=args.operator, seed=args.seed,
                  on_button=pressed.set)
    if args.corrective and (config.sim is None or takes.sim_task is None or args.button):
        print("rig: --corrective and --button do not go together" if args.button else
              f"rig: --corrective needs the simulated rig (a world whose scripted corrector can take over); "
              f"{config.name} has none", file=sys.stderr)
        return 2
    takes.open_dataset(interactive=sys.stdin is not None and sys.stdin.isatty())  # None: stdin closed
    if args.seconds is None:
        args.seconds = takes.take_seconds
    signal.signal(signal.SIGTERM, _interrupt)
    if args.corrective:
        return _run_corrective(args, config, takes)
    seed0 = takes.seed
    kept = 0
    try:
        takes.open()
        for warning in takes.warnings:
            print(f"rig: warning: {warning}", file=sys.stderr)
        world = takes.world
        for i in range(args.episodes):
            takes.reset(seed0 + i)
            if args.button:
                print(f"press the gripper's record button to start episode {i + 1} of {args.episodes}",
                      flush=True)
                _wait_press(takes, pressed, None)
            else:
                takes.wait(args.reset_seconds if i or world else config.safety.engage_seconds)
            index = takes.begin()
            print(f"episode {index}: recording {args.seconds:g} s ...", flush=True)
            if args.button:
                _wait_press(takes, pressed, args.seconds)
            else:
                takes.wait(args.seconds)
            result = takes.end()
            kept += 1
            frames = {c: s["written"] for c, s in result.stats["cameras"].items()}
            rows = {name: st["written"] for name, st in result.stats["streams"].items()}
            label = "" if result.success is None else (" success" if result.success else " failure")
            print(f"episode {index}: complete, {result.duration_s:.1f} s, rows {rows}, frames {frames},{label} "
                  f"(readable {result.stop_to_readable_s * 1e3:.0f} ms after stop)", flush=True)
    except KeyboardInterrupt:
        if takes.recording:
            print("\ninterrupted: the current episode is kept as 'recovered'", file=sys.stderr)
            kept += 1
    finally:
        takes.close(status="recovered", note="the session closed while recording")
    for index, line in sorted(takes.pose_done.items()):  # handheld: computed after each take
        print(f"episode {index}: {line}")
    print(f"{kept} episode(s) in {args.dataset}")
    if takes.compactor is not None and kept:
        _finish_compaction(takes, args.dataset)
    return 0


CORRECTOR_POLL_S = 0.25  # how often the corrector looks at the world
SETTLE_S = 0.5  # after a reset, before the policy looks at the scene
CORRECTION_CAP_S = 60.0  # a correction that has not finished by then ends the take


def _run_corrective(args, config, takes: Takes) -> int:
    """``--corrective``: each take starts with the policy driving (rig/trials.py PolicyTrials, the
    loop `rig trial` uses); the scripted corrector (rig/sim/corrector.py) takes over when needed."""
    from rig.sim.tasks import get_task
    from rig.trials import PolicyTrials, mark_trial, preload_torch

    spec = get_task(takes.sim_task)
    trials = PolicyTrials(takes, args.policy)
    preload_torch()  # before the loop runs: importing torch then would stall its ticks
    policy = trials.load()  # a missing or foreign policy file: one line, before anything moves
    seed0, kept, corrected = takes.seed, 0, 0
    try:
        takes.open()
        for warning in takes.warnings:
            print(f"rig: warning: {warning}", file=sys.stderr)
        takes.wait(config.safety.engage_seconds)
        for i in range(args.episodes):
            takes.reset(seed0 + i)
            takes.wait(SETTLE_S)
            print(f"seed {seed0 + i}: the policy drives, the corrector watches ...", flush=True)
            result, marks, corrector = corrective_take(takes, trials, policy, spec, args.seconds)
            index = result.index
            kept += 1
            if marks.corrective:
                corrected += 1
                what = (f"taken over at {corrector.took_over_s:.1f} s ({corrector.reason}); corrective from row "
                        f"{marks.takeover_tick}, " + ("finished" if result.success else "not finished"))
            elif corrector.state != "watching":
                what = "the corrector moved the leaders but the loop saw no takeover (not corrective)"
            else:
                what = "the policy " + ("finished by itself: a trial" if result.success else "did not finish")
            print(f"episode {index}: {what}, {result.duration_s:.1f} s", flush=True)
            if i + 1 < args.episodes:
                takes.wait(args.reset_seconds)
    except KeyboardInterrupt:
        if trials.active:
            print("\ninterrupted: the take in progress is kept as 'recovered'", file=sys.stderr)
    finally:
        index = trials.index
        takes.close(status="recovered", note="the session closed while recording")
        if index is not None and takes.dataset is not None:
            mark_trial(takes, index)
    print(f"{kept} episode(s) in {args.dataset}, {corrected} corrective")
    return 0


def corrective_take(takes: Takes, trials, policy, spec, seconds: float):
    """One take: the policy drives (``trials.begin``), the scripted corrector watches and takes
    over when it falls behind, the world judges. A takeover makes it corrective (``trials.end``
    marks it; its outcome says the correction's). Returns (TakeResult, TrialMarks, Corrector)."""
    from rig.sim.corrector import Corrector
    from rig.trials import Outcome, record_outcome

    trials.begin(policy)
    corrector = _watch(takes, Corrector(takes.world, spec), seconds)
    result, marks = trials.end(judge=True)
    if marks.corrective:
        record_outcome(takes, result.index, Outcome("success" if result.success else "failure",
                                                    f"corrected: {corrector.reason}", "world"))
    return result, marks, corrector


def _watch(takes: Takes, corrector, seconds: float):
    """The policy drives while the corrector watches, until the policy finishes, the time is up
    without a takeover, or the correction has been played out."""
    t0 = time.monotonic()
    while True:
        t = time.monotonic() - t0
        state = corrector.step(t)
        if state == "watching" and (corrector.done_by_policy or t >= seconds):
            return corrector
        if corrector.finished or t >= seconds + CORRECTION_CAP_S:
            takes.wait(0.5)  # the world settles: the success check sees it resting
            return corrector
        takes.wait(CORRECTOR_POLL_S)


def _finish_compaction(takes: Takes, dataset: Path) -> None:
    """[recording] compact: the rig is stopped; compact the kept takes still in JPEG, and say
    how much of the compactor's CPU time fell inside takes (measured by the kernel: 0 s)."""
    bg = takes.compactor
    print(f"compacting the kept takes to video ({takes.config.recording.compact}; log {bg.log}) ...", flush=True)
    try:
        rc = bg.finish()
    except KeyboardInterrupt:
        print(f"\ninterrupted: the rest stays JPEG; `rig fleet compact {dataset}` finishes it", file=sys.stderr)
        return
    ds = Dataset(dataset)
    done = sum(1 for e in ds.episodes() if e.status == "complete" and ds.episode(e.index).attrs.get("compacted"))
    print(f"compaction: {done} kept episode(s) compacted" + ("" if rc == 0 else f" (exit status {rc}, see the log)")
          + f"; paused during {bg.pauses} take(s), {bg.cpu_while_paused_s:.3f} s of its CPU inside them")


def _wait_press(takes: Takes, pressed: threading.Event, cap_s: float | None) -> None:
    """Wait for the next press of the record button (or ``cap_s``), watching for failures."""
    pressed.clear()
    end = None if cap_s is None else time.monotonic() + cap_s
    while not pressed.is_set():
        remaining = 0.5 if end is None else min(0.5, end - time.monotonic())
        if remaining <= 0:
            return
        takes.wait(remaining, until=pressed)


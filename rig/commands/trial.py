"""`rig trial DATASET`: the policy on the rig's followers, N recorded trials, a success figure.

Each trial is a take (rig/trials.py: ``PolicyTrials``) through the rig's one control loop and its
safety, recorded in DATASET as a trial episode with its start, the policy file's digest and its
outcome. Who judges: the simulated world (its success check); on hardware the operator, one key
on stdin (s success, f failure, k skip), or ``--judge CMD`` for a script (docs/trials.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drivers.errors import RigError
from recorder import Dataset
from rig.config import load_config
from rig.takes import TakeError, Takes, preflight
from rig.train.stats import SuccessFigure
from rig.trials import OUTCOMES, Outcome, PolicyTrials, arm_trials, mark_trial, preload_torch, record_outcome

FIRST_SEED = 10_000  # simulated rig: trial seeds start here (takes use the config's seed and up; estimates 1000+)
DEFAULT_SECONDS = 20.0  # a trial's length when the dataset has no takes to go by
SETTLE_S = 0.5  # simulated rig: after a reset, before the trial begins
SUCCESS_POLL_S = 0.25  # simulated rig: how often the world is asked whether the task is done
JUDGE_TIMEOUT_S = 600.0
KEYS = {"s": "success", "f": "failure", "k": "skip"}


def register(sub) -> None:
    p = sub.add_parser("trial", help="run the policy on the rig's followers as recorded, judged trials; "
                                     "report its success with a 95 %% interval")
    p.add_argument("dataset", type=Path, help="the dataset the trials are recorded into (and the policy's takes)")
    p.add_argument("--policy", type=Path, default=None, metavar="PATH",
                   help="the policy file (default: quick-train's latest beside the dataset, DATASET.policy.pt)")
    p.add_argument("--trials", type=int, default=10, metavar="N", help="number of trials (default 10)")
    p.add_argument("--config", default=None, help="built-in config name or TOML path (default sim-aloha)")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="length of one trial (default: the dataset's longest take); the simulated rig ends a "
                        "trial early once the world sees the task done")
    p.add_argument("--judge", default=None, metavar="CMD",
                   help="a command run after each trial (through the shell) whose last line of output is "
                        "success, failure or skip (s/f/k), optionally followed by a reason; it gets RIG_DATASET, "
                        "RIG_EPISODE, RIG_TRIAL (1..N), RIG_TRIALS, RIG_SEED, RIG_POLICY, RIG_POLICY_DIGEST. "
                        "Default: the world judges (simulated rig), else the operator answers one key on stdin")
    p.add_argument("--seed", type=int, default=None,
                   help=f"simulated rig: the first trial's world seed (default {FIRST_SEED}); seeds any episode "
                        "of the dataset already used are skipped, so trials start from unseen scenes")
    p.add_argument("--reset-seconds", type=float, default=1.0, help="pause between trials (default 1)")
    p.add_argument("--task", default=None, help="task text stored with each trial (sim: also the sim task)")
    p.add_argument("--operator", default="", help="who ran the trials (stored with each episode)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the figures and every trial")
    p.set_defaults(func=run)


@dataclass
class TrialRecord:
    """One trial as the report lists it."""

    trial: int  # 1..N
    episode: int
    seed: int | None
    outcome: str | None  # None: cut short before anyone judged it
    reason: str
    judged_by: str
    duration_s: float
    t_success_s: float | None = None
    corrective: bool = False
    start: dict[str, Any] = field(default_factory=dict)


def trial_seeds(ds: Dataset, n: int, first: int) -> list[int]:
    """``n`` world seeds from ``first`` up, none of them a seed an episode of ``ds`` used."""
    used = {ds.episode(e.index).attrs.get("seed") for e in ds.episodes()}
    seeds: list[int] = []
    s = first
    while len(seeds) < n:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


def default_seconds(ds: Dataset) -> float:
    """The longest kept take that is not itself a trial: a policy gets as long as a person took."""
    best = 0.0
    for e in ds.episodes():
        if e.status == "complete" and ds.episode(e.index).attrs.get("trial") is None:
            best = max(best, e.duration_s)
    return best or DEFAULT_SECONDS


def parse_answer(text: str) -> tuple[str, str] | None:
    """'success', 's', 'failure dropped the cube' ... -> (outcome, reason); None if it names none."""
    words = text.strip().split(None, 1)
    if not words:
        return None
    word = words[0].lower()
    outcome = KEYS.get(word, word)
    if outcome not in OUTCOMES:
        return None
    return outcome, words[1].strip() if len(words) > 1 else ""


def run_judge(cmd: str, env: dict[str, str]) -> Outcome:
    """``--judge``: run the command; its last non-empty line of output is the answer."""
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, env={**os.environ, **env},
                             timeout=JUDGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TakeError(f"--judge {cmd!r} gave no answer within {JUDGE_TIMEOUT_S:.0f} s") from None
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    answer = parse_answer(lines[-1]) if lines else None
    if out.returncode != 0 or answer is None:
        said = lines[-1] if lines else "nothing"
        raise TakeError(f"--judge {cmd!r} answered {said!r} (exit status "
                        f"{out.returncode}); it must print success, failure or skip (s/f/k) as its last line "
                        "and exit 0")
    return Outcome(answer[0], answer[1], "judge")


def read_key(prompt: str) -> Outcome:
    """The operator's answer: one key (s / f / k) on a terminal, or a line on a pipe."""
    while True:
        print(prompt, end="", flush=True)
        line = _one_key() if sys.stdin.isatty() else sys.stdin.readline()
        if line == "":
            raise TakeError("stdin closed before the trial was judged: answer s, f or k, or give --judge CMD")
        answer = parse_answer(line)
        if sys.stdin.isatty():
            print(line.strip())
        if answer is not None:
            return Outcome(answer[0], answer[1], "operator")
        print("  answer s (success), f (failure) or k (skip)", flush=True)


def _one_key() -> str:
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        key = sys.stdin.read(1)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
    if key in ("\x03", "\x04"):  # Ctrl-C, Ctrl-D in cbreak mode
        raise KeyboardInterrupt
    return key


def _interrupt(*_):
    raise KeyboardInterrupt


def _drive(takes: Takes, trials: PolicyTrials, seconds: float) -> tuple[float | None, str | None]:
    """The policy drives for ``seconds``; stops early when the world sees the task done or the
    policy fails. Returns (seconds to success, the policy's failure)."""
    t0 = time.monotonic()
    world = takes.world
    next_poll = t0
    while (now := time.monotonic()) - t0 < seconds:
        failure = trials.failure()
        if failure is not None:
            return None, failure
        if world is not None and now >= next_poll:
            next_poll = now + SUCCESS_POLL_S
            if takes.success():
                return round(now - t0, 2), None
        takes.wait(min(0.05, seconds - (now - t0)))  # raises if the loop, the arms or the recorder stopped
    return None, None


def run(args) -> int:
    if args.trials < 1 or (args.seconds is not None and args.seconds <= 0):
        raise RigError("--trials must be >= 1 and --seconds > 0")
    config = load_config(args.config)
    if not config.followers:
        raise RigError(f"{config.source} has no followers for a policy to drive; trials need a rig with arms")
    preflight(config)
    takes = Takes(config, args.dataset, task=args.task, operator=args.operator)
    trials = PolicyTrials(takes, args.policy)
    preload_torch()  # before the loop runs: importing torch then would stall its ticks
    policy = trials.load()  # a missing or foreign policy file: one line, before anything moves
    ds = takes.open_dataset(interactive=False, out=lambda s: print(f"rig: {s}", file=sys.stderr))
    file, digest = trials.policy_file(), trials.digest
    seconds = args.seconds or default_seconds(ds)
    sim = config.sim is not None
    seeds: list[int | None] = list(trial_seeds(ds, args.trials, FIRST_SEED if args.seed is None else args.seed)
                                   ) if sim else [None] * args.trials
    who = ("the judge " + repr(args.judge)) if args.judge else ("the world" if sim else "you (s/f/k)")
    print(f"{args.trials} trial(s) of {seconds:.1f} s of {file} (sha256 {digest[:12]}) on {config.name}; "
          f"judged by {who}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    records: list[TrialRecord] = []
    try:
        takes.open()
        for warning in takes.warnings:
            print(f"rig: warning: {warning}", file=sys.stderr)
        takes.wait(config.safety.engage_seconds)
        for i, seed in enumerate(seeds):
            records.append(_one(takes, trials, policy, args, i, seed, seconds, file, digest))
            if i + 1 < len(seeds):
                takes.wait(args.reset_seconds)
    except KeyboardInterrupt:
        if trials.active:
            print("\ninterrupted: the trial in progress is kept as 'recovered', unjudged", file=sys.stderr)
    finally:
        if trials.active:
            index = trials.index
            takes.close(status="recovered", note="the trial was cut short")
            if index is not None and takes.dataset is not None:
                mark_trial(takes, index)
        else:
            takes.close()
    judged = [r for r in records if r.outcome in ("success", "failure")]
    figure = SuccessFigure("arms", sum(r.outcome == "success" for r in judged), len(judged))
    overall = arm_trials(args.dataset, digest)
    skipped = sum(r.outcome == "skip" for r in records)
    print(f"trials on the arms: {figure.text()}" + (f"; {skipped} skipped" if skipped else ""))
    if overall.trials != figure.trials:
        print(f"all trials of this policy in {args.dataset}: {overall.text()}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "dataset": str(args.dataset), "config": config.name, "policy": str(file), "policy_digest": digest,
            "seconds": seconds, "success": figure.to_dict(), "success_all_trials": overall.to_dict(),
            "skipped": skipped, "trials": [asdict(r) for r in records]}, indent=1))
        print(f"report: {args.json}")
    return 0


def _one(takes: Takes, trials: PolicyTrials, policy: Any, args, i: int, seed: int | None, seconds: float,
         file: Path, digest: str | None) -> TrialRecord:
    n = args.trials
    if seed is not None:
        takes.reset(seed)
        takes.wait(SETTLE_S)  # the cameras show the new scene before the policy looks at it
    index = trials.begin(policy)
    where = f"episode {index}" + (f", seed {seed}" if seed is not None else "")
    print(f"trial {i + 1}/{n} ({where}): the policy drives for {seconds:.1f} s ...", flush=True)
    t_success, failure = _drive(takes, trials, seconds)
    world_judges = args.judge is None and takes.world is not None
    note = f"the policy failed: {failure}" if failure else None
    result, marks = trials.end(note=note, judge=world_judges and failure is None)
    start = dict(takes.dataset.episode(index).attrs.get("start") or {})
    if failure is not None:
        outcome = Outcome("failure", f"the policy failed: {failure}", "rig")
        record_outcome(takes, index, outcome)
    elif args.judge is not None:
        env = {"RIG_DATASET": str(args.dataset), "RIG_EPISODE": str(index), "RIG_TRIAL": str(i + 1),
               "RIG_TRIALS": str(n), "RIG_SEED": "" if seed is None else str(seed), "RIG_POLICY": str(file),
               "RIG_POLICY_DIGEST": digest or ""}
        outcome = run_judge(args.judge, env)
        record_outcome(takes, index, outcome)
    elif world_judges:
        ok = result.success
        reason = (f"the world saw the task done at {t_success:.1f} s" if t_success is not None
                  else "the world's success check" if ok else "the world did not see the task done")
        outcome = Outcome("success" if ok else "failure", reason, "world")
        record_outcome(takes, index, outcome)
    else:
        outcome = read_key(f"trial {i + 1}/{n} (episode {index}): s success / f failure / k skip? ")
        record_outcome(takes, index, outcome)
    how = f" at {t_success:.1f} s" if t_success is not None and outcome.outcome == "success" else ""
    extra = f" ({outcome.reason})" if outcome.reason and outcome.judged_by != "world" else ""
    took = ", taken over: corrective" if marks.corrective else ""
    print(f"trial {i + 1}/{n} ({where}): {outcome.outcome}{how}{extra}, judged by {outcome.judged_by}{took}",
          flush=True)
    return TrialRecord(i + 1, index, seed, outcome.outcome, outcome.reason, outcome.judged_by,
                       round(result.duration_s, 2), t_success, marks.corrective, start)


__all__ = ["parse_answer", "register", "run", "run_judge", "trial_seeds"]

"""Quick-train beside a recording session, in its own process.

The teleop loop and the UI never share an interpreter (or the GIL) with training: the trainer
runs in a ``multiprocessing`` spawn child at a lowered priority (nice +10 by default) with one
torch, OpenMP and OpenCV thread, so it takes at most one core and yields it to the loop. It
trains as soon as two kept episodes exist, and again whenever ``notify_new_episode()`` says one
was kept: a run in progress is abandoned and restarted on the new set, warm-started from the
last model and with already decoded episodes reused. ``status()`` never blocks: it drains the
child's status queue and returns the latest :class:`TrainStatus`.

    trainer = BackgroundTrainer("data/rig.zarr", task="transfer_cube")
    trainer.start()
    ...                                  # after each kept take:
    trainer.notify_new_episode()
    s = trainer.status()                 # for the Train panel
    trainer.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.train.report import EARLY_TRIALS, trials_figure

POST_EVERY_S = 0.5  # progress updates at most this often (finished stages always)
MIN_EPISODES = 2


@dataclass
class TrainStatus:
    state: str  # "idle" | "training" | "done" | "error"
    progress: float  # 0..1 of the current run
    episodes: int  # episodes used in the latest result
    message: str  # one line for humans
    val_error: dict[str, float] | None  # per joint; key suffix gives the unit: _deg joints, _pct grippers
    learning_curve: list[tuple[int, float]] | None  # (training episodes, val joint error in deg)
    projection: str | None  # e.g. "about 25 more episodes to reach half the present error (0.60 deg)"
    flagged: list[tuple[int, str]]  # (episode index, reason)
    updated_ns: int
    # extras
    units: dict[str, str] = field(default_factory=dict)  # val_error key -> "deg" or "%"
    stage: str = ""  # "waiting" | "training" | "validated" | "learning curve" | "done"
    val_joint_error_deg: float | None = None  # mean over arm joints
    val_gripper_error_pct: float | None = None
    mean_action_error_deg: float | None = None  # the trivial baseline, for scale
    result_episodes: list[int] = field(default_factory=list)
    runs: int = 0  # finished passes since start
    torch_threads: int = 0  # threads torch uses in the training process (1 beside a session)
    pid: int = 0  # the training process
    report: dict[str, Any] | None = None  # the full TrainReport of the latest pass (to_dict)
    # success, the headline (the quick policy on takes with a success check)
    # figures as rig.train.report.figure makes them: kind, label, successes, trials = n, rate, ci95, text
    success: dict[str, Any] | None = None  # the fast sim estimate (EARLY_TRIALS trials: labelled early)
    success_curve: list[dict[str, Any]] | None = None  # figures with "takes"
    success_projection: str | None = None  # "about N more takes to reach 80 %"
    confirmed: dict[str, Any] | None = None  # real-time trials through the buses, when done
    takes_that_hurt: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, Any] | None = None  # secondary: action errors beside the two baselines
    first_estimate_s: float | None = None  # from the newest kept take to the first success estimate
    success_episodes: int = 0  # kept takes the success figure was trained from


def _idle(message: str) -> TrainStatus:
    return TrainStatus("idle", 0.0, 0, message, None, None, None, [], time.monotonic_ns(), stage="waiting")


class BackgroundTrainer:
    def __init__(self, dataset_path: str | os.PathLike[str], task: str | None = None, *, budget_s: float = 45,
                 nice: int = 10, seed: int = 0, curve: bool = True, target: float | None = None, threads: int = 1,
                 fast_trials: int = EARLY_TRIALS, confirm_trials: int = 3):
        """``fast_trials``: the fast sim estimate of success after each pass (takes with a success
        check); ``confirm_trials``: then as many real-time trials through the buses, in a world of
        the training process's own (niced like it; 0: none)."""
        self.fast_trials = fast_trials
        self.confirm_trials = confirm_trials
        self.dataset_path = Path(dataset_path)
        self.task = task
        self.budget_s = float(budget_s)
        self.nice = int(nice)
        self.seed = seed
        self.curve = curve
        self.target = target
        self.threads = threads
        self._status = _idle("quick-train not started")
        self._proc: mp.process.BaseProcess | None = None
        self._cmd: Any = None
        self._out: Any = None

    # ---- the parent side -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the training process (spawned: no copy of the parent's threads or locks)."""
        if self._proc is not None and self._proc.is_alive():
            return
        from rig.train import require_torch

        require_torch()  # fail here, with the install hint, rather than silently in the child
        ctx = mp.get_context("spawn")
        self._cmd, self._out = ctx.Queue(), ctx.Queue()
        args = (str(self.dataset_path), self.task, self.budget_s, self.nice, self.seed, self.curve, self.target,
                self.threads, os.getpid(), self._cmd, self._out, self.fast_trials, self.confirm_trials)
        # Not a daemon: the trainer runs its trials in child processes of its own (a renderer for the
        # fast estimate, a world for real-time trials), which a daemonic process may not have. It
        # still never outlives the session: it stops when its parent is gone (``poll``), and at exit.
        self._proc = ctx.Process(target=_worker_main, args=args, name="rig-quick-train", daemon=False)
        self._proc.start()
        atexit.register(self.stop)
        self._status = _idle("quick-train starting")

    def notify_new_episode(self) -> None:
        """An episode was kept: retrain on the new set (a run in progress restarts)."""
        if self._cmd is not None:
            self._cmd.put(("train",))

    def status(self) -> TrainStatus:
        """The latest status, without waiting."""
        if self._out is not None:
            while True:
                try:
                    self._status = self._out.get_nowait()
                except (queue.Empty, EOFError, OSError):
                    break
        if self._proc is not None and not self._proc.is_alive() and self._status.state == "training":
            self._status = dataclasses.replace(self._status, state="error", updated_ns=time.monotonic_ns(),
                                               message=f"the training process ended (exit code {self._proc.exitcode})")
        return self._status

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(Exception):
            self._cmd.put(("stop",))
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
        self.status()
        for q in (self._cmd, self._out):
            with contextlib.suppress(Exception):
                q.close()
                q.cancel_join_thread()
        self._proc = None
        atexit.unregister(self.stop)

    def __enter__(self) -> BackgroundTrainer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- the child side ---------------------------------------------------------------------------------

def _limit_threads(n: int) -> None:
    """One thread everywhere: torch intra/inter-op, OpenMP/BLAS, OpenCV."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import cv2

    cv2.setNumThreads(n)
    from rig.train import require_torch

    torch = require_torch()
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(n)


def _worker_main(path: str, task: str | None, budget_s: float, nice: int, seed: int, curve: bool,
                 target: float | None, threads: int, parent: int, cmd: Any, out: Any, fast_trials: int = EARLY_TRIALS,
                 confirm_trials: int = 0) -> None:
    with contextlib.suppress(OSError):
        os.nice(nice)
    _limit_threads(threads)
    w = _Worker(path, task, budget_s, seed, curve, target, threads, parent, cmd, out)
    w.fast_trials, w.confirm_trials = fast_trials, confirm_trials
    w.run()


class _Worker:
    def __init__(self, path, task, budget_s, seed, curve, target, threads, parent, cmd, out):
        from rig.train.data import EpisodeCache
        from rig.train.trainer import TrainConfig

        self.path, self.task, self.curve, self.target = path, task, curve, target
        self.cfg = TrainConfig(seed=seed, budget_s=budget_s, overrun=1.2)
        self.cache = EpisodeCache(threads=threads)
        self.parent, self.cmd, self.out = parent, cmd, out
        self.pending = True  # train at start when there is enough data
        self.stopping = False
        self.policy = None
        from rig.train import require_torch

        self.last = dataclasses.replace(_idle("waiting for episodes"), torch_threads=require_torch().get_num_threads(),
                                        pid=os.getpid())
        self.runs = 0
        self._posted = 0.0
        self.fast_trials = EARLY_TRIALS
        self.confirm_trials = 0

    def post(self, force: bool = False, **changes: Any) -> None:
        self.last = dataclasses.replace(self.last, updated_ns=time.monotonic_ns(), **changes)
        now = time.monotonic()
        if force or now - self._posted >= POST_EVERY_S:
            self._posted = now
            self.out.put(self.last)

    def poll(self, timeout: float = 0.0) -> None:
        """Take commands; a new episode sets ``pending``, stop sets ``stopping``."""
        try:
            while True:
                msg = self.cmd.get(timeout=timeout) if timeout else self.cmd.get_nowait()
                timeout = 0.0
                if msg[0] == "stop":
                    self.stopping = True
                elif msg[0] == "train":
                    self.pending = True
        except (queue.Empty, EOFError, OSError):
            pass
        if os.getppid() != self.parent:
            self.stopping = True  # the session is gone: do not train for nobody

    def interrupted(self) -> bool:
        self.poll()
        return self.stopping or self.pending

    def run(self) -> None:
        while not self.stopping:
            if not self.pending:
                self.poll(timeout=1.0)
                continue
            self.pending = False
            try:
                self.train_once()
            except Exception as exc:  # reported in the panel; the next kept episode tries again
                msg = str(exc) or type(exc).__name__
                self.post(force=True, state="error", progress=0.0, message=f"quick-train failed: {msg}")

    def train_quick(self) -> bool:
        """The quick policy and its success; False when the takes cannot measure success (then the
        visuomotor pass with its action errors runs instead)."""
        from recorder import Dataset
        from rig.sim.tasks import apply_recipe, get_task, simulated_task
        from rig.train.quick import QuickConfig
        from rig.train.quickrun import QuickRunConfig, run_quick

        why = _quick_usable(self.path, self.task)
        if why is not None:
            self.post(force=True, success=None, success_projection=why)
            return False
        t_take = _newest_take_ns(self.path)
        # the task's objects (how many the locator finds), recipe and trial length
        task = simulated_task(self.task, (e.task for e in Dataset(self.path).episodes() if e.status == "complete"))
        qc = apply_recipe(QuickConfig(), task, seed=self.cfg.seed, budget_s=self.cfg.budget_s, steps=None)
        rc = QuickRunConfig(quick=qc, fast_trials=self.fast_trials, curve=self.curve,
                            trial_s=get_task(task).trial_s if task else QuickRunConfig.trial_s)

        def progress(stage: str, frac: float, rep: dict) -> None:
            changes: dict[str, Any] = {"state": "training", "stage": stage, "progress": round(frac, 3),
                                       "episodes": len(rep.get("episodes", []))}
            if stage == "training":
                changes["message"] = f"training the quick policy on {len(rep.get('trained_on', []))} takes: {100 * frac:.0f} %"
            if rep.get("success"):
                s = rep["success"]
                hurt = rep.get("takes_that_hurt", {})
                changes["flagged"] = sorted((int(i), f"{g}: {why}") for g, d in hurt.items() for i, why in d.items())
                changes.update(success=s, success_curve=rep.get("curve"), takes_that_hurt=hurt,
                               success_episodes=len(rep.get("episodes", [])),
                               message=f"success {s['text']} ({s['label']})")
                if stage == "estimated":  # the first success figure of this pass: how long after the take
                    changes["first_estimate_s"] = round((time.monotonic_ns() - t_take) / 1e9, 1) if t_take else None
            if stage == "done":
                self.runs += 1
                changes.update(state="done", runs=self.runs, success_curve=rep.get("curve"),
                               success_projection=rep.get("projection"), errors=rep.get("errors"), report=rep,
                               val_joint_error_deg=(rep.get("errors") or {}).get("joint_error"),
                               mean_action_error_deg=(rep.get("errors") or {}).get("mean_action_joint_error"),
                               result_episodes=list(rep.get("episodes", [])))
            self.post(force=stage != self.last.stage or stage == "done", **changes)

        rep, policy = run_quick(self.path, self.task, rc, progress=progress, should_stop=self.interrupted)
        if policy is not None:  # after every pass, whichever recipe: `p` in the app runs the latest
            from rig.train.latest import save_latest

            save_latest(policy, self.path)
        if policy is not None and self.confirm_trials > 0 and rep.get("task") and not self.interrupted():
            from rig.train.rollout import evaluate_in_sim

            # a take kept meanwhile ends the trial at once: its pass comes first
            res = evaluate_in_sim(policy, rep["task"], self.confirm_trials, rc.seed0, rc.trial_s,
                                  should_stop=self.interrupted)
            if self.interrupted():
                return True
            self.post(force=True, confirmed=trials_figure("realtime", res.per_trial))
        return True

    def train_once(self) -> None:
        from recorder import Dataset
        from rig.train.data import kept_episodes
        from rig.train.pipeline import run_pipeline

        if not (Path(self.path) / "zarr.json").exists():
            self.post(force=True, state="idle", stage="waiting", message="waiting for the first kept episode")
            return
        n = len(kept_episodes(Dataset(self.path), self.task))
        if n < MIN_EPISODES:
            self.post(force=True, state="idle", stage="waiting", progress=0.0,
                      message=f"waiting for episodes: {n} kept, quick-train starts at {MIN_EPISODES}")
            return
        self.post(force=True, state="training", stage="loading", progress=0.0,
                  message=f"loading {n} episodes")
        if self.fast_trials > 0 and self.train_quick():
            return

        def progress(stage: str, frac: float, rep) -> None:
            changes: dict[str, Any] = {"state": "training", "stage": stage, "progress": round(frac, 3)}
            force = stage != self.last.stage
            if stage == "training":
                changes["message"] = (f"training on {len(rep.train_episodes)} episodes "
                                      f"({len(rep.val_episodes)} held out): {100 * frac:.0f} %")
            elif stage in ("validated", "learning curve", "done"):
                changes.update(_results(rep))
                if stage == "done":
                    changes["state"] = "done"
                    self.runs += 1
                    changes["runs"] = self.runs
            self.post(force=force or stage == "done", **changes)

        report, policy = run_pipeline(self.path, self.task, self.cfg, curve=self.curve, target=self.target,
                                      cache=self.cache, init=self.policy, progress=progress,
                                      should_stop=self.interrupted)
        if policy is not None:
            self.policy = policy  # the next run warm-starts from it
            from rig.train.latest import save_latest

            save_latest(policy, self.path)  # the policy-on-arms key (`p` in the app) loads it


def _quick_usable(path: str, task: str | None) -> str | None:
    """Why success cannot be measured on these takes (None: it can)."""
    from recorder import Dataset
    from rig.sim.tasks import TASKS

    infos = [e for e in Dataset(path).episodes() if e.status == "complete" and (not task or e.task == task)]
    if not any(e.task in TASKS for e in infos):
        return "no success check for this task: action errors only"
    labels = [e.success for e in infos]
    if not any(labels):
        return "no successful take yet: success is estimated once one finishes the task"
    return None


def _newest_take_ns(path: str) -> int | None:
    """When the newest kept take stopped (monotonic ns; the session and this process share the clock)."""
    from recorder import Dataset

    stops = [Dataset(path).episode(e.index).attrs.get("stop_monotonic_ns") for e in Dataset(path).episodes()
             if e.status == "complete"]
    stops = [s for s in stops if s]
    return max(stops) if stops else None


def _results(rep) -> dict[str, Any]:
    v = rep.val or {}
    per = v.get("per_joint") or {}
    stage = rep.stage
    flagged = list(rep.flagged)
    msg = (f"val error {v.get('joint_error', float('nan')):.2f} deg arm, {v.get('gripper_error', float('nan')):.1f} % "
           f"grippers on {len(rep.val_episodes)} held-out episodes (mean action: "
           f"{v.get('baseline_joint_error', float('nan')):.1f} deg)")
    if flagged:
        msg += f"; {len(flagged)} flagged"
    if stage == "validated":
        msg += "; learning curve next"
    elif stage == "done" and rep.projection:
        msg += f"; {rep.projection}"
    out: dict[str, Any] = {
        "episodes": len(rep.episodes), "message": msg, "val_error": dict(per),
        "units": {k: "%" if k.endswith("_pct") else "deg" for k in per},
        "flagged": flagged, "val_joint_error_deg": v.get("joint_error"),
        "val_gripper_error_pct": v.get("gripper_error"), "mean_action_error_deg": v.get("baseline_joint_error"),
        "result_episodes": list(rep.episodes),
    }
    if stage == "done":
        out.update(learning_curve=rep.learning_curve, projection=rep.projection, report=rep.to_dict())
    return out

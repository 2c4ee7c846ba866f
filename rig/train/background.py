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

import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _idle(message: str) -> TrainStatus:
    return TrainStatus("idle", 0.0, 0, message, None, None, None, [], time.monotonic_ns(), stage="waiting")


class BackgroundTrainer:
    def __init__(self, dataset_path: str | os.PathLike[str], task: str | None = None, *, budget_s: float = 45,
                 nice: int = 10, seed: int = 0, curve: bool = True, target: float | None = None, threads: int = 1):
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
                self.threads, os.getpid(), self._cmd, self._out)
        self._proc = ctx.Process(target=_worker_main, args=args, name="rig-quick-train", daemon=True)
        self._proc.start()
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
                 target: float | None, threads: int, parent: int, cmd: Any, out: Any) -> None:
    with contextlib.suppress(OSError):
        os.nice(nice)
    _limit_threads(threads)
    _Worker(path, task, budget_s, seed, curve, target, threads, parent, cmd, out).run()


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

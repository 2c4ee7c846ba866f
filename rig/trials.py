"""A policy on the arms: the latest trained policy drives the followers, recorded as a trial.

The policy runs through the rig's one control loop (``Takes.use(PolicySource(...))``), so the
joint limits, the step clamp, the watchdog and the alerts are those of teleop. A trial is a take
(rig/takes.py) whose episode says so:

- at its start, ``trial = "policy"``, ``policy`` (the file, its sha256 ``digest``, its training
  steps and episodes) and ``start`` (the world's ``seed`` and ``objects`` poses where a world
  knows them, and ``followers_q``, the followers' joints as the policy takes over);
- each tick's ``source``: ``policy`` while the policy drives, ``takeover`` once the operator moved
  a leader (the loop switches to the leaders on that same tick);
- at its end, ``corrective`` (the operator took over) with ``takeover_tick`` (the take's row of
  the takeover) and ``takeover_t_ns`` (that tick's deadline), found in the recorded ticks.

- its judgement: ``success`` (True / False; None for a skip or not judged yet), ``outcome``
  (success / failure / skip), ``outcome_reason`` and ``judged_by`` (world / operator / judge).

On the simulated rig the world judges (its success check, as for scripted takes) and the
collector may override; on hardware the operator answers (s / f / k) or a script does (`rig
trial --judge`). ``arm_trials`` counts a policy's judged trials into its success figure.
The trainer (rig/train/corrective.py) learns from a corrective take's ticks after the takeover
only, and leaves a trial nobody took over out.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rig.recording import JOINTS, TakeResult
from rig.takes import TakeError, Takes
from rig.ticks import SOURCE_CODES
from rig.train.policy_file import policy_digest  # the sha256 a trial records
from rig.train.stats import SuccessFigure

START_SETTLE_S = 0.3  # after the ramp to the policy's start pose, before the take begins
OUTCOMES = ("success", "failure", "skip")
OUTCOME_SUCCESS = {"success": True, "failure": False, "skip": None}


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as judged: ``outcome`` in OUTCOMES, why, and who said so."""

    outcome: str
    reason: str = ""
    judged_by: str = "operator"  # world | operator | judge | rig (the policy failed)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise TakeError(f"a trial's outcome is one of {', '.join(OUTCOMES)}, not {self.outcome!r}")

    @property
    def success(self) -> bool | None:
        return OUTCOME_SUCCESS[self.outcome]


def record_outcome(takes_or_dataset: Any, index: int, outcome: Outcome | None) -> None:
    """Write a trial's judgement into its episode: the success label and the outcome beside it
    (None: not judged, as before anyone answered)."""
    ds = getattr(takes_or_dataset, "dataset", takes_or_dataset)
    if ds is None:
        raise TakeError("the dataset is not open")
    ds.set_success(index, None if outcome is None else outcome.success)
    ds.annotate(index, {"outcome": None, "outcome_reason": "", "judged_by": None} if outcome is None else
                {"outcome": outcome.outcome, "outcome_reason": outcome.reason, "judged_by": outcome.judged_by})


def is_trial(attrs: dict[str, Any]) -> bool:
    return attrs.get("trial") == "policy"


def trial_outcome(attrs: dict[str, Any]) -> str | None:
    """A trial episode's outcome: written by its judge, else its success label (s / f in the
    episodes screen); None while nobody has judged it."""
    out = attrs.get("outcome")
    if out in OUTCOMES:
        # a label changed after the judgement (the collector overrode the world) wins
        label = attrs.get("success")
        if out != "skip" and label is not None and label != OUTCOME_SUCCESS[out]:
            return "success" if label else "failure"
        return out
    label = attrs.get("success")
    return None if label is None else ("success" if label else "failure")


def arm_trials(dataset: Any, digest: str | None) -> SuccessFigure:
    """Trials on the arms of the policy with ``digest`` (the file's sha256): its judged trial
    episodes in ``dataset`` (a path or an open Dataset), discarded ones and skips left out; a
    corrective take (taken over) is the policy's failure, whoever finished it."""
    from recorder import Dataset

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    ok = n = 0
    for info in ds.episodes():
        if info.status == "discarded" or digest is None:
            continue
        attrs = ds.episode(info.index).attrs
        if not is_trial(attrs) or (attrs.get("policy") or {}).get("digest") != digest:
            continue
        out = trial_outcome(attrs)
        if out == "success" and attrs.get("corrective"):
            out = "failure"  # someone took over and finished it: the policy did not, by itself
        if out in ("success", "failure"):
            n += 1
            ok += out == "success"
    return SuccessFigure("arms", ok, n)


@dataclass
class TrialMarks:
    """What a trial's ticks say: written into its episode's metadata."""

    index: int
    ticks: int  # rows recorded
    policy_ticks: int  # rows the policy drove
    corrective: bool  # the operator took over
    takeover_tick: int | None  # the take's row of the takeover
    takeover_t_ns: int | None  # that tick's deadline

    def attrs(self) -> dict[str, Any]:
        from rig.train.corrective import CORRECTIVE_KEY, TAKEOVER_NS_KEY, TAKEOVER_TICK_KEY

        return {CORRECTIVE_KEY: self.corrective, TAKEOVER_TICK_KEY: self.takeover_tick,
                TAKEOVER_NS_KEY: self.takeover_t_ns, "policy_ticks": self.policy_ticks}


def find_takeover(source: np.ndarray, deadline_ns: np.ndarray) -> tuple[int | None, int | None]:
    """The first row driven by the operator after a takeover, and its deadline."""
    rows = np.flatnonzero(np.asarray(source) == SOURCE_CODES["takeover"])
    if not len(rows):
        return None, None
    r = int(rows[0])
    return r, int(deadline_ns[r])


def mark_trial(takes: Takes, index: int) -> TrialMarks:
    """Read a trial's recorded ticks and write what they say (corrective, takeover tick) into it."""
    ds = takes.dataset
    if ds is None:
        raise TakeError("the dataset is not open")
    s = ds.episode(index).read_stream(JOINTS)
    source = np.asarray(s["source"])
    row, t_ns = find_takeover(source, np.asarray(s["t_deadline_ns"]))
    marks = TrialMarks(index, len(source), int(np.sum(source == SOURCE_CODES["policy"])), row is not None, row, t_ns)
    ds.annotate(index, marks.attrs())
    return marks


def preload_torch() -> bool:
    """Import torch now, before the control loop runs, if it is installed.

    Importing torch holds the interpreter's lock for seconds (its shared libraries load inside
    the import): done while the loop runs, the loop's ticks stop and the followers' bus watchdog
    trips (measured on the simulated ALOHA). One thread: a prediction is one observation, and the
    loop, the cameras and the world need the cores."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return False
    import torch

    torch.set_num_threads(1)
    return True


class PolicyTrials:
    """Runs the latest policy on a rig's followers as takes (one at a time)."""

    def __init__(self, takes: Takes, policy_path: str | Path | None = None):
        self.takes = takes
        self.policy_path = policy_path  # None: the quick-trainer's latest, beside the dataset
        self.index: int | None = None  # the trial being recorded
        self.marks: TrialMarks | None = None  # the last trial's
        self._policy: Any = None
        self._loaded: tuple[str, float] | None = None  # (file, mtime) of the loaded policy
        self.digest: str | None = None  # the loaded policy file's sha256
        self.source: Any = None  # the trial's PolicySource (its ``failure``, where it has one)

    @property
    def active(self) -> bool:
        return self.index is not None

    def load(self):
        """The latest policy (reloaded only when its file changed). Imports torch: seconds, the
        first time; call it off the loop and before the take begins."""
        from rig.train.latest import load_latest

        file = self.policy_file()
        if "torch" not in sys.modules and self.takes.has_loop:
            raise TakeError("the policy key needs torch loaded before the rig started (importing it now would stall "
                            "the control loop for seconds): restart with quick-train on or with --policy "
                            f"{file}")
        stamp = (str(file), file.stat().st_mtime) if file.exists() else None
        if self._policy is None or stamp != self._loaded:
            preload_torch()
            policy = load_latest(self.takes.path, file)
            give_reference(policy, self.takes)
            cams = policy.cfg.cameras
            # The first prediction initialises torch's kernels: here, not in the loop's first tick.
            policy.predict_chunk(np.zeros((len(cams), *policy.cfg.image_hw, 3), np.uint8),
                                 np.zeros(policy.cfg.n, np.float32), np.zeros(policy.cfg.n, np.float32))
            self._policy, self._loaded, self.digest = policy, stamp, policy_digest(file)
        return self._policy

    def policy_file(self) -> Path:
        from rig.train.latest import latest_policy_path

        return Path(self.policy_path) if self.policy_path is not None else latest_policy_path(self.takes.path)

    def begin(self, policy: Any) -> int:
        """The followers ramp to the policy's start pose (if it has one), then the take begins
        and the policy drives. Returns the episode index."""
        from rig.sources import PolicySource, Pose

        takes = self.takes
        if not takes.has_loop:
            raise TakeError("this rig has no followers for a policy to drive")
        session = takes.session
        n = takes.recorder.n_values if takes.recorder is not None else 0
        if policy.cfg.n != n:
            raise TakeError(f"the policy predicts {policy.cfg.n} values but this rig's followers have {n}; "
                            "train it on this rig's takes")
        missing = [c for c in policy.cfg.cameras if c not in session.cameras]
        if missing:
            raise TakeError(f"the policy needs camera(s) {missing}, which this rig has not opened "
                            f"(it has {sorted(session.cameras)}); train on this rig's cameras")
        cams = [session.cameras[c] for c in policy.cfg.cameras]
        source = PolicySource(policy, cams)  # checks the policy fits before anything moves
        if takes.world is not None:
            takes.world.set_operator(False)  # the simulated leaders stay still: a person's hands off
        if policy.start_q is not None:
            takes.use(Pose(np.asarray(policy.start_q, float)))
            time.sleep(takes.config.safety.engage_seconds + START_SETTLE_S)
        start: dict[str, Any] = {}
        if takes.world is not None:
            start = {"seed": takes.seed, "objects": takes.world.object_poses()}
        loop = takes.session.teleop
        start["followers_q"] = np.asarray(loop.follower_q, float).round(5).tolist()
        info = {"path": str(self._loaded[0]) if self._loaded else None, "digest": self.digest,
                "kind": getattr(policy, "file_meta", {}).get("kind"),  # the policy file's kind
                "steps": int(getattr(policy, "steps", 0)), "episodes": list(getattr(policy, "episodes", []))}
        reset = getattr(policy, "reset", None)
        if reset is not None and takes.world is not None:
            reset(takes.seed)  # a policy that keeps its trial's seed (the privileged one) gets it
        self.index = takes.begin(extra={"trial": "policy", "policy": info, "start": start}, perform=False)
        self.source = source
        takes.use(source, engage_s=0.0 if policy.start_q is not None else None)
        return self.index

    def failure(self) -> str | None:
        """Why the policy could not go on (it raised, an input failed), where its source says so."""
        failure = getattr(self.source, "failure", None)
        return None if failure is None else str(failure)

    def end(self, status: str = "complete", note: str | None = None,
            judge: bool = False) -> tuple[TakeResult, TrialMarks]:
        """The trial ends: the take is saved, the followers go back to the leaders, and the
        takeover (if any) is written into the episode. ``judge``: the simulated world judges it
        (recorded as its outcome); otherwise it is saved unjudged and the collector labels it."""
        judge = judge and status == "complete" and self.takes.world is not None
        try:
            result = self.takes.end(status=status, note=note, judge=judge)
        finally:
            self.index = None
            self.source = None
            self.takes.use(None)  # back to the leaders, blended from where the followers are
        self.marks = mark_trial(self.takes, result.index)
        if judge and result.success is not None:
            record_outcome(self.takes, result.index, Outcome("success" if result.success else "failure",
                                                             "the world's success check", "world"))
        return result, self.marks


def figure_from_dict(d: dict[str, Any] | None, kind: str) -> SuccessFigure | None:
    """A success figure from a report's dict (``SuccessFigure.to_dict()`` or the older
    {"successes", "trials", ...}); ``kind`` where the dict does not say."""
    if not d or "trials" not in d or "successes" not in d:
        return None
    from rig.train.report import as_figure  # the report's own reading of a figure

    return as_figure({"kind": kind, **d})


def current_figures(dataset: Any, policy_file: str | Path | None,
                    estimates: list[SuccessFigure | None]) -> tuple[SuccessFigure | None, SuccessFigure | None]:
    """(the trials on the arms of the policy file, the best success signal): the arms' trials
    where there are any, then real time, then the fast sim estimate (``stats.best_figure``)."""
    from rig.train.stats import best_figure

    arms = None
    if policy_file is not None and Path(policy_file).exists() and (Path(dataset) / "zarr.json").exists():
        arms = arm_trials(dataset, policy_digest(policy_file))
    return arms, best_figure([f for f in (arms, *estimates) if f is not None])


def lead_line(best: SuccessFigure | None) -> str:
    """The report's first line: the best success signal, labelled with its kind, n and interval."""
    if best is None:
        return "success: not measured yet (no trials on the arms, no simulated world to estimate in)"
    return f"success ({best.label}): {best.text()}"


def give_reference(policy: Any, takes: Takes) -> None:
    """A policy that locates objects against an empty-scene frame gets one: on the simulated rig
    the world's own model renders it (as the real-time trials do); on hardware it must come with
    the policy."""
    if not getattr(policy, "needs_reference", False) or getattr(policy, "reference", None) is not None:
        return
    if takes.config.sim is None or takes.sim_task is None:
        raise TakeError("this policy locates objects against an empty-scene reference frame, which this rig "
                        "cannot render; train it with an explicit colour prior (rig train --locator colour:red)")
    from rig.train.rollout import capture_reference  # the real-time trials' capture, reused

    capture_reference(policy, takes.config, takes.sim_task)


__all__ = ["OUTCOMES", "Outcome", "PolicyTrials", "TrialMarks", "arm_trials", "current_figures", "figure_from_dict",
           "lead_line", "find_takeover", "give_reference",
           "is_trial", "mark_trial", "policy_digest", "preload_torch", "record_outcome", "trial_outcome"]

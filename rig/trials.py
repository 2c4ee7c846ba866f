"""A policy on the arms: the latest trained policy drives the followers, recorded as a trial.

The policy runs through the rig's one control loop (``Takes.use(PolicySource(...))``), so the
joint limits, the step clamp, the watchdog and the alerts are those of teleop. A trial is a take
(rig/takes.py) whose episode says so:

- at its start, ``trial = "policy"`` and ``policy`` (the file, its training steps and episodes);
- each tick's ``source``: ``policy`` while the policy drives, ``takeover`` once the operator moved
  a leader (the loop switches to the leaders on that same tick);
- at its end, ``corrective`` (the operator took over) with ``takeover_tick`` (the take's row of
  the takeover) and ``takeover_t_ns`` (that tick's deadline), found in the recorded ticks.

No world judges a trial: the collector labels it success or failure (s / f), as on hardware.
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

START_SETTLE_S = 0.3  # after the ramp to the policy's start pose, before the take begins


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
        self.source: Any = None  # the running trial's PolicySource
        self.last_failure: str | None = None  # why the last trial's policy failed (None: it did not)

    @property
    def failure(self) -> str | None:
        """Why the running trial's policy stopped (it raised, a camera gave no frames): the
        followers hold and the trial ends as failed with this reason."""
        return self.source.failure if self.source is not None else None

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
            from rig.train.policy_file import policy_digest

            digest = policy_digest(file) if file.exists() else None
            policy = load_latest(self.takes.path, file)
            policy.file_digest = digest  # which file exactly a trial ran (sha256)
            cams = policy.cfg.cameras
            # The first prediction initialises torch's kernels: here, not in the loop's first tick.
            policy.predict_chunk(np.zeros((len(cams), *policy.cfg.image_hw, 3), np.uint8),
                                 np.zeros(policy.cfg.n, np.float32), np.zeros(policy.cfg.n, np.float32))
            self._policy, self._loaded = policy, stamp
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
        info = {"path": str(self._loaded[0]) if self._loaded else None, "steps": int(getattr(policy, "steps", 0)),
                "kind": getattr(policy, "file_meta", {}).get("kind"), "sha256": getattr(policy, "file_digest", None),
                "episodes": list(getattr(policy, "episodes", []))}
        self.index = takes.begin(extra={"trial": "policy", "policy": info}, perform=False)
        self.source = source
        takes.use(source, engage_s=0.0 if policy.start_q is not None else None)
        return self.index

    def end(self, status: str = "complete", note: str | None = None) -> tuple[TakeResult, TrialMarks]:
        """The trial ends: the take is saved unjudged (the collector labels it), the followers go
        back to the leaders, and the takeover (if any) is written into the episode."""
        failure = self.last_failure = self.failure
        try:
            result = self.takes.end(status=status, note=note or failure, judge=False)
        finally:
            self.index, self.source = None, None
            self.takes.use(None)  # back to the leaders, blended from where the followers are
        self.marks = mark_trial(self.takes, result.index)
        if failure is not None:  # the policy failed: the trial did too, and says why
            self.takes.dataset.annotate(result.index, {"policy_failure": failure})
            self.takes.label(result.index, False)
            result.success = False
        return result, self.marks


__all__ = ["PolicyTrials", "TrialMarks", "find_takeover", "mark_trial", "preload_torch"]

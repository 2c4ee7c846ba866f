"""The collector's keys on the take lifecycle (rig.takes), without any UI: the state the app shows.

The takes themselves (the dataset, the rig, reset/begin/end, the handheld stream and its button)
are rig.takes.Takes, the same lifecycle `rig record` drives. This module adds what keys need:
a state (READY, RECORDING, REVIEW ...), the take under review, and fault handling that keeps the
app up. Every step that can block (opening the rig, starting or stopping a take, resetting the
simulated world, relabelling on disk) runs on one worker thread, in the order the keys were
pressed, so a key press never waits and never touches the control loop. The UI calls
``snapshot()`` a few times a second; it reads plain attributes the loop and the devices keep up
to date. The gripper's record button is space.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers.cameras.base import CameraDisconnected
from drivers.errors import RigError
from recorder import Dataset
from rig.config import DEFAULT_DATASET, RigConfig, load_config
from rig.handheld import GripperView
from rig.recording import TakeResult
from rig.takes import Failure, Takes
from rig.trials import Outcome, PolicyTrials, is_trial, mark_trial, preload_torch, record_outcome

FREEZE_GRACE_S = 2.0  # a camera frozen this long (after its own watchdog fired) is a fault


class State(enum.StrEnum):
    STARTING = "STARTING"
    ENGAGING = "ENGAGING"
    READY = "READY"
    RECORDING = "RECORDING"
    SAVING = "SAVING"
    REVIEW = "REVIEW"  # the take is on disk; keep, discard, label or re-record it
    RESET = "RESET"
    FAULT = "FAULT"
    CLOSED = "CLOSED"


@dataclass
class CollectOptions:
    config: str | Path | None = None
    dataset: Path = DEFAULT_DATASET
    task: str | None = None
    # target length of a take; 0 = no limit (stop with space); None: the sim task's trial length, else 20 s
    seconds: float | None = None
    reset_seconds: float = 1.0
    operator: str = ""
    seed: int | None = None
    train: bool | None = None  # None: on when torch is installed
    cameras: bool = True
    ring_prefix: str | None = None  # sim camera rings; default one per process
    world_options: dict[str, Any] = field(default_factory=dict)
    policy: Path | None = None  # the policy `p` runs; None: quick-train's latest (rig/train/latest.py)


@dataclass
class ArmView:
    name: str
    role: str
    connected: bool
    torque_on: bool | None
    voltage_v: float | None
    temperature_c: int | None
    errors: str  # hardware errors or the last health-read error, "" when healthy
    misses: int


@dataclass
class CameraView:
    name: str
    rate_hz: float
    nominal_fps: float
    frames: int
    drops: int
    fault: str | None


@dataclass
class Snapshot:
    state: State
    message: str  # what to do now (or what failed and what to do)
    arms: list[ArmView]
    loop: dict[str, Any]
    cameras: list[CameraView]
    episode: int | None  # the take being recorded or reviewed
    elapsed_s: float
    target_s: float
    task: str
    kept: int  # episodes in the dataset not discarded
    last: TakeResult | None
    replaying: bool
    gripper: GripperView | None = None  # the handheld gripper, on a rig that has one


def _camera_fault_advice(cam: str, fault: str) -> str:
    return f"camera {cam}: {fault}. Press q to stop safely, fix the camera, then start rig again"


def _failure_advice(failure: Failure) -> str:
    err = failure.error
    if failure.kind == "crash":
        return (f"the control loop crashed ({type(err).__name__}: {err}); the followers were stopped. Press q to "
                "quit and restart rig")
    if failure.kind == "arms":
        return (f"{err}. The followers were stopped and their torque released. Press q to quit, check the arm's "
                "power and cable, then start rig again")
    return f"recording failed: {err}. Free disk space or pick another --dataset, then press q and start again"


def _arm_view(a) -> ArmView:
    h = a.health
    errs = "; ".join(f"servo {sid}: {', '.join(e)}" for sid, e in h.hardware_errors.items())
    return ArmView(a.name, a.cfg.role, a.connected, h.torque_on, h.min_voltage_v, h.max_temperature_c,
                   errs or (h.last_error or ""), a.misses)


class Collector:
    """Drives the take lifecycle from keys. Thread-safe: every public action returns at once."""

    def __init__(self, options: CollectOptions, config: RigConfig | None = None):
        self.options = options
        self.config = config or load_config(options.config)
        world_options = dict(options.world_options)
        if self.config.sim is not None and options.cameras:
            # Our own shared-memory ring names: another rig or `rig sim` may run on this machine.
            world_options.setdefault("ring_prefix", options.ring_prefix or f"rig{os.getpid()}-")
        self.takes = Takes(self.config, options.dataset, task=options.task, operator=options.operator,
                           seed=options.seed, world_options=world_options, cameras=options.cameras,
                           on_button=self._button)
        self.task = self.takes.task
        if options.seconds is None:  # as `rig record`
            options.seconds = self.takes.take_seconds
        self.trials = PolicyTrials(self.takes, options.policy)  # `p`: the latest policy on the followers
        self.state = State.STARTING
        self.message = "starting the rig ..."
        self.notices: list[str] = []  # start-up remarks (e.g. a crashed episode left on disk)
        self.episode: int | None = None
        self.last: TakeResult | None = None
        self.trial = False  # the take recorded or under review is a policy trial
        self.fault: str | None = None
        self.shutdown_report: dict[str, str] = {}
        self._reset_until = 0.0
        self._closed = False
        self._lock = threading.RLock()
        self._close_lock = threading.Lock()
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector")
        # Hooks for the UI (called from the worker thread): a take was saved; the state changed.
        self.on_saved: Callable[[TakeResult], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        # Timings for the benchmark: monotonic ns of the stop request and of the saved take.
        self.t_stop_ns = 0
        self.t_saved_ns = 0
        self.first_frame: tuple[int, str, np.ndarray] | None = None  # (episode, camera, image) of the last take
        self._frozen_since: dict[str, float] = {}
        self.history: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=50)  # state changes
        # The world and quick-train are spawned processes; multiprocessing starts its resource
        # tracker with our stderr's file descriptor, which a running Textual app has swapped for a
        # capture object (the spawn then fails). Start the tracker now, while stderr is real.
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()

    @property
    def dataset(self) -> Dataset | None:
        return self.takes.dataset

    @property
    def session(self):
        return self.takes.session

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> Future:
        """Start the world, the arms and the loop in the background (seconds in the sim)."""
        return self._submit(self._open)

    def _open(self) -> None:
        self.takes.open_dataset(out=self.notices.append)
        self._kept_count = self.takes.kept()  # once: then kept up to date by each take and discard

        def retry(text: str) -> None:
            self.message = text
        o = self.options
        if self.config.followers and (o.train is not False or o.policy is not None or self.trials.policy_file().exists()):
            preload_torch()  # for `p`: importing torch later would stall the running loop
        self.takes.open(on_retry=retry, cancelled=lambda: self._closed)
        if self._closed:
            return
        if self.takes.has_loop:
            self._set(State.ENGAGING, "followers are moving to the leaders' pose; hands off the followers")
        self._reset_world(self.takes.seed, pause_s=0.0)

    def close(self) -> dict[str, str]:
        """Safe shutdown: a take in progress is saved, followers are stopped and left torque off
        (or holding, per the config), the world exits. Idempotent; callable from any thread."""
        with self._close_lock:
            if self.state == State.CLOSED:
                return self.shutdown_report
            self._closed = True
            self._jobs.shutdown(wait=True)  # queued steps (a stop that `e` asked for) finish first
            opened = self.takes.session is not None
            trial = self.trials.index
            try:
                result = self.takes.close()
                if result is not None:
                    self.last = result
                if trial is not None:  # a trial cut short by the close: its takeover still counts
                    with contextlib.suppress(RigError):
                        mark_trial(self.takes, trial)
            finally:
                self.shutdown_report = dict(self.shutdown_report or self.takes.shutdown_report)
                self.state = State.CLOSED
                self.message = "closed: followers " + (", ".join(
                    f"{k} {v}" for k, v in self.shutdown_report.items()) or ("none" if opened else "not opened"))
        return self.shutdown_report

    # ---- actions (return at once; run in order on the worker) --------------------------------

    def toggle(self) -> Future | None:
        """Space (or the gripper's record button): start a take when ready (keeping one under
        review), or stop the one recording."""
        with self._lock:
            if self.state == State.RECORDING:
                self.t_stop_ns = time.monotonic_ns()
                self._set(State.SAVING, "saving the take ...")
                return self._submit(self._stop)
            if self.state in (State.READY, State.REVIEW):
                step = self._start_from_review if self.state == State.REVIEW else self._start
                self._set(State.RECORDING, "starting the take ...")
                return self._submit(step)
        return None

    def _button(self) -> None:
        """The gripper's record button, pressed (called on the recorder's pump thread)."""
        self.toggle()

    def keep(self) -> Future | None:
        """Enter: the take under review stays (complete); reset for the next one."""
        if self.state != State.REVIEW:
            return None
        self._set(State.RESET, "kept; resetting for the next take")
        return self._submit(self._reset_world, self.takes.seed + 1)

    def discard(self, index: int | None = None) -> Future | None:
        """Mark an episode discarded (the last take by default; files stay on disk)."""
        index = self._target(index)
        if index is None:
            return None
        review = self.state == State.REVIEW and self.last is not None and index == self.last.index
        if review:
            self._set(State.RESET, f"episode {index} discarded; resetting")
        return self._submit(self._discard, index, review)

    def rerecord(self) -> Future | None:
        """r: discard the take under review and record it again from the same start."""
        if self.state != State.REVIEW or self.last is None:
            return None
        self._set(State.RESET, f"episode {self.last.index} discarded; re-recording")
        return self._submit(self._rerecord, self.last.index)

    def label(self, success: bool | None, index: int | None = None) -> Future | None:
        index = self._target(index)
        if index is None:
            return None
        return self._submit(self._label, index, success)

    def skip(self, index: int | None = None) -> Future | None:
        """k: a trial that cannot count (the scene was set up wrong, someone stepped in): judged
        skip, left out of the policy's success figure."""
        index = self._target(index)
        if index is None:
            return None
        return self._submit(self._skip, index)

    def run_policy(self) -> Future | None:
        """p: the latest policy drives the followers, recorded as a trial (a take under review is
        kept first, as space does). Moving a leader takes over; space stops the trial."""
        with self._lock:
            if self.state not in (State.READY, State.REVIEW) or not self.takes.has_loop:
                return None
            review = self.state == State.REVIEW
            self._set(State.RECORDING, "loading the latest policy ...")
            return self._submit(self._start_trial, review)

    def replay_actions(self, index: int | None = None) -> Future | None:
        """Drive the followers through an episode's recorded actions (sim world or hardware)."""
        index = self._target(index)
        if index is None or self.state in (State.RECORDING, State.SAVING, State.FAULT):
            return None
        return self._submit(self._replay_actions, index)

    # ---- the live view ---------------------------------------------------------------------

    def poll(self) -> None:
        """Advance timed states and watch for faults; the UI calls this a few times a second."""
        t = self.takes
        if t.session is None or self.state in (State.CLOSED, State.STARTING):
            return
        if self.state == State.FAULT:
            self._maybe_clear_camera_fault()
            return
        failure = t.failure()
        text = _failure_advice(failure) if failure is not None else self._camera_failure()
        if text is not None:
            self._enter_fault(text, arms=failure is not None and failure.arms)
            return
        if self.state == State.ENGAGING and t.engaged and not self._busy():
            # (not busy: at start-up the world is still being reset after the followers engaged)
            self._set(State.READY, self._ready_message())
        elif self.state == State.RESET and not self._busy() and time.monotonic() >= self._reset_until:
            self._set(State.READY if t.engaged else State.ENGAGING, self._ready_message())
        elif (self.state == State.RECORDING and self.options.seconds > 0 and t.t_begin
              and t.elapsed_s >= self.options.seconds):
            self.toggle()  # the target length is reached: stop as if space was pressed
        elif self.state == State.RECORDING and self.trials.active and self.trials.failure() is not None:
            self.toggle()  # the policy failed (the followers hold): the trial ends, judged a failure

    def _camera_failure(self) -> str | None:
        now = time.monotonic()
        for name, cam in self.takes.session.cameras.items():
            fault = cam.fault
            if fault is None:
                self._frozen_since.pop(name, None)
                continue
            # A freeze is a fault once it lasts: a busy machine can stall a camera briefly.
            since = self._frozen_since.setdefault(name, now)
            if isinstance(fault, CameraDisconnected) or now - since >= FREEZE_GRACE_S:
                self._faulted_camera = name
                return _camera_fault_advice(name, str(fault))
        return None

    def snapshot(self, health: bool = True) -> Snapshot:
        """The state the app shows; ``health=False`` leaves out the arms, the loop's figures and
        the cameras (the banner's 4 Hz refresh needs none of them, and computing them costs)."""
        t = self.takes
        s = t.session
        arms: list[ArmView] = []
        loop: dict[str, Any] = {}
        cams: list[CameraView] = []
        gripper = t.gripper()  # a few plain values: the live jaw is shown at the 4 Hz refresh too
        if s is not None and health:
            arms = [_arm_view(a) for a in ((*s.leaders, *s.followers) or self._arms_shown)]
            loop = t.loop_stats()
            for name, cam in s.cameras.items():
                st = cam.stats()
                cams.append(CameraView(name, st.rate_hz, cam.fps, st.frames, st.drops + st.overflows, st.fault))
        if self.state == State.RECORDING and t.t_begin:
            elapsed = t.elapsed_s
        elif self.state == State.SAVING and t.t_begin:
            elapsed = self.t_stop_ns / 1e9 - t.t_begin
        elif self.state == State.REVIEW and self.last is not None:
            elapsed = self.last.duration_s
        else:
            elapsed = 0.0
        return Snapshot(self.state, self.message, arms, loop, cams, self.episode, elapsed, self.options.seconds,
                        self.task, self._kept_count, self.last, t.replaying, gripper)

    def latest_frame(self, camera: str) -> np.ndarray | None:
        s = self.takes.session
        cam = s.cameras.get(camera) if s is not None else None
        frame = cam.latest() if cam is not None else None
        if frame is None or frame.encoding not in ("rgb", "rgb8", "bgr", "bgr8", "gray", "mono8"):
            return None
        data = frame.data
        return data[..., ::-1] if frame.encoding.startswith("bgr") else data

    def latest_frames(self, cameras: list[str]) -> dict[str, np.ndarray | None]:
        return {name: self.latest_frame(name) for name in cameras}

    @property
    def kept(self) -> int:
        """Episodes in the dataset not discarded."""
        return self._kept_count

    @property
    def recording(self) -> bool:
        """A take is being written."""
        return self.takes.recording

    @property
    def teleop_running(self) -> bool:
        """The loop holds the followers (False after a safe stop, and on a rig without followers)."""
        return self.takes.has_loop

    @property
    def replay_tick(self) -> int:
        """Recorded actions replayed on the followers so far."""
        return self.takes.replay_tick

    def camera_names(self) -> list[str]:
        return [c.name for c in self.config.cameras] if self.options.cameras else []

    # ---- worker steps ----------------------------------------------------------------------

    _kept_count = 0
    _pending = 0
    _arms_shown: list = []  # the arms after a safe stop closed them (shown as closed)
    _faulted_camera: str | None = None

    def _submit(self, fn: Callable, *args) -> Future | None:
        if self._closed:
            return None
        with self._lock:
            self._pending += 1
        try:
            return self._jobs.submit(self._guard, fn, *args)
        except RuntimeError:  # closing: the worker takes no more steps
            with self._lock:
                self._pending -= 1
            return None

    def _guard(self, fn: Callable, *args) -> Any:
        try:
            return fn(*args)
        except RigError as exc:
            self._report(str(exc))
        except Exception as exc:  # a bug must not kill the worker: show it, keep the rig safe
            self._report(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            with self._lock:
                self._pending -= 1
        return None

    def _report(self, text: str) -> None:
        if self.state in (State.STARTING, State.SAVING, State.RECORDING):
            self._enter_fault(text, arms=self.state == State.STARTING)
        elif self.state != State.FAULT:  # the fault's own message (what to do) stays up
            self.message = text
        if self.on_error is not None:
            self.on_error(text)

    def _busy(self) -> bool:
        return self._pending > 0

    def _set(self, state: State, message: str) -> None:
        with self._lock:
            if self.state in (State.FAULT, State.CLOSED) and state not in (State.FAULT, State.CLOSED):
                return
            if state != self.state:
                self.history.append((round(time.monotonic(), 3), state.value, message))
            self.state, self.message = state, message

    def _ready_message(self) -> str:
        key = "space"
        g = self.config.gripper
        if g is not None and g.record_button is not None:
            key += " (or the gripper's " + ("trigger" if g.record_button == -1 else f"button {g.record_button}") + ")"
        return f"press {key} to record take {self.takes.next_index()} ({self.task})"

    def _reset_world(self, seed: int, pause_s: float | None = None) -> None:
        self.takes.reset(seed)
        pause = self.options.reset_seconds if pause_s is None else pause_s
        self._reset_until = time.monotonic() + pause
        if self.state == State.RESET:  # only a keep or discard asked for RESET; never over a take
            self._set(State.RESET, "reset the scene; ready in a moment" if self.takes.world is None else
                      f"world reset (seed {seed}); ready in a moment")
        elif self.state == State.STARTING:  # a rig without followers has nothing to engage
            self._set(State.READY, self._ready_message())

    def _start_from_review(self) -> None:
        self._reset_world(self.takes.seed + 1, pause_s=0.0)  # the take under review is kept
        self._set(State.RECORDING, "starting the take ...")
        self._start()

    def _start(self) -> None:
        self.trial = False
        self.episode = self.takes.begin()
        if self.state == State.RECORDING:  # not if space was pressed again meanwhile (SAVING)
            self._set(State.RECORDING, f"recording take {self.episode}; space to stop")

    def _start_trial(self, review: bool) -> None:
        try:
            policy = self.trials.load()
        except RigError as exc:  # no policy yet: say so and stay ready (no fault: the rig is fine)
            self._set(State.REVIEW if review else State.READY, str(exc))
            return
        if review:
            self._reset_world(self.takes.seed + 1, pause_s=0.0)  # the take under review is kept
        if self.state == State.SAVING:  # space was pressed while the policy loaded: no trial
            self._set(State.READY, "policy trial cancelled; " + self._ready_message())
        if self.state != State.RECORDING:
            return
        self._set(State.RECORDING, "policy trial: the followers go to the policy's start pose ...")
        try:
            self.trial = True
            self.episode = self.trials.begin(policy)
        except RigError as exc:  # the policy does not fit this rig (its cameras, its values)
            if self.takes.recording:
                raise
            self.takes.use(None)
            self._set(State.READY, str(exc))
            return
        if self.state == State.RECORDING:
            self._set(State.RECORDING, f"policy trial {self.episode}: the policy drives; move a leader to take "
                                       "over; space to stop")

    def _stop(self) -> None:
        if not self.takes.recording:
            return  # a fault already saved it
        trial = self.trials.active
        failed = self.trials.failure() if trial else None
        # A trial on the simulated rig is judged by the world (the collector may override with s / f);
        # one whose policy failed is a failure, with the reason.
        if failed is not None:
            result = self.trials.end(note=f"the policy failed: {failed}")[0]
            record_outcome(self.takes, result.index, Outcome("failure", f"the policy failed: {failed}", "rig"))
            result.success = False
        else:
            result = self.trials.end(judge=True)[0] if trial else self.takes.end()
        self.last = result
        self.t_saved_ns = time.monotonic_ns()
        self._kept_count += 1
        self.first_frame = self._read_first_frame(result.index)
        label = {True: "success", False: "failure", None: "unlabelled"}[result.success]
        if trial:
            marks = self.trials.marks
            how = (f"taken over at tick {marks.takeover_tick}: a corrective take" if marks.corrective
                   else "no takeover")
            judged = (f"the policy failed ({failed}): a failure" if failed is not None else
                      "judge it s success / f failure / k skip" if result.success is None else
                      f"the world judged it {label}: s / f overrides, k skip")
            self._set(State.REVIEW, f"policy trial {result.index} saved ({result.duration_s:.1f} s, {how}): {judged}; "
                                    "enter keep, backspace discard")
        else:
            self._set(State.REVIEW, f"take {result.index} saved ({result.duration_s:.1f} s, {label}): enter keep, "
                                    "backspace discard, r re-record, s/f label")
        if self.on_saved is not None:
            self.on_saved(result)

    def _read_first_frame(self, index: int) -> tuple[int, str, np.ndarray] | None:
        """The saved take's first frame, read back from disk here so the replay opens with it."""
        try:
            ep = self.dataset.episode(index)
            cams = [c for c in self.camera_names() if c in ep.cameras] or ep.cameras
            if cams and ep.num_frames(cams[0]):
                return index, cams[0], ep.read_frame(cams[0], 0)
        except Exception:  # the replay reads it again itself; this is only a head start
            return None
        return None

    def _discard(self, index: int, review: bool) -> None:
        self._kept_count -= self.takes.discard(index)
        if review:
            self._reset_world(self.takes.seed + 1)
        else:
            self.message = f"episode {index} discarded"

    def _rerecord(self, index: int) -> None:
        self._kept_count -= self.takes.discard(index)
        self._reset_world(self.takes.seed, pause_s=0.0)
        self._set(State.RECORDING, "re-recording ...")
        self._start()

    def _label(self, index: int, success: bool | None) -> None:
        if success is not None and self._is_trial(index):
            # a trial's label is its judgement: the collector's, over the world's where it had one
            record_outcome(self.takes, index, Outcome("success" if success else "failure", "", "operator"))
        else:
            self.takes.label(index, success)
        if self.last is not None and self.last.index == index:
            self.last.success = success
        word = {True: "success", False: "failure", None: "unlabelled"}[success]
        if self.state == State.REVIEW:
            self.message = (f"take {index} marked {word}: enter keep, backspace discard, r re-record")
        else:
            self.message = f"episode {index} marked {word}"

    def _is_trial(self, index: int) -> bool:
        ds = self.takes.dataset
        return ds is not None and is_trial(ds.episode(index).attrs)

    def _skip(self, index: int) -> None:
        if not self._is_trial(index):
            self.message = f"episode {index} is a take, not a trial: only trials are skipped (s / f label a take)"
            return
        record_outcome(self.takes, index, Outcome("skip", "", "operator"))
        if self.last is not None and self.last.index == index:
            self.last.success = None
        self.message = (f"trial {index} skipped (it does not count): enter keep, backspace discard"
                        if self.state == State.REVIEW else f"trial {index} skipped")

    def _replay_actions(self, index: int) -> None:
        seconds = self.takes.replay(index)
        if seconds is None:
            self.message = f"episode {index} has no followers to replay on: its replay is on screen (l)"
            return
        self.message = f"replaying episode {index}'s actions on the followers ({seconds:.1f} s)"

    def _target(self, index: int | None) -> int | None:
        if index is not None:
            return index
        return self.last.index if self.last is not None else None

    # ---- faults ----------------------------------------------------------------------------

    def _enter_fault(self, text: str, arms: bool) -> None:
        with self._lock:
            if self.state in (State.FAULT, State.CLOSED):
                return
            self.state, self.message, self.fault = State.FAULT, text, text
            self.history.append((round(time.monotonic(), 3), "FAULT", text))
        # Save what was recorded up to the fault, then (arm faults) stop the followers for good.
        threading.Thread(target=self._fault_cleanup, args=(text, arms), name="collector-fault", daemon=True).start()

    def _fault_cleanup(self, text: str, arms: bool) -> None:
        t = self.takes
        try:
            if arms and t.session is not None and not self._closed:
                s = t.session
                self._arms_shown = [*s.leaders, *s.followers]  # still listed on the live screen
                self.shutdown_report = dict(t.stop_arms())  # the followers first, then the take
        finally:
            if t.recording:
                with contextlib.suppress(RigError):
                    note = f"cut short by a fault: {text}"
                    self.last = (self.trials.end(status="recovered", note=note)[0] if self.trials.active
                                 else t.end(status="recovered", note=note))
                    self._kept_count += 1

    def _maybe_clear_camera_fault(self) -> None:
        """A frozen camera that streams again ends its fault (a disconnect is final)."""
        name = self._faulted_camera
        t = self.takes
        if name is None or t.session is None or not t.has_loop and self.config.followers or t.failure():
            return
        cam = t.session.cameras.get(name)
        if cam is not None and cam.fault is None and cam.running:
            with self._lock:
                self.history.append((round(time.monotonic(), 3), "READY", f"camera {name} streams again"))
                self.state, self.fault, self._faulted_camera = State.READY, None, None
                self.message = f"camera {name} is streaming again; " + self._ready_message()

"""The collector's brain, without any UI: the rig, its takes, and the state the app shows.

Every step that can block (opening the rig, starting or stopping a take, resetting the simulated
world, relabelling on disk) runs on one worker thread, in the order the keys were pressed, so a
key press never waits and never touches the control loop. The UI calls ``snapshot()`` a few times
a second; it reads plain attributes that the loop and the cameras keep up to date.
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
from drivers.dynamixel.errors import CorruptReply, NoStatusPacket
from drivers.errors import RigError
from recorder import Dataset
from recorder.recovery import check_incomplete
from rig.config import RigConfig, load_config
from rig.recording import JOINTS, TakeRecorder, TakeResult
from rig.session import RigSession

DEFAULT_DATASET = Path("data/rig.zarr")
OPEN_ATTEMPTS = 3  # setting up the arms is retried (a starved sim bus) before the app shows a FAULT
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
    seconds: float = 20.0  # target length of a take; 0 = no limit (stop with space)
    reset_seconds: float = 1.0
    operator: str = ""
    seed: int | None = None
    train: bool | None = None  # None: on when torch is installed
    cameras: bool = True
    ring_prefix: str | None = None  # sim camera rings; default one per process
    world_options: dict[str, Any] = field(default_factory=dict)


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


def _camera_fault_advice(cam: str, fault: str) -> str:
    return f"camera {cam}: {fault}. Press q to stop safely, fix the camera, then start rig again"


class Collector:
    """Owns the rig for the app. Thread-safe: every public action returns at once."""

    def __init__(self, options: CollectOptions, config: RigConfig | None = None):
        self.options = options
        self.config = config or load_config(options.config)
        sim = self.config.sim
        self.sim_task = sim.task if sim else None
        self.world_options = dict(options.world_options)
        if sim and options.task in ("transfer_cube", "insertion"):
            self.sim_task = self.world_options["task"] = options.task
        self.task = options.task or self.sim_task or self.config.name
        self.seed = options.seed if options.seed is not None else (sim.seed if sim else 0)
        if sim and options.cameras:
            # Our own shared-memory ring names: another rig or `rig sim` may run on this machine.
            self.world_options.setdefault("ring_prefix", options.ring_prefix or f"rig{os.getpid()}-")
        self.dataset: Dataset | None = None
        self.session: RigSession | None = None
        self.takes: TakeRecorder | None = None
        self.state = State.STARTING
        self.message = "starting the rig ..."
        self.notices: list[str] = []  # start-up remarks (e.g. a crashed episode left on disk)
        self.episode: int | None = None
        self.last: TakeResult | None = None
        self.fault: str | None = None
        self.shutdown_report: dict[str, str] = {}
        self._t_begin = 0.0
        self._reset_until = 0.0
        self._closed = False
        self._lock = threading.RLock()
        self._close_lock = threading.Lock()
        self._safety_lock = threading.Lock()
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

    # ---- lifecycle -------------------------------------------------------------------------

    def open(self) -> Future:
        """Start the world, the arms and the loop in the background (seconds in the sim)."""
        return self._submit(self._open)

    def _open(self) -> None:
        path = Path(self.options.dataset)
        check_incomplete(path, interactive=False, out=self.notices.append)
        self.dataset = Dataset(path) if (path / "zarr.json").exists() else Dataset.create(path)
        self._count_kept()  # once: then kept up to date by each take and discard
        session = None
        for attempt in range(OPEN_ATTEMPTS):
            session = RigSession(self.config, world_options=self.world_options, cameras=self.options.cameras)
            try:
                session.open()  # on failure it has already closed what it opened
                break
            except (NoStatusPacket, CorruptReply) as exc:
                # A busy machine can starve the simulated buses while they are set up: once more.
                if attempt + 1 == OPEN_ATTEMPTS or self._closed:
                    raise
                self.message = f"setting up the arms failed ({exc}); trying again ..."
        self.session = session
        self.takes = TakeRecorder(self.dataset, self.config, session.teleop.n, session.cameras)
        session.teleop.sink = self.takes.ticks
        session.start()
        if self._closed:
            return
        self._set(State.ENGAGING, "followers are moving to the leaders' pose; hands off the followers")
        self._reset_world(self.seed, pause_s=0.0)

    def close(self) -> dict[str, str]:
        """Safe shutdown: a take in progress is saved, followers are stopped and left torque off
        (or holding, per the config), the world exits. Idempotent; callable from any thread."""
        with self._close_lock:
            if self.state == State.CLOSED:
                return self.shutdown_report
            self._closed = True
            self._close()
        return self.shutdown_report

    def _close(self) -> None:
        self._jobs.shutdown(wait=True)  # queued steps (a stop that `e` asked for) finish first
        takes, session = self.takes, self.session
        recording = takes is not None and takes.recording
        success = self._sim_success() if recording else None  # while the world still runs
        try:
            # The followers first: nothing (a take's last flush included) competes with their stop.
            if session is not None:
                with self._safety_lock:
                    self._stop_followers(session)
            if recording:
                with contextlib.suppress(RigError):
                    self.last = takes.end(success=success, note="the session ended during this take")
        finally:
            try:
                if takes is not None:
                    takes.close()
            finally:
                if session is not None:
                    report = dict(self.shutdown_report)
                    with self._safety_lock:
                        session.close()  # arms, cameras, world; followers already safe
                    self.shutdown_report = report or dict(session.shutdown_report)
                self.state = State.CLOSED
                self.message = "closed: followers " + (", ".join(
                    f"{k} {v}" for k, v in self.shutdown_report.items()) or "not opened")

    # ---- actions (return at once; run in order on the worker) --------------------------------

    def toggle(self) -> Future | None:
        """Space: start a take when ready (keeping one under review), or stop the one recording."""
        if self.state == State.RECORDING:
            self.t_stop_ns = time.monotonic_ns()
            self._set(State.SAVING, "saving the take ...")
            return self._submit(self._stop)
        if self.state in (State.READY, State.REVIEW):
            step = self._start_from_review if self.state == State.REVIEW else self._start
            self._set(State.RECORDING, "starting the take ...")
            return self._submit(step)
        return None

    def keep(self) -> Future | None:
        """Enter: the take under review stays (complete); reset for the next one."""
        if self.state != State.REVIEW:
            return None
        self._set(State.RESET, "kept; resetting for the next take")
        return self._submit(self._reset_world, self.seed + 1)

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

    def replay_actions(self, index: int | None = None) -> Future | None:
        """Drive the followers through an episode's recorded actions (sim world or hardware)."""
        index = self._target(index)
        if index is None or self.state in (State.RECORDING, State.SAVING, State.FAULT):
            return None
        return self._submit(self._replay_actions, index)

    # ---- the live view ---------------------------------------------------------------------

    def poll(self) -> None:
        """Advance timed states and watch for faults; the UI calls this a few times a second."""
        s = self.session
        if s is None or self.state in (State.CLOSED, State.STARTING):
            return
        if self.state == State.FAULT:
            self._maybe_clear_camera_fault()
            return
        teleop = s.teleop
        failure = None
        if s.error is not None:
            failure = (f"the control loop crashed ({type(s.error).__name__}: {s.error}); the followers were "
                       "stopped. Press q to quit and restart rig")
        elif teleop is not None and teleop.fault is not None:
            failure = (f"{teleop.fault}. The followers were stopped and their torque released. Press q to "
                       "quit, check the arm's power and cable, then start rig again")
        elif self.takes is not None and self.takes.error is not None:
            failure = (f"recording failed: {self.takes.error}. Free disk space or pick another --dataset, "
                       "then press q and start again")
        else:
            now = time.monotonic()
            for name, cam in s.cameras.items():
                fault = cam.fault
                if fault is None:
                    self._frozen_since.pop(name, None)
                    continue
                # A freeze is a fault once it lasts: a busy machine can stall a camera briefly.
                since = self._frozen_since.setdefault(name, now)
                if isinstance(fault, CameraDisconnected) or now - since >= FREEZE_GRACE_S:
                    failure = _camera_fault_advice(name, str(fault))
                    self._faulted_camera = name
                    break
        if failure is not None:
            self._enter_fault(failure, bus=teleop is None or teleop.fault is not None or s.error is not None)
            return
        if self.state == State.ENGAGING and teleop is not None and teleop.engaged and not self._busy():
            # (not busy: at start-up the world is still being reset after the followers engaged)
            self._set(State.READY, self._ready_message())
        elif self.state == State.RESET and not self._busy() and time.monotonic() >= self._reset_until:
            self._set(State.READY if teleop is None or teleop.engaged else State.ENGAGING, self._ready_message())
        elif (self.state == State.RECORDING and self.options.seconds > 0 and self._t_begin
              and time.monotonic() - self._t_begin >= self.options.seconds):
            self.toggle()  # the target length is reached: stop as if space was pressed

    def snapshot(self, health: bool = True) -> Snapshot:
        """The state the app shows; ``health=False`` leaves out the arms, the loop's figures and
        the cameras (the banner's 4 Hz refresh needs none of them, and computing them costs)."""
        s = self.session
        arms: list[ArmView] = []
        loop: dict[str, Any] = {}
        cams: list[CameraView] = []
        replaying = False
        if s is not None and s.teleop is not None:
            replaying = s.teleop.replaying
        if s is not None and health:
            for a in (*s.leaders, *s.followers) or self._arms_shown:
                h = a.health
                errs = "; ".join(f"servo {sid}: {', '.join(e)}" for sid, e in h.hardware_errors.items())
                arms.append(ArmView(a.name, a.cfg.role, a.connected, h.torque_on, h.min_voltage_v,
                                    h.max_temperature_c, errs or (h.last_error or ""), a.misses))
            if s.teleop is not None:
                loop = s.teleop.stats.summary()
            for name, cam in s.cameras.items():
                st = cam.stats()
                cams.append(CameraView(name, st.rate_hz, cam.fps, st.frames, st.drops + st.overflows, st.fault))
        if self.state == State.RECORDING and self._t_begin:
            elapsed = time.monotonic() - self._t_begin
        elif self.state == State.SAVING and self._t_begin:
            elapsed = self.t_stop_ns / 1e9 - self._t_begin
        elif self.state == State.REVIEW and self.last is not None:
            elapsed = self.last.duration_s
        else:
            elapsed = 0.0
        kept = 0
        if self.dataset is not None:
            kept = self._kept_count
        return Snapshot(self.state, self.message, arms, loop, cams, self.episode, elapsed, self.options.seconds,
                        self.task, kept, self.last, replaying)

    def latest_frame(self, camera: str) -> np.ndarray | None:
        s = self.session
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
        return self.takes is not None and self.takes.recording

    @property
    def teleop_running(self) -> bool:
        """The loop holds the followers (False after a safe stop)."""
        return self.session is not None and self.session.teleop is not None

    @property
    def replay_tick(self) -> int:
        """Recorded actions replayed on the followers so far."""
        teleop = self.session.teleop if self.session is not None else None
        return teleop.replay_tick if teleop is not None else 0

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
        return self._jobs.submit(self._guard, fn, *args)

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
            self._enter_fault(text, bus=self.state == State.STARTING)
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
        return f"press space to record take {self._next_index()} ({self.task})"

    def _next_index(self) -> int:
        idx = self.dataset.indices() if self.dataset is not None else []
        return (max(idx) + 1) if idx else 0

    def _count_kept(self) -> None:
        with contextlib.suppress(Exception):
            self._kept_count = sum(1 for e in self.dataset.episodes() if e.status != "discarded")

    def _reset_world(self, seed: int, pause_s: float | None = None) -> None:
        self.seed = seed
        world = self.session.world if self.session is not None else None
        if world is not None:
            world.set_operator(False)
            world.reset(self.sim_task, seed)
        pause = self.options.reset_seconds if pause_s is None else pause_s
        self._reset_until = time.monotonic() + pause
        if self.state == State.RESET:  # only a keep or discard asked for RESET; never over a take
            self._set(State.RESET, "reset the scene; ready in a moment" if world is None else
                      f"world reset (seed {seed}); ready in a moment")

    def _start_from_review(self) -> None:
        self._reset_world(self.seed + 1, pause_s=0.0)  # the take under review is kept
        self._set(State.RECORDING, "starting the take ...")
        self._start()

    def _start(self) -> None:
        world = self.session.world
        extra = {"seed": self.seed} if world is not None else None
        self.episode = self.takes.begin(task=self.task, operator=self.options.operator, extra=extra)
        if world is not None:
            world.set_operator(True, True)  # the scripted operator performs the take
        self._t_begin = time.monotonic()
        if self.state == State.RECORDING:  # not if space was pressed again meanwhile (SAVING)
            self._set(State.RECORDING, f"recording take {self.episode}; space to stop")

    def _sim_success(self) -> bool | None:
        world = self.session.world if self.session is not None else None
        if world is None:
            return None
        try:
            return world.success()
        except RigError:
            return None

    def _stop(self) -> None:
        if not self.takes.recording:
            return  # a fault already saved it
        result = self.takes.end(success=self._sim_success())
        self._t_begin = 0.0
        self.last = result
        self.t_saved_ns = time.monotonic_ns()
        self._kept_count += 1
        self.first_frame = self._read_first_frame(result.index)
        label = {True: "success", False: "failure", None: "unlabelled"}[result.success]
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
        was = self.dataset.info(index).status
        self.dataset.discard(index)
        self._kept_count -= was != "discarded"
        if review:
            self._reset_world(self.seed + 1)
        else:
            self.message = f"episode {index} discarded"

    def _rerecord(self, index: int) -> None:
        self.dataset.discard(index)
        self._kept_count -= 1
        self._reset_world(self.seed, pause_s=0.0)
        self._set(State.RECORDING, "re-recording ...")
        self._start()

    def _label(self, index: int, success: bool | None) -> None:
        self.dataset.set_success(index, success)
        if self.last is not None and self.last.index == index:
            self.last.success = success
        word = {True: "success", False: "failure", None: "unlabelled"}[success]
        if self.state == State.REVIEW:
            self.message = (f"take {index} marked {word}: enter keep, backspace discard, r re-record")
        else:
            self.message = f"episode {index} marked {word}"

    def _replay_actions(self, index: int) -> None:
        actions = self.dataset.episode(index).read_stream(JOINTS)["action"]
        teleop = self.session.teleop if self.session is not None else None
        if teleop is None or len(actions) == 0:
            return
        world = self.session.world
        if world is not None:
            world.set_operator(False)  # the leaders stay still while the followers replay
        teleop.replay(actions)
        self.message = f"replaying episode {index}'s actions on the followers ({len(actions) / self.config.rate_hz:.1f} s)"

    def _target(self, index: int | None) -> int | None:
        if index is not None:
            return index
        return self.last.index if self.last is not None else None

    # ---- faults ----------------------------------------------------------------------------

    def _enter_fault(self, text: str, bus: bool) -> None:
        with self._lock:
            if self.state in (State.FAULT, State.CLOSED):
                return
            self.state, self.message, self.fault = State.FAULT, text, text
            self.history.append((round(time.monotonic(), 3), "FAULT", text))
        # Save what was recorded up to the fault, then (bus faults) stop the followers for good.
        threading.Thread(target=self._fault_cleanup, args=(text, bus), name="collector-fault", daemon=True).start()

    def _fault_cleanup(self, text: str, bus: bool) -> None:
        takes = self.takes
        try:
            if bus and self.session is not None and not self._closed:
                with self._safety_lock:  # the followers first, then the take
                    self._stop_followers(self.session)
        finally:
            self._t_begin = 0.0
            with self._lock:
                recording = takes is not None and takes.recording
            if recording:
                with contextlib.suppress(RigError):
                    self.last = takes.end(success=None, status="recovered", note=f"cut short by a fault: {text}")
                    self._kept_count += 1

    def _stop_followers(self, s: RigSession) -> None:
        """Followers freeze and let go (or hold) now, not only when the app quits."""
        if s.teleop is None:
            return
        self._arms_shown = [*s.leaders, *s.followers]  # still listed on the live screen
        self.shutdown_report = dict(s.stop_teleop())

    def _maybe_clear_camera_fault(self) -> None:
        """A frozen camera that streams again ends its fault (a disconnect is final)."""
        name = self._faulted_camera
        s = self.session
        if name is None or s is None or s.teleop is None or s.teleop.fault is not None:
            return
        cam = s.cameras.get(name)
        if cam is not None and cam.fault is None and cam.running:
            with self._lock:
                self.history.append((round(time.monotonic(), 3), "READY", f"camera {name} streams again"))
                self.state, self.fault, self._faulted_camera = State.READY, None, None
                self.message = f"camera {name} is streaming again; " + self._ready_message()

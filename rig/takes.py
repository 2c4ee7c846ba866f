"""The take lifecycle, once: `rig record` drives it headless, the collector's app with keys.

A session of takes opens the dataset (reporting episodes a crash cut off), opens the rig (the
simulated world and its task, the arms and their loop, the cameras, the handheld gripper) and
wires the loop's tick records, the camera frames and the gripper's samples into a
``TakeRecorder``. A take then goes:

    reset(seed)  ->  begin()  ->  end()  ->  keep (nothing to do), discard(i) or label(i, ok)

``reset`` puts the simulated world back (objects placed from the seed, the scripted operator
still); ``begin`` opens the episode on disk and lets the operator perform; ``end`` asks the world
whether the task succeeded and closes the episode complete. A take begins at ``begin`` and ends
at ``end``: the gripper's record button calls ``on_button`` (the drivers start or stop a take
there, as space does in the app). ``failure()`` says whether the loop, the arms or the recorder
stopped; ``close()`` saves a take in progress, then stops the followers and the rig.

The control loop is reached in one place, ``_loop()``: its stats, fault, replay and stop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.dynamixel.errors import CorruptReply, NoStatusPacket
from drivers.errors import RigError
from recorder import Dataset, RecorderError
from recorder.recovery import check_incomplete
from rig.config import RigConfig
from rig.fleet.compactor import compactor_for
from rig.handheld import GripperSource, GripperView, check_gripper_port, gripper_view
from rig.recording import JOINTS, TakeRecorder, TakeResult
from rig.session import RigSession

OPEN_ATTEMPTS = 3  # setting up the arms is retried (a starved simulated bus) before giving up


class TakeError(RigError):
    """A take could not be started, ended or changed; the message says why and what to do."""


def resolve_task(config: RigConfig, task: str | None) -> tuple[str | None, str]:
    """(the simulated world's task, the task text stored with each episode).

    On a simulated rig a ``task`` that names one of the world's own tasks also picks the scene;
    any other text is only stored. Without one, the config's sim task (or the rig's name) is used.
    """
    sim_task = config.sim.task if config.sim is not None else None
    if config.sim is not None and task is not None:
        from rig.sim.scene import TASKS  # the world's own list (no MuJoCo import)

        if task in TASKS:
            sim_task = task
    return sim_task, task or sim_task or config.name


def preflight(config: RigConfig) -> None:
    """What can be checked before anything starts: a hardware gripper must be plugged in."""
    if config.gripper is not None:
        check_gripper_port(config.gripper, config.source)


@dataclass
class Failure:
    """Why takes cannot go on: the loop crashed, the arms faulted (the loop stopped them), or the
    recorder failed (a full disk)."""

    kind: str  # "crash" | "arms" | "recorder"
    error: BaseException

    @property
    def arms(self) -> bool:
        """The followers must be stopped for good."""
        return self.kind != "recorder"


class Takes:
    """One rig's takes into one dataset. ``open()`` starts the rig; ``close()`` always stops it.

    Thread-safety: begin/end/close may come from different threads (a UI worker, a fault
    handler); the recorder serialises them, and followers are stopped under one lock.
    """

    def __init__(self, config: RigConfig, dataset: str | Path, *, task: str | None = None, operator: str = "",
                 seed: int | None = None, world_options: dict[str, Any] | None = None, cameras: bool = True,
                 on_button: Callable[[], None] | None = None):
        self.config = config
        self.path = Path(dataset)
        self.sim_task, self.task = resolve_task(config, task)
        self.operator = operator
        self.seed = seed if seed is not None else (config.sim.seed if config.sim is not None else 0)
        self.world_options = dict(world_options or {})
        if config.sim is not None and self.sim_task != config.sim.task:
            self.world_options["task"] = self.sim_task
        self.cameras = cameras
        self.on_button = on_button  # the gripper's record button was pressed (called on the pump thread)
        self.dataset: Dataset | None = None
        self.session: RigSession | None = None
        self.recorder: TakeRecorder | None = None
        self.gripper_source: GripperSource | None = None
        self.shutdown_report: dict[str, str] = {}
        self.t_begin = 0.0  # monotonic seconds when the current take began (0: none)
        self.pose = None  # handheld: rig.pose.background.PoseJobs, the pose of each kept take (see _pose)
        self.pose_done: dict[int, str] = {}  # after close(): episode -> its pose's coverage line (or failure)
        self._safety = threading.Lock()
        # [recording] compact: kept takes become video in a niced process, stopped during takes
        self.compactor = compactor_for(config, self.path)

    # ---- opening and closing ---------------------------------------------------------------

    def open_dataset(self, interactive: bool = False, out: Callable[[str], None] = print) -> Dataset:
        """Open (or create) the dataset; episodes a crash cut off are reported (or, interactive,
        recovered or discarded as the person answers). Nothing recorded is touched otherwise."""
        check_incomplete(self.path, interactive=interactive, out=out)
        self.dataset = Dataset(self.path) if (self.path / "zarr.json").exists() else Dataset.create(self.path)
        return self.dataset

    def open(self, *, attempts: int = OPEN_ATTEMPTS, on_retry: Callable[[str], None] | None = None,
             cancelled: Callable[[], bool] = lambda: False) -> RigSession:
        """Start the rig and the recorder; the loop (if the rig has followers) runs from here on."""
        preflight(self.config)
        if self.dataset is None:
            self.open_dataset()
        session = None
        for attempt in range(attempts):
            session = RigSession(self.config, world_options=self.world_options, cameras=self.cameras)
            try:
                session.open()  # on failure it has already closed what it opened
                break
            except (NoStatusPacket, CorruptReply) as exc:
                # A busy machine can starve the simulated buses while they are set up: once more.
                if attempt + 1 == attempts or cancelled():
                    raise
                if on_retry is not None:
                    on_retry(f"setting up the arms failed ({exc}); trying again ...")
        assert session is not None
        self.session = session
        try:
            sources = []
            if session.gripper is not None:
                self.gripper_source = GripperSource(session.gripper, self.config.gripper, on_toggle=self._button)
                sources.append(self.gripper_source)
            if session.home is not None:  # the simulated home: its true pose, recorded beside the estimate
                sources.append(session.home.truth_source())
            loop = self._loop()
            self.recorder = TakeRecorder(self.dataset, self.config, loop.n if loop is not None else 0,
                                         session.cameras, sources=sources, sim_task=self.sim_task)
            if loop is not None:
                loop.sink = self.recorder.ticks
                session.start()
        except BaseException:
            self.close()
            raise
        return session

    def close(self, status: str = "complete", note: str = "the session ended during this take") -> TakeResult | None:
        """Save a take in progress (judged while the world still runs), stop the followers first,
        then the recorder, the cameras, the gripper and the world. Idempotent."""
        recorder, session = self.recorder, self.session
        recording = recorder is not None and recorder.recording
        success = self.success() if recording and status == "complete" else None
        result = None
        try:
            if session is not None:
                self.stop_arms()  # nothing (a take's last flush included) competes with their stop
            if recording:
                with contextlib.suppress(RigError):
                    result = recorder.end(success=success, status=status, note=note)
        finally:
            try:
                if recorder is not None:
                    recorder.close()
            finally:
                if session is not None:
                    with self._safety:
                        session.close()  # arms, cameras, gripper, world; followers already safe
                    self.shutdown_report = self.shutdown_report or dict(session.shutdown_report)
                self.recorder = self.session = None
                if self.compactor is not None:
                    self.compactor.stop()  # what is left: `rig fleet compact`, or compactor.finish()
                self._pose(result, final=True)
        return result

    def __enter__(self) -> Takes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the rig ----------------------------------------------------------------------------

    @property
    def take_seconds(self) -> float:
        """How long a take lasts unless told: a simulated task's trial length, else 20 s."""
        from rig.sim.tasks import get_task

        return get_task(self.sim_task).trial_s if self.sim_task else 20.0

    @property
    def world(self):
        return self.session.world if self.session is not None else None

    @property
    def warnings(self) -> list[str]:
        return list(self.session.warnings) if self.session is not None else []

    def _loop(self):
        """The control loop (None on a rig without followers, e.g. the handheld gripper alone, or
        after the followers were stopped). Everything here that touches the loop goes through this."""
        return self.session.teleop if self.session is not None else None

    @property
    def has_loop(self) -> bool:
        return self._loop() is not None

    def loop_stats(self) -> dict[str, Any]:
        loop = self._loop()
        return loop.stats.summary() if loop is not None else {}

    @property
    def engaged(self) -> bool:
        """The followers have blended onto the leaders (always, on a rig without followers)."""
        loop = self._loop()
        return loop is None or loop.engaged

    @property
    def replaying(self) -> bool:
        loop = self._loop()
        return loop is not None and loop.replaying

    @property
    def replay_tick(self) -> int:
        loop = self._loop()
        return loop.replay_tick if loop is not None else 0

    def failure(self) -> Failure | None:
        s = self.session
        if s is None:
            return None
        loop = self._loop()
        if s.error is not None:
            return Failure("crash", s.error)
        if loop is not None and loop.fault is not None:
            return Failure("arms", loop.fault)
        if self.recorder is not None and self.recorder.error is not None:
            return Failure("recorder", self.recorder.error)
        return None

    def wait(self, seconds: float, until: threading.Event | None = None) -> None:
        """Wait, but stop at once if the loop or the arms failed, or the recorder did (a full disk):
        what a headless command does between and during takes."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until is not None and until.is_set()):
            failure = self.failure()
            if failure is not None:
                if failure.kind == "recorder":
                    raise RecorderError(f"recording stopped: {failure.error}")
                raise failure.error
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def stop_arms(self) -> dict[str, str]:
        """Followers freeze and let go (or hold, per the config) now; idempotent."""
        s = self.session
        with self._safety:
            if s is not None and self._loop() is not None:
                self.shutdown_report = dict(s.stop_teleop())
        return self.shutdown_report

    def gripper(self) -> GripperView | None:
        s = self.session
        if s is None or s.gripper is None or self.config.gripper is None:
            return None
        return gripper_view(s.gripper, self.config.gripper, self.gripper_source)

    def _button(self) -> None:
        if self.on_button is not None:
            self.on_button()

    # ---- a take -------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self.recorder is not None and self.recorder.recording

    def reset(self, seed: int | None = None) -> None:
        """The next take's start: the simulated world's objects placed from ``seed``, its
        operator still. On hardware a person resets the scene; nothing to do here."""
        if seed is not None:
            self.seed = seed
        world = self.world
        if world is not None:
            world.set_operator(False)
            world.reset(self.sim_task, self.seed)

    def begin(self, extra: dict[str, Any] | None = None, perform: bool = True) -> int:
        """A take begins: its episode is opened and from now on ticks, frames and gripper samples
        go into it. On the simulated rig the scripted operator starts performing (unless
        ``perform`` is False: a policy trial, where the leaders stay still). ``extra``: more
        metadata for the episode (a policy trial's, rig/trials.py)."""
        if self.recorder is None:
            raise TakeError("the rig is not open: no take can start")
        world = self.world
        if self.compactor is not None:
            self.compactor.pause()  # stopped before the episode opens: nothing encodes during a take
        if self.pose is not None:
            self.pose.pause()  # nothing is computed while a take records
        meta = {"seed": self.seed} if world is not None else {}
        if self.session is not None and self.session.home is not None:
            meta.update(self.session.home.episode_extra())
        try:
            index = self.recorder.begin(task=self.task, operator=self.operator,
                                        extra={**meta, **(extra or {})} or None)
        except BaseException:
            if self.compactor is not None:
                self.compactor.resume()
            if self.pose is not None:
                self.pose.resume()
            raise
        if world is not None and perform:
            world.set_operator(True, True)
        self.t_begin = time.monotonic()
        return index

    def success(self) -> bool | None:
        """The simulated world's judgement of the task (None on hardware, or if it cannot say)."""
        world = self.world
        if world is None:
            return None
        try:
            return world.success()
        except RigError:
            return None

    def end(self, status: str = "complete", note: str | None = None, judge: bool = True) -> TakeResult:
        """A take ends: the episode is flushed and closed; a complete one is judged by the world
        (unless ``judge`` is False: the collector labels it, as on hardware)."""
        if self.recorder is None or not self.recorder.recording:
            raise TakeError("no take is being recorded")
        success = self.success() if status == "complete" and judge else None
        result = None
        try:
            result = self.recorder.end(success=success, status=status, note=note)
            return result
        finally:
            self.t_begin = 0.0
            if self.compactor is not None:
                self.compactor.resume()
                if status == "complete":
                    self.compactor.start()  # a kept take: compact it (a running watcher finds it)
            self._pose(result)

    def _pose(self, result: TakeResult | None, final: bool = False) -> None:
        """A handheld take kept complete gets its pose computed after it, in the background (a
        niced process, paused while a take records); ``final``: the session ended, finish them."""
        if result is not None and result.status == "complete" and self.config.gripper is not None:
            from rig.pose.background import PoseJobs

            self.pose = self.pose or PoseJobs()
            self.pose.submit(self.path, result.index)
        if self.pose is not None:
            self.pose.resume()
            if final:
                self.pose.close(wait=True)
                self.pose_done, self.pose = dict(self.pose.done), None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t_begin if self.t_begin else 0.0

    # ---- the dataset ----------------------------------------------------------------------------

    def _ds(self) -> Dataset:
        if self.dataset is None:
            raise TakeError("the dataset is not open")
        return self.dataset

    def discard(self, index: int) -> bool:
        """Mark an episode discarded (its files stay); True if it had counted as kept."""
        ds = self._ds()
        was = ds.info(index).status
        ds.discard(index)
        if self.pose is not None:
            self.pose.cancel(index)
        return was != "discarded"

    def label(self, index: int, success: bool | None) -> None:
        self._ds().set_success(index, success)

    def kept(self) -> int:
        """Episodes in the dataset not discarded."""
        return sum(1 for e in self._ds().episodes() if e.status != "discarded")

    def next_index(self) -> int:
        idx = self.dataset.indices() if self.dataset is not None else []
        return (max(idx) + 1) if idx else 0

    def use(self, source, engage_s: float | None = None) -> bool:
        """Switch the loop's command source (``ControlLoop.use``; None: back to the leaders,
        ``reengage``); False on a rig without followers."""
        loop = self._loop()
        if loop is None:
            return False
        if source is None:
            loop.reengage()
        else:
            loop.use(source, engage_s)
        return True

    def replay(self, index: int) -> float | None:
        """Drive the followers through an episode's recorded actions; its length in seconds, or
        None on a rig without followers (a handheld take replays on screen only)."""
        loop = self._loop()
        ep = self._ds().episode(index)
        if loop is None or JOINTS not in ep.streams:
            return None
        actions = ep.read_stream(JOINTS)["action"]
        if len(actions) == 0:
            return None
        if self.world is not None:
            self.world.set_operator(False)  # the leaders stay still while the followers replay
        loop.replay(actions)
        return len(actions) / self.config.rate_hz


__all__ = ["Failure", "OPEN_ATTEMPTS", "TakeError", "Takes", "preflight", "resolve_task"]

"""Takes: the bridge from the running rig (tick records, camera frames) to recorder episodes.

The teleop loop puts a TickRecord in a bounded queue every tick whether or not a take is on; a
pump thread moves records and frames into the current episode writer, so neither the loop nor a
camera ever waits on the recorder, and the recorder never waits on the disk in their threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from calibration.apply import camera_latencies_ns, episode_intrinsics
from calibration.arm import CalibrationError
from drivers.cameras.base import Camera, FrameQueue
from recorder import Dataset, EpisodeWriter, RecorderError, WriterOptions
from rig.arms import arm_calibration
from rig.config import RigConfig
from rig.fleet.identity import load_identity
from rig.ticks import TickQueue, TickRecord, tick_fields

JOINTS = "joints"


def joint_fields(n: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return tick_fields(n)  # derived from TickRecord, the one definition of a tick's fields


def calibration_snapshot(config: RigConfig) -> dict[str, Any]:
    """Each arm's calibration as it was applied: inline in the config or from its stored file."""
    out = {}
    for arm in config.arms:
        try:
            cal = arm.calibration if arm.is_handheld else arm_calibration(arm)
        except CalibrationError:
            cal = None
        out[arm.name] = None if cal is None else {
            "source": cal.source,
            "joints": [asdict(j) for j in cal.joints],
            "gripper": None if cal.gripper is None else asdict(cal.gripper),
        }
    return out


class StreamSource(Protocol):
    """A device stream recorded beside the ticks at its own rate (e.g. a handheld gripper).

    ``poll()`` returns the rows that arrived since the last call, as (host monotonic ns, fields);
    the take pump calls it every cycle from its own thread and is its only consumer. It must not
    call begin()/end() itself (signal another thread instead).
    """

    name: str
    fields: Mapping[str, tuple[tuple[int, ...], str]]
    rate_hz: float

    def poll(self) -> list[tuple[int, dict[str, Any]]]: ...


def _sim_intrinsics(config: RigConfig, cameras: Mapping[str, Camera], skip, task: str | None) -> dict[str, Any]:
    """The simulated cameras' exact pinholes, for those calibration has not stored."""
    from rig.sim.scene import camera_intrinsics

    return {c.name: camera_intrinsics(task or config.sim.task, c.name, cameras[c.name].width, cameras[c.name].height).to_dict()
            for c in config.cameras if c.kind == "sim" and c.name in cameras and c.name not in skip}


@dataclass
class TakeResult:
    index: int
    status: str
    success: bool | None
    duration_s: float
    stats: dict[str, Any]
    stop_to_readable_s: float


class TakeRecorder:
    """Records takes from one rig into one dataset. Thread-safe begin/end from a UI or CLI."""

    def __init__(self, dataset: Dataset, config: RigConfig, n_values: int, cameras: Mapping[str, Camera] = (),
                 *, options: WriterOptions | None = None, intrinsics: Mapping[str, Any] | None = None,
                 sources: Sequence[StreamSource] = (), sim_task: str | None = None):
        self.dataset = dataset
        self.config = config
        self.n_values = n_values
        self.cameras = dict(cameras)
        self.options = options or WriterOptions()
        # What calibration measured goes into every episode: intrinsics, and the camera latencies
        # that alignment subtracts by default.
        self.intrinsics = dict(intrinsics if intrinsics is not None else episode_intrinsics(config, cameras))
        if config.sim is not None and intrinsics is None:
            self.intrinsics.update(_sim_intrinsics(config, cameras, skip=self.intrinsics, task=sim_task))
        for name, cam in self.cameras.items():  # a camera that knows its exact pinhole (the simulated home's)
            if name not in self.intrinsics and getattr(cam, "intrinsics", None) is not None:
                self.intrinsics[name] = cam.intrinsics.to_dict()
        self.latencies_ns = camera_latencies_ns(config)
        self.sources = list(sources)
        # Who records on what, set once per rig (`rig upload --set-identity`): in every episode.
        self.identity = load_identity()
        self._final: EpisodeWriter | None = None  # a take being ended: the pump flushes it one last time
        self._flushed = threading.Event()
        self.ticks = TickQueue(maxsize=max(64, int(config.rate_hz * 4)))  # give this to the teleop loop
        self._frames: dict[str, FrameQueue] = {}
        self._writer: EpisodeWriter | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: RecorderError | None = None
        self._pump = threading.Thread(target=self._run, name="take-pump", daemon=True)
        self._pump.start()

    # ---- takes ---------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self._writer is not None

    @property
    def writer(self) -> EpisodeWriter | None:
        return self._writer

    def begin(self, task: str = "", operator: str = "", extra: Mapping[str, Any] | None = None) -> int:
        if self._writer is not None:
            raise RecorderError("a take is already being recorded; stop it before starting another")
        self.error = None
        w = self.dataset.new_episode(
            task=task, operator=operator, config=self.config.raw, calibration=calibration_snapshot(self.config),
            intrinsics=self.intrinsics,
            contractor=self.identity.contractor if self.identity else None,
            device=self.identity.device if self.identity else None,
            extra={"rig": self.config.name, "camera_latency_ns": self.latencies_ns, **(extra or {})},
            options=self.options)
        if self.n_values:
            w.add_stream(JOINTS, joint_fields(self.n_values), rate_hz=self.config.rate_hz)
        for src in self.sources:
            w.add_stream(src.name, src.fields, rate_hz=src.rate_hz)
        for name, cam in self.cameras.items():
            w.add_camera(name, fps=cam.fps)
        self.ticks.drain()  # only ticks from now on belong to this take
        self._frames = {name: cam.subscribe(maxsize=max(8, int(cam.fps * 2))) for name, cam in self.cameras.items()}
        w.start()
        with self._lock:
            self._writer = w
        return w.index

    def end(self, success: bool | None = None, status: str = "complete", note: str | None = None) -> TakeResult:
        with self._lock:  # the pump is between batches: nothing is half-appended
            w, self._writer = self._writer, None
            if w is None:
                raise RecorderError("no take is being recorded")
            self._flushed.clear()
            self._final = w
        # The pump takes what arrived up to now (ticks, frames, source rows) into the take.
        if not self._flushed.wait(timeout=1.0):
            with self._lock:
                self._final = None
                self._pump_once(w)
        for name, q in self._frames.items():
            self.cameras[name].unsubscribe(q)
        self._frames = {}
        t_stop = time.monotonic()
        stats = w.stop(success=success, status=status, note=note)
        return TakeResult(w.index, status, success, (w.stop_ns - w.start_ns) / 1e9, stats, time.monotonic() - t_stop)

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(RecorderError):
                self.end(status="recovered", note="the session closed while recording")
        self._stop.set()
        self._pump.join(timeout=2)

    # ---- the pump ------------------------------------------------------------------------------

    def _pump_once(self, w: EpisodeWriter) -> None:
        while (rec := self.ticks.get(timeout=0)) is not None:
            self._append(w, rec)
        for q in list(self._frames.values()):
            for frame in q.drain():
                w.add_frame(frame)

    def _append(self, w: EpisodeWriter, r: TickRecord) -> None:
        w.append(JOINTS, r.t_start_ns, **r.row())

    def _run(self) -> None:
        while not self._stop.is_set():
            rec = self.ticks.get(timeout=0.02)
            # Sources are polled every cycle, take or not: a source may toggle takes (a button).
            polled = [(src, src.poll()) for src in self.sources]
            with self._lock:
                w = self._writer or self._final
                if w is None:
                    continue  # between takes the loop's records are not kept
                try:
                    if rec is not None:
                        self._append(w, rec)
                    self._pump_once(w)
                    for src, rows in polled:
                        for t_ns, values in rows:
                            w.append(src.name, t_ns, **values)
                    if w.error is not None:
                        self.error = w.error
                except RecorderError as exc:
                    self.error = exc
                if w is self._final:
                    self._final = None
                    self._flushed.set()

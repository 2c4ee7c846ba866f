"""A running rig: its simulated world (if any), its arms and the control loop, opened and closed
as one unit so followers are always left safe."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping

from calibration.apply import verify_connected
from drivers.cameras.base import Camera
from drivers.cameras.factory import open_camera
from drivers.errors import RigError
from rig.arms import Follower, HandheldLeader, Leader
from rig.config import RigConfig
from rig.handheld import open_gripper
from rig.loop import ControlLoop, TeleopFault
from rig.ticks import TickSink

SWITCH_INTERVAL_S = 0.0005


class SessionError(RigError):
    pass


def resolve_ports(config: RigConfig, sim_ports: Mapping[str, str] | None) -> dict[str, str]:
    """Each arm's device path; `sim:<arm>` ports come from the simulated world."""
    ports = {}
    for arm in config.arms:
        if arm.is_sim:
            key = arm.port[4:]
            if sim_ports is None or key not in sim_ports:
                raise SessionError(f"{config.source}: arm {arm.name!r} uses port {arm.port!r} but the simulated "
                                   f"world has no such arm (it has: {', '.join(sim_ports or []) or 'none'})")
            ports[arm.name] = sim_ports[key]
        else:
            ports[arm.name] = arm.port
    return ports


class RigSession:
    """Opens the world (for sim configs), the arms and the control loop; closes them safely.

    ``ports`` overrides where arms are found (tests, or a world started elsewhere). The loop is
    ``teleop`` (its source: the leaders, until switched); a rig without followers (a handheld
    gripper alone) has none.
    """

    def __init__(self, config: RigConfig, *, ports: Mapping[str, str] | None = None, sink: TickSink | None = None,
                 start_world: bool = True, world_options: dict | None = None, cameras: bool = True):
        self.config = config
        self.sink = sink
        self.world = None
        self.with_cameras = cameras
        self.cameras: dict[str, Camera] = {}
        self.warnings: list[str] = []  # things a person should know that did not stop the rig
        self.gripper = None  # drivers.gripper.HandheldGripper, when the config has a [gripper]
        self.standin = None  # the firmware's host build, for port = "standin"
        self.home = None  # rig.sim.home_rig.HomeRig: the simulated home moving the handheld gripper ([home])
        self._ports_override = ports
        self._start_world = start_world
        self._world_options = world_options or {}
        self.leaders: list[Leader] = []
        self.followers: list[Follower] = []
        self.teleop: ControlLoop | None = None
        self.shutdown_report: dict[str, str] = {}
        self._loop_error: BaseException | None = None  # a crash of a loop already stopped

    # ---- lifecycle -----------------------------------------------------------------------------

    def open(self) -> RigSession:
        # Bus threads must get the interpreter back within a fraction of a tick, not the default
        # 5 ms, when a writer or UI thread is busy.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            ports = self._ports_override
            if ports is None:
                sim_ports = None
                if self.config.sim is not None and self._start_world:
                    self.world = self._start_sim()
                    sim_ports = self.world.ports
                ports = resolve_ports(self.config, sim_ports)
            if self.config.home is not None:
                self.home = self._start_home()
            if self.with_cameras:
                self._open_cameras()
            if self.config.gripper is not None:
                self.gripper, self.standin = open_gripper(self.config.gripper,
                                                          self.home.standin_args if self.home else ())
                if self.home is not None:
                    self.home.play(self.standin)  # the hand starts: IMU, jaw, camera and truth from now
            for arm in self.config.arms:
                if arm.is_handheld:
                    self.leaders.append(HandheldLeader(arm, self.gripper))
                    continue
                cls = Leader if arm.role == "leader" else Follower
                opened = cls(arm, ports[arm.name]).open()
                (self.leaders if arm.role == "leader" else self.followers).append(opened)
                # A stored calibration must belong to the arm actually on this bus.
                verify_connected(arm, opened.calibration, opened.bus)
            if self.followers:  # a handheld-only rig records without a control loop
                self.teleop = ControlLoop(self.config, self.leaders, self.followers, self.sink)
                self.teleop.prepare()
                for a in (*self.leaders, *self.followers):  # e.g. a servo rebooted out of hardware error
                    self.warnings += getattr(a, "notes", [])
        except BaseException:
            self.close()
            raise
        return self

    def stop_teleop(self) -> dict[str, str]:
        """Stop the loop and leave the followers safe now, as configured (torque off, or hold),
        then release the buses. Idempotent; close() calls it."""
        if self.teleop is not None:
            self.teleop.stop()
            self.teleop.join(timeout=2)
            self._loop_error = self.teleop.error
            self.shutdown_report = self.teleop.shutdown()
            self.teleop = None
        else:  # opened arms, but the loop never started (a failure while opening)
            hold = self.config.safety.on_exit == "hold"
            for f in self.followers:
                self.shutdown_report[f.name] = f.make_safe(hold)
        for a in (*self.leaders, *self.followers):
            a.close()
        self.leaders, self.followers = [], []
        return self.shutdown_report

    def close(self) -> None:
        self.stop_teleop()
        for cam in self.cameras.values():
            with contextlib.suppress(Exception):
                cam.stop()
        self.cameras = {}
        for closer in (self.gripper, self.standin):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.stop() if closer is self.standin else closer.close()
        self.gripper = self.standin = None
        if self.home is not None:
            self.home.close()
            self.home = None
        if self.world is not None:
            with contextlib.suppress(Exception):
                self.world.close()
            self.world = None

    def _start_sim(self):
        try:
            return start_sim_world(self.config, cameras=self.with_cameras, **self._world_options)
        except RigError as exc:
            if not (self.with_cameras and is_render_failure(exc)):
                raise
        # No OpenGL on this machine: the rig still runs and records joints, without cameras.
        self.warnings.append(
            "the simulated cameras are off: this machine has no OpenGL library for MuJoCo to render with. "
            "Install it with `sudo apt-get install libegl1 libgl1-mesa-dri` and restart")
        self.with_cameras = False
        return start_sim_world(self.config, cameras=False, **self._world_options)

    def _start_home(self):
        from rig.sim.home_rig import HomeRig

        cam = next(c for c in self.config.cameras if c.name == self.config.home.camera)
        o = cam.options
        return HomeRig(self.config.home, int(o.get("width", 640)), int(o.get("height", 480)),
                       float(o.get("fps", 15.0)))

    def _open_cameras(self) -> None:
        for c in self.config.cameras:
            spec = c.spec()
            if self.home is not None and c.name == self.config.home.camera:  # the home renders it
                cam = self.home.camera(c.name, self.home.take.width, self.home.take.height,
                                       float(c.options.get("fps", 15.0)))
                cam.start()
                self.cameras[c.name] = cam
                continue
            if c.kind == "sim":
                spec.pop("delay_s", None)  # the world already delays this camera's frames
                shared = (self.world.cameras if self.world is not None else {}).get(c.name)
                if shared is None:
                    raise SessionError(f"{self.config.source}: camera {c.name!r} is a sim camera but no simulated "
                                       "world renders it; start the rig with its [sim] table")
                spec.update(shared)
            cam = open_camera(spec)
            cam.start()
            self.cameras[c.name] = cam

    def __enter__(self) -> RigSession:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- running ---------------------------------------------------------------------------------

    @property
    def error(self) -> BaseException | None:
        """A crash of the control loop's thread (a bug), if any."""
        return self.teleop.error if self.teleop is not None else self._loop_error

    def start(self, duration_s: float | None = None) -> None:
        """Run the control loop on its own thread (the caller stays free for signals and UI)."""
        self.teleop.start(duration_s)

    def wait(self, poll: Callable[[], None] | None = None, every_s: float = 1.0) -> dict:
        """Wait for the loop to end; ``poll`` runs between waits (e.g. a status line)."""
        while not self.teleop.join(timeout=every_s):
            if poll is not None:
                poll()
        if poll is not None:
            poll()
        if self.teleop.error is not None:
            raise self.teleop.error
        if self.teleop.fault is not None:
            raise self.teleop.fault
        return self.teleop.result

    def run(self, duration_s: float | None = None, poll: Callable[[], None] | None = None) -> dict:
        self.start(duration_s)
        try:
            return self.wait(poll)
        except KeyboardInterrupt:
            self.teleop.stop()
            self.teleop.join(timeout=2)
            return self.teleop.stats.summary()


def start_sim_world(config: RigConfig, cameras: bool = True, **options):
    """Start the MuJoCo world for a sim config; imported lazily (mujoco is an optional extra)."""
    from rig.sim.launch import start_world
    from rig.sim.world import CameraSpec

    sim = config.sim
    specs = []
    for c in config.cameras if cameras else ():
        if c.kind == "sim":
            o = c.options
            specs.append(CameraSpec(c.name, int(o.get("width", 320)), int(o.get("height", 240)),
                                    float(o.get("fps", 15.0)), delay_s=float(o.get("delay_s", 0.0))))
    opts = dict(task=sim.task, seed=sim.seed, wire_timing=sim.wire_timing, operator=sim.operator, cameras=specs,
                ring_prefix=f"rig{os.getpid()}-", sched=config.loop.realtime)  # two rigs on one machine never share frame rings
    opts.update(options)
    return start_world(**opts)


def is_render_failure(exc: Exception) -> bool:
    text = str(exc)
    return any(k in text for k in ("OpenGL", "EGL", "gladLoadGL", "OSMesa", "rendering needs", "glGetError",
                                   "camera process"))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


__all__ = ["RigSession", "SessionError", "TeleopFault", "resolve_ports", "start_sim_world"]

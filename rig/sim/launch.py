"""Start the simulated world in its own process and talk to it.

    handle = start_world(task="transfer_cube", seed=0)
    handle.ports      # {"left_leader": "/dev/pts/7", ...}: open them like any U2D2 port
    handle.cameras    # {"top": {"ring": "rig-sim-top", "width": 320, "height": 240, "fps": 15.0}, ...}
    handle.success()
    handle.close()

The world exits on its own when this process dies (it watches its parent and the pipe), so no
orphan keeps the ptys or the shared-memory rings.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import os
from collections.abc import Iterable
from typing import Any

from drivers.errors import RigError

from .scene import SimUnavailable
from .tasks import DEFAULT_TASK, get_task
from .world import CAMERA_NAMES, DEFAULT_CAMERAS, CameraSpec, WorldConfig, world_main

START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 30.0


class WorldError(RigError):
    """The simulated world failed to start or to answer."""


def camera_specs(cameras: Iterable[str | CameraSpec] | None, *, width: int | None = None,
                 height: int | None = None, fps: float | None = None, ring_prefix: str | None = None
                 ) -> tuple[CameraSpec, ...]:
    """Camera specs from names or specs; ``None`` = the defaults. Overrides apply to all."""
    out = []
    for c in DEFAULT_CAMERAS if cameras is None else cameras:
        spec = c if isinstance(c, CameraSpec) else CameraSpec(c)
        if spec.name not in CAMERA_NAMES:
            raise WorldError(f"the sim has no camera {spec.name!r}; choose from: {', '.join(CAMERA_NAMES)}")
        spec = CameraSpec(spec.name, width or spec.width, height or spec.height, fps or spec.fps,
                          spec.ring or (f"{ring_prefix}{spec.name}" if ring_prefix else ""), spec.delay_s)
        out.append(spec)
    return tuple(out)


class WorldHandle:
    """The parent's end of a running world."""

    def __init__(self, process: mp.process.BaseProcess, conn: Any, info: dict, config: WorldConfig):
        self.process = process
        self._conn = conn
        self.config = config
        self.ports: dict[str, str] = info["ports"]
        self.cameras: dict[str, dict] = info["cameras"]
        self.pid: int = info["pid"]
        self.timestep: float = info["timestep"]

    def _call(self, *msg: Any, timeout: float = REPLY_TIMEOUT_S) -> Any:
        if self._conn is None:
            raise WorldError("the simulated world is closed; start a new one with start_world()")
        try:
            self._conn.send(msg)
            if not self._conn.poll(timeout):
                raise WorldError(f"the simulated world did not answer {msg[0]!r} within {timeout:.0f} s; "
                                 "it may be overloaded: close it and start again")
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            raise WorldError(f"the simulated world process has gone ({e}); start it again") from e
        if status != "ok":
            raise WorldError(f"the simulated world refused {msg[0]!r}: {value}")
        return value

    def reset(self, task: str | None = None, seed: int = 0) -> dict:
        """New episode: arms to the start pose, objects placed from ``seed``, operator replanned."""
        return self._call("reset", task or self.config.task, seed)

    def success(self) -> bool:
        return bool(self._call("success"))

    def set_operator(self, enabled: bool, restart: bool = True) -> dict:
        """Switch the scripted operator; enabling restarts its plan from the beginning."""
        return self._call("set_operator", enabled, restart)

    def set_leader_pose(self, arm: str, q: Iterable[float]) -> None:
        """Hold leader ``arm`` at 6 joint angles (rad) + gripper opening 0..1 (operator off)."""
        self._call("set_leader_pose", arm, [float(v) for v in q])

    def operator_status(self) -> dict:
        return self._call("operator_status")

    def set_camera_delay(self, camera: str, seconds: float) -> None:
        """Frames of ``camera`` appear (and are stamped) ``seconds`` after the moment they show."""
        self._call("set_camera_delay", camera, seconds)

    def unplug(self, arm: str) -> None:
        """Fault drill: arm ``arm``'s emulated bus goes away under the host (a pulled USB cable)."""
        self._call("unplug", arm)

    def stats(self) -> dict:
        """Real-time factor, overruns, frames rendered and render time per camera."""
        return self._call("stats")

    def object_poses(self) -> dict[str, list[float]]:
        return self._call("object_poses")

    def arm_qpos(self) -> dict[str, list[float]]:
        """Follower joint positions straight from the physics (for tests and checks)."""
        return self._call("arm_qpos")

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Shut the world down (idempotent)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.send(("shutdown",))
                self._conn.poll(timeout)
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)

    def __enter__(self) -> WorldHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_world(task: str = DEFAULT_TASK, seed: int = 0, cameras: Iterable[str | CameraSpec] | None = None,
                realtime: bool = True, wire_timing: bool = True, operator: bool = True,
                shadows: bool = False, ring_prefix: str | None = None, sched: str | int = "off") -> WorldHandle:
    """Start the world process and wait until its ports and cameras are up.

    ``cameras``: names or ``CameraSpec``s; ``None`` = ``DEFAULT_CAMERAS``, ``()`` = none.
    ``ring_prefix``: shared-memory ring names become ``<prefix><camera>`` (default ``rig-sim-<camera>``).
    """
    get_task(task)  # an unknown task: one line naming the known ones, before a process starts
    if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("gym_aloha") is None:
        raise SimUnavailable("the simulated rig needs MuJoCo and gym-aloha; install them with: "
                             "pip install -e '.[sim]'")  # here, not as a crash inside the child
    config = WorldConfig(task=task, seed=seed, cameras=camera_specs(cameras, ring_prefix=ring_prefix),
                         realtime=realtime, wire_timing=wire_timing, operator=operator,
                         parent_pid=os.getpid(), shadows=shadows, sched=sched)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=world_main, args=(child, config), name=f"rig-sim-{task}", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(START_TIMEOUT_S):
            raise WorldError(f"the simulated world did not start within {START_TIMEOUT_S:.0f} s")
        status, info = parent.recv()
    except (EOFError, OSError) as e:
        proc.join(1)
        raise WorldError(f"the simulated world process died while starting (exit code {proc.exitcode})") from e
    except WorldError:
        proc.terminate()
        raise
    if status != "ready":
        proc.join(5)
        hint = ""
        if "EGL" in info or "OpenGL" in info or "gladLoadGL" in info:
            hint = ("; rendering needs an OpenGL library: install Debian's libegl1 and libgl1-mesa-dri "
                    "(or set MUJOCO_GL=osmesa with libosmesa6), or start the world with cameras=()")
        elif "live writer" in info:
            hint = ("; another simulated world is running: stop it, or give this one its own rings "
                    "(rig sim --ring-prefix NAME-, or start_world(ring_prefix=...))")
        raise WorldError(f"the simulated world failed to start: {info}{hint}")
    return WorldHandle(proc, parent, info, config)

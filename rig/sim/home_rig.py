"""The simulated home as the world of the handheld rig (``--config sim-handheld``, its ``[home]``).

At the session's start the scripted hand's whole take is simulated (rig/sim/home.py): its IMU
readings and jaw become the trace the gripper's firmware host build plays (``--imu-trace``,
``trace start``), exactly as rig/pose/firmware_imu.py does, so the IMU and the jaw reach the rig
through the firmware, the serial protocol and the driver's clock sync. Trace time 0 is placed on
the rig's clock where the stand-in's device clock truly lies; from then on

- the wrist camera (``HomeCamera``) renders the home as the hand holds it now, each frame stamped
  with the time it depicts;
- ``TruthSource`` records the camera's true pose in the board frame as the ``ground_truth``
  stream: simulated, never measured (the episode's ``simulated`` attribute says so).

After ``seconds`` the hand rests where its script ended (IMU, camera and truth alike).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivers.cameras.base import Camera, CameraDisconnected
from drivers.cameras.frame import Frame
from rig.config import HomeConfig

GROUND_TRUTH = "ground_truth"
TRUTH_FIELDS = {"position": ((3,), "f8"), "quat": ((4,), "f8")}
TRUTH_NOTE = ("simulated: the wrist camera's true pose in the board frame (position m, quat w x y z, OpenCV "
              "camera axes), from the simulated home's scripted hand; compare `pose` against it")


class HomeRig:
    """The home's take, its IMU trace file, and where trace time 0 lies on the rig's clock."""

    def __init__(self, cfg: HomeConfig, width: int = 640, height: int = 480, fps: float = 15.0):
        from rig.pose.firmware_imu import write_trace
        from rig.sim.home import simulate

        self.cfg = cfg
        self.take = simulate(cfg.seed, cfg.seconds, fps, width, height, render=False)
        self._tmp = tempfile.TemporaryDirectory(prefix="rig-home-")
        self.trace = Path(self._tmp.name) / "imu.txt"
        write_trace(self.trace, self.take)
        self.t0_ns: int | None = None  # trace time 0 on the rig's clock, once playing

    @property
    def standin_args(self) -> tuple[str, ...]:
        return ("--imu-trace", str(self.trace))

    def play(self, standin) -> None:
        """Start the hand: the stand-in plays the trace from now."""
        self.t0_ns = standin.true_host_ns(standin.trace_start())

    def t_of(self, host_ns: int | np.ndarray) -> np.ndarray:
        """The take's time (s, clamped to the script) at rig-clock times."""
        return np.clip((np.asarray(host_ns) - (self.t0_ns or 0)) / 1e9, 0.0, float(self.take.t_imu[-1]))

    def camera(self, name: str, width: int, height: int, fps: float, **options) -> HomeCamera:
        return HomeCamera(self, name, width, height, fps, **options)

    def truth_source(self) -> TruthSource:
        return TruthSource(self)

    def episode_extra(self) -> dict[str, Any]:
        """What each episode of this world records beside its streams."""
        return {"pose_board": self.take.board.to_dict(),
                "simulated": {"world": "home", "seed": self.cfg.seed, "seconds": self.cfg.seconds,
                              "t0_ns": self.t0_ns,  # the script's time 0 on the rig's clock
                              GROUND_TRUTH: TRUTH_NOTE}}

    def close(self) -> None:
        self._tmp.cleanup()


class HomeCamera(Camera):
    """The wrist camera rendering the home (exact pinhole: ``intrinsics``) at the hand's pose now."""

    device_clock = "the simulated home's time: ns since its IMU trace started"

    def __init__(self, home: HomeRig, name: str, width: int, height: int, fps: float, **options):
        super().__init__(name, width, height, fps, **options)
        self.home = home
        self.intrinsics = home.take.intrinsics()  # the home was simulated at this camera's size
        self._renderer = None

    def _open(self) -> None:
        self._next = 0
        if self._renderer is None:  # its own process: rendering would hold this one's GIL from the gripper
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            home = self.home
            self._renderer = ctx.Process(target=_render_process, name=f"rig-home-{self.name}", daemon=True,
                                         args=(child, home.cfg.seed, home.cfg.seconds, self.width, self.height))
            self._renderer.start()
            child.close()
            # Ready before the rig is: a take's first frames must not wait on the renderer's start-up.
            reply = self._conn.recv() if self._conn.poll(120.0) else "it did not start within 120 s"
            if reply != "ready":
                self._close()
                raise CameraDisconnected(f"camera {self.name!r}: the simulated home cannot render ({reply}); "
                                         "install OpenGL with `sudo apt-get install libegl1 libgl1-mesa-dri`")

    def _render(self, t: float) -> np.ndarray:
        try:
            self._conn.send(t)
            reply = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise CameraDisconnected(f"camera {self.name!r}: the simulated home's render process ended") from exc
        return np.frombuffer(reply, np.uint8).reshape(self.height, self.width, 3)

    def _grab(self, timeout_s: float) -> Frame | None:
        t0 = self.home.t0_ns
        if t0 is None:  # the hand has not started yet
            time.sleep(min(timeout_s, 0.01))
            return None
        period_ns = round(1e9 / self.fps)
        now = time.monotonic_ns()
        due = t0 + self._next * period_ns
        if due > now:
            if (due - now) / 1e9 > timeout_s:
                time.sleep(timeout_s)
                return None
            time.sleep((due - now) / 1e9)
        elif now - due >= 2 * period_ns:  # rendering fell behind: those frames are lost (drops)
            self._next = max(self._next, (now - t0) // period_ns)
            due = t0 + self._next * period_ns
        index = self._next
        self._next += 1
        img = self._render(float(self.home.t_of(due)))
        return Frame(self.name, index, due, img, "rgb8", t_device_ns=due - t0)

    def _close(self) -> None:
        if self._renderer is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._renderer.join(timeout=2)
            if self._renderer.is_alive():
                self._renderer.kill()
            self._conn.close()
            self._renderer = None


def _render_process(conn, seed: int, seconds: float, width: int, height: int) -> None:
    """The wrist camera's renderer: receives take times, answers RGB bytes (or one line of error)."""
    os.environ.setdefault("MUJOCO_GL", os.environ.get("RIG_RENDER_GL", "egl"))  # before MuJoCo is imported
    from rig.sim.home import load_home, plan_motion, script

    model = load_home()
    motion = plan_motion(script(seed, seconds), seed=seed)
    try:
        from rig.sim.scene import import_mujoco

        mujoco = import_mujoco()
        renderer = mujoco.Renderer(model, height, width)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send("ready")
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False  # as rig/sim/home.py renders: ~2.5x faster
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    data = mujoco.MjData(model)
    qa = int(model.joint("gripper").qposadr[0])
    try:
        while (t := conn.recv()) is not None:
            i = min(int(round(t * 1000.0)), len(motion.t) - 1)
            data.qpos[qa:qa + 3] = motion.pos[i]
            data.qpos[qa + 3:qa + 7] = motion.quat[i]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera="wrist")
            conn.send(renderer.render().tobytes())
    except (EOFError, OSError):
        pass  # the rig went away
    finally:
        renderer.close()


class TruthSource:
    """The ``ground_truth`` stream: the true camera pose at the IMU's 200 Hz, up to now."""

    name = GROUND_TRUTH
    fields = TRUTH_FIELDS

    def __init__(self, home: HomeRig):
        self.home = home
        self.rate_hz = 200.0
        self._k = 0

    def poll(self) -> list[tuple[int, dict[str, Any]]]:
        home = self.home
        if home.t0_ns is None:
            return []
        take = home.take
        t_now = (time.monotonic_ns() - home.t0_ns) / 1e9
        end = int(np.searchsorted(take.t_imu, t_now, side="right"))
        rows = [(home.t0_ns + int(round(take.t_imu[k] * 1e9)), {"position": take.gt_pos[k], "quat": take.gt_quat[k]})
                for k in range(self._k, end)]
        self._k = max(self._k, end)
        return rows

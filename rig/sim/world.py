"""The simulated world process: MuJoCo physics, four emulated Dynamixel buses, cameras, operator.

Runs in its own process (see ``launch.start_world``). The host side sees only what a real rig
shows: four serial ports (ptys) speaking Dynamixel Protocol 2.0 and camera frames in shared
memory rings. A small control channel (a ``multiprocessing`` pipe, small messages only) resets
episodes, asks for success, and switches the scripted operator.

Threads in this process:
- main: the physics loop. It steps MuJoCo at the model timestep, in real time against absolute
  deadlines, and every ``SYNC_STEPS`` steps exchanges state with the emulated servos: follower
  goals in, follower and leader present values out. Between steps it answers the control pipe,
  so commands never race the physics.
- one per bus (inside ``EmulatedBus``): serves the pty.
A separate camera process (``rig.sim.render``) renders from the state the physics loop publishes
into shared memory (rendering in a thread here would hold the GIL and delay bus replies).

Follower servos with torque off make their actuator limp (gain zero): the joint then moves under
gravity against the joint friction of the model, as a switched-off arm sags. Operating modes are
not modelled: any torque-on servo tracks its Goal Position with the model's position actuator.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from .hardware import (
    CURRENT_UNIT_A,
    FINGER_CLOSED_M,
    FINGER_OPEN_M,
    FOLLOWER_GRIPPER_CLOSED_RAD,
    FOLLOWER_GRIPPER_OPEN_RAD,
    FOLLOWER_MODELS,
    LEADER_MODELS,
    SERVOS,
    TICKS_PER_RAD,
    TICKS_PER_TURN,
    TORQUE_PER_AMP,
    angle_from_ticks,
    finger_from_follower_gripper,
    follower_gripper_from_finger,
    leader_gripper_from_opening,
    ticks_from_angle,
)
from .scene import SIDES, START_ARM_POSE, SimScene
from .tasks import DEFAULT_TASK

SYNC_STEPS = 2  # physics steps between servo state exchanges (2 x 2 ms: goals read at 250 Hz,
# present values refreshed at 125 Hz, fresher than any host reads them)
CONTROL_POLL_S = 0.02
_RAW_VELOCITY_PER_TPS = 60.0 / TICKS_PER_TURN / 0.229  # Present Velocity units per tick/s
OPERATOR_BLEND_S = 1.0  # switching the operator on eases the leaders into its plan over this long
RESYNC_BEHIND_S = 0.02  # further behind than this (starved of CPU), the world slows down rather than
# racing to catch up: a burst of fast physics would run ahead of the host's teleop loop (counts an overrun)
CAMERA_NAMES = ("top", "angle", "front_close", "left_pillar", "right_pillar", "left_wrist", "right_wrist")
# gripper motor radians per metre of finger travel (to turn finger speed and force into servo units)
FINGER_DRAD_DM = (FOLLOWER_GRIPPER_OPEN_RAD - FOLLOWER_GRIPPER_CLOSED_RAD) / (FINGER_OPEN_M - FINGER_CLOSED_M)


@dataclass(frozen=True, slots=True)
class CameraSpec:
    name: str
    width: int = 320
    height: int = 240
    fps: float = 15.0
    ring: str = ""  # shared-memory ring name; "" = drivers.cameras.shm.default_ring_name(name)
    delay_s: float = 0.0  # the frame becomes visible (and is stamped) this long after its capture


# Three cameras at 320x240 and 15 fps: what a 2-core laptop renders beside the physics and the teleop
# loop (CPU rendering). ALOHA's own layout (4 cameras at 640x480, 50 fps) wants a GPU.
DEFAULT_CAMERAS = (CameraSpec("top"), CameraSpec("left_wrist"), CameraSpec("right_wrist"))


@dataclass
class WorldConfig:
    task: str = DEFAULT_TASK
    seed: int = 0
    cameras: tuple[CameraSpec, ...] = DEFAULT_CAMERAS
    realtime: bool = True
    wire_timing: bool = True
    operator: bool = True
    baud: int = 1_000_000
    parent_pid: int = 0
    shadows: bool = False  # shadows and reflections cost ~3x render time on a CPU
    # The rig's `[loop] realtime`: the physics and the emulated servos stand in for hardware that
    # has its own CPU, so they get the loop's scheduling class (the camera process does not).
    sched: str | int = "off"


def _bus_specs(models: dict[int, str]) -> list:
    from drivers.dynamixel.emulator import ServoSpec

    specs = []
    for slot in SERVOS:
        if slot.shadow_of is None:
            specs.append(ServoSpec(id=slot.id, model=models[slot.id]))
        else:
            # Mounted mirrored, reversed by Drive Mode; the homing offset brings its reading onto the
            # primary's, so both report the joint angle. It also acts on writes to the primary's ID.
            specs.append(ServoSpec(id=slot.id, model=models[slot.id], secondary_id=slot.shadow_of,
                                   drive_mode=1, homing_offset=TICKS_PER_TURN))
    return specs


class _Arm:
    """One emulated bus and its link to the physics (followers) or the operator (leaders)."""

    def __init__(self, name: str, side: str, follower: bool, baud: int, wire_timing: bool):
        from drivers.dynamixel.emulator import EmulatedBus

        self.name, self.side, self.follower = name, side, follower
        models = FOLLOWER_MODELS if follower else LEADER_MODELS
        self.bus = EmulatedBus(_bus_specs(models), baud=baud, wire_timing=wire_timing, name=name)
        self.servos = {slot.id: self.bus.servo(slot.id) for slot in SERVOS}
        self.kt = np.array([TORQUE_PER_AMP[models[s.id]] for s in SERVOS])
        self.limits = np.array([float(self.servos[s.id].get("current_limit") or 1000) for s in SERVOS])
        self.joint_of = np.array([slot.joint for slot in SERVOS])
        self.mirrored = np.array([slot.shadow_of is not None for slot in SERVOS])
        self.share = np.where(np.isin(self.joint_of, (1, 2)), 0.5, 1.0)  # shoulder, elbow: two servos pull
        self._published = np.full((len(SERVOS), 3), np.nan)  # register values last written
        self.limp = [False] * 7
        self.last = np.zeros(7)  # last present joint values (leaders)
        self.blend_from: np.ndarray | None = None  # where the operator took the leader from
        self.port = ""

    def start(self) -> str:
        self.port = self.bus.start()
        return self.port

    def stop(self) -> None:
        self.bus.stop()

    def set_external(self, on: bool) -> None:
        for s in self.servos.values():
            s.external_motion = on

    def publish(self, joints: np.ndarray, vel: np.ndarray, effort: np.ndarray | None = None) -> None:
        """Present state of 7 joint values (6 angles + gripper servo angle), rad, rad/s, N*m (or N).

        Only servos whose registers would change are written: the emulator's register writes are
        the costliest part of the loop, and an arm at rest changes nothing."""
        ticks = joints[self.joint_of] * TICKS_PER_RAD + 2048
        tps = vel[self.joint_of] * TICKS_PER_RAD
        cur = np.zeros(len(SERVOS))
        if effort is not None:
            cur = np.clip(effort[self.joint_of] * self.share / self.kt / CURRENT_UNIT_A, -self.limits, self.limits)
        m = self.mirrored  # the shadows' shafts turn the other way
        ticks[m], tps[m], cur[m] = TICKS_PER_TURN - ticks[m], -tps[m], -cur[m]
        regs = np.stack([np.rint(ticks), np.rint(tps * _RAW_VELOCITY_PER_TPS), np.rint(cur)], axis=1)
        changed = np.flatnonzero((regs != self._published).any(axis=1))
        if not len(changed):
            return
        with self.bus.lock:
            for k in changed:
                self.servos[SERVOS[k].id].set_present(position=ticks[k], velocity=tps[k], current=cur[k])
        self._published[changed] = regs[changed]

    def present_joints(self) -> np.ndarray:
        """The 7 joint values the primaries' shafts are at now (rad)."""
        with self.bus.lock:
            return np.array([angle_from_ticks(self.servos[s.id].physical_position) for s in SERVOS
                             if s.shadow_of is None])

    def goals(self) -> tuple[np.ndarray, list[bool]]:
        """Goal joint values (rad) of the primaries and their torque state."""
        q = np.zeros(7)
        on = [False] * 7
        with self.bus.lock:
            for slot in SERVOS:
                if slot.shadow_of is not None:
                    continue
                s = self.servos[slot.id]
                q[slot.joint] = angle_from_ticks(s.goal_position)
                on[slot.joint] = s.torque_enabled
        return q, on


BLOCK_PREFIX = "rig-sim-world-"  # + "<pid>-state" / "<pid>-stats": the blocks the camera process reads


def _remove_stale_blocks() -> None:
    """Remove blocks left by a world that was killed outright (SIGKILL): its pid no longer runs."""
    shm_dir = "/dev/shm"  # Linux; elsewhere leftovers are the OS's to clean
    if not os.path.isdir(shm_dir):
        return
    for entry in os.listdir(shm_dir):
        if not entry.startswith(BLOCK_PREFIX):
            continue
        pid = entry[len(BLOCK_PREFIX):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(shm_dir, entry))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Cameras:
    """The camera process (``rig.sim.render``) and the shared blocks it renders from."""

    def __init__(self, world: World, cameras: tuple[CameraSpec, ...], shadows: bool):
        from drivers.cameras.shm import default_ring_name

        from .render import STATS_FIELDS, StateBlock

        self.cameras = [c if c.ring else CameraSpec(c.name, c.width, c.height, c.fps, default_ring_name(c.name),
                                                    c.delay_s) for c in cameras]
        self.names = [c.name for c in self.cameras]
        self.shadows = shadows
        _remove_stale_blocks()
        pid = os.getpid()
        self.state = StateBlock(world.scene.model.nq, name=f"{BLOCK_PREFIX}{pid}-state", create=True)
        self.stats_shm = shared_memory.SharedMemory(name=f"{BLOCK_PREFIX}{pid}-stats", create=True,
                                                    size=len(cameras) * STATS_FIELDS * 8)
        self.stats = np.ndarray((len(cameras), STATS_FIELDS), dtype=np.float64, buffer=self.stats_shm.buf)
        self.stats[:] = 0
        self.stats[:, 2] = [c.delay_s for c in self.cameras]
        self.task = world.scene.task
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        cfg = {"task": self.task, "shadows": self.shadows, "state": self.state.name,
               "stats": self.stats_shm.name, "parent_pid": os.getpid(),
               "cameras": [{"name": c.name, "width": c.width, "height": c.height, "fps": c.fps, "ring": c.ring}
                           for c in self.cameras]}
        env = dict(os.environ)
        env["MUJOCO_GL"] = env.pop(RENDER_GL_ENV, "egl")  # only the renderer needs an OpenGL library
        env.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: one render thread leaves a core to the rest
        self.proc = subprocess.Popen([sys.executable, "-m", "rig.sim.render", json.dumps(cfg)],
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else "error: no answer"
        if line != "ready":
            self.stop()
            raise RuntimeError(f"the camera process failed: {line.removeprefix('error: ')}")

    def set_delay(self, camera: str, seconds: float) -> None:
        if camera not in self.names:
            raise ValueError(f"no camera {camera!r} in this world (it has: {', '.join(self.names)})")
        self.stats[self.names.index(camera), 2] = float(seconds)

    def info(self) -> dict:
        return {c.name: {"ring": c.ring, "width": c.width, "height": c.height, "fps": c.fps} for c in self.cameras}

    def frames(self) -> dict:
        return {n: int(self.stats[k, 0]) for k, n in enumerate(self.names)}

    def render_ms(self) -> dict:
        return {n: float(self.stats[k, 1]) * 1000 for k, n in enumerate(self.names)}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        with contextlib.suppress(Exception):
            self.state.close(unlink=True)
        with contextlib.suppress(Exception):
            del self.stats
            self.stats_shm.close()
            self.stats_shm.unlink()


class World:
    """Owns the scene, the buses, the operator plan and the loops (in the world process)."""

    def __init__(self, config: WorldConfig):
        self.config = config
        self.scene = SimScene(config.task)
        self.arms = {
            "left_leader": _Arm("left_leader", "left", False, config.baud, config.wire_timing),
            "right_leader": _Arm("right_leader", "right", False, config.baud, config.wire_timing),
            "left_follower": _Arm("left_follower", "left", True, config.baud, config.wire_timing),
            "right_follower": _Arm("right_follower", "right", True, config.baud, config.wire_timing),
        }
        self.plan = None
        self.operator_enabled = config.operator
        self.operator_t0 = self.scene.data.time
        self.stats = {"rtf": 0.0, "overruns": 0, "steps": 0}
        self._turn = 0
        self.blend_until = 0.0
        self.cameras = _Cameras(self, config.cameras, config.shadows) if config.cameras else None
        self._reset(config.task, config.seed)

    # --- episode ---------------------------------------------------------------------------------
    def _reset(self, task: str, seed: int) -> dict:
        from .operator import plan_episode

        if task != self.scene.task:
            raise ValueError(f"this world runs {self.scene.task!r}; start a new world for {task!r}")
        plan = plan_episode(task, seed, self.scene)  # ~0.3-1 s: the physics pauses meanwhile
        self.scene.reset(seed)
        self.config.seed = seed
        self.plan = plan
        self.operator_t0 = self.scene.data.time
        self.blend_until = 0.0  # the leaders are put at the plan's start: nothing to blend
        for arm in self.arms.values():
            arm.limp = [False] * 7
        for side in SIDES:
            for j in range(7):
                self.scene.set_limp(side, j, False)
        start = np.array([*START_ARM_POSE, follower_gripper_from_finger(self.scene.arm_qpos("left")[6])])
        leader_start = plan.q[0]
        for arm in self.arms.values():
            if arm.follower:
                self._publish_follower(arm)
                with arm.bus.lock:  # goals hold the start pose until the host writes its own
                    for slot in SERVOS:  # (a shadow's register reads like its primary's)
                        arm.servos[slot.id].set("goal_position", ticks_from_angle(start[slot.joint]))
            else:
                q = leader_start[SIDES.index(arm.side)]
                arm.last = q.copy()
                arm.publish(q, np.zeros(7))
        self._apply_operator_mode()
        return {"task": task, "seed": seed, "duration": plan.duration, "retries": plan.retries}

    def _apply_operator_mode(self) -> None:
        for arm in self.arms.values():
            # Followers are always driven by the physics. Leaders follow the operator's hands when
            # the operator is on; otherwise they behave as plain servos (torque on: they go to goal).
            arm.set_external(arm.follower or self.operator_enabled)

    def set_operator(self, enabled: bool, restart: bool = True) -> dict:
        if enabled and not self.operator_enabled:
            # The operator takes the leaders from wherever they are: blend into the plan, no jump.
            for arm in self.arms.values():
                if not arm.follower:
                    arm.blend_from = arm.present_joints()
            self.blend_until = self.scene.data.time + OPERATOR_BLEND_S
        self.operator_enabled = enabled
        if enabled and restart:
            self.operator_t0 = self.scene.data.time
        self._apply_operator_mode()
        return self.operator_status()

    def _take_over(self, phase: str) -> dict:
        """The scripted operator takes over a take in progress from where the followers and the
        objects are (rig/sim/corrector.py): ``release`` lets go and backs up; ``finish`` re-plans
        the rest of the task. The leaders ease from where they are into the new plan, whose first
        pose is the followers' (~0.3-1 s of planning: the physics pauses meanwhile)."""
        from .operator import ScriptedOperator, arms_now

        if phase not in ("release", "finish"):
            raise ValueError(f"take_over: phase is release or finish, not {phase!r}")
        op = ScriptedOperator(self.scene.task, self.config.seed, self.scene, now=arms_now(self.scene))
        self.plan = op.release() if phase == "release" else op.plan()
        for arm in self.arms.values():
            if not arm.follower:
                arm.blend_from = arm.last.copy() if self.operator_enabled else arm.present_joints()
        self.blend_until = self.scene.data.time + OPERATOR_BLEND_S
        self.operator_enabled = True
        self.operator_t0 = self.scene.data.time
        self._apply_operator_mode()
        return {**self.operator_status(), "retries": self.plan.retries}

    def operator_status(self) -> dict:
        t = self.scene.data.time - self.operator_t0
        duration = self.plan.duration if self.plan else 0.0
        return {"enabled": self.operator_enabled, "t": t, "duration": duration,
                "done": self.operator_enabled and t >= duration}

    def _set_leader_pose(self, name: str, q: list[float]) -> None:
        """Hold a leader at a known pose, as a hand would: 6 joint angles (rad) + gripper 0..1."""
        arm = self.arms.get(name)
        if arm is None or arm.follower:
            raise ValueError(f"{name!r} is not a leader; leaders: left_leader, right_leader")
        if self.operator_enabled:
            raise ValueError("the scripted operator is moving the leaders: set_operator(False) first")
        joints = np.asarray(q, dtype=float)
        if joints.shape != (7,):
            raise ValueError(f"a leader pose is 7 values (6 joint angles + gripper 0..1), got {joints.shape}")
        joints = joints.copy()
        joints[6] = leader_gripper_from_opening(float(q[6]))
        arm.set_external(True)
        arm.last = joints
        arm.publish(joints, np.zeros(7))

    # --- state exchange --------------------------------------------------------------------------
    def _publish_follower(self, arm: _Arm) -> None:
        q = self.scene.arm_qpos(arm.side)
        v = self.scene.arm_qvel(arm.side)
        f = self.scene.arm_force(arm.side)
        joints = q.copy()
        joints[6] = follower_gripper_from_finger(q[6])
        vel = v.copy()
        vel[6] = v[6] * FINGER_DRAD_DM
        effort = f.copy()
        effort[6] = f[6] / FINGER_DRAD_DM  # finger force (N) as gripper motor torque (N*m)
        arm.publish(joints, vel, effort)

    def _exchange(self, dt: float) -> None:
        """Follower goals in (every exchange), present values out (followers and leaders take turns:
        each is refreshed every ``2 * dt``, which halves the cost of the emulator's register writes)."""
        self._turn ^= 1
        for arm in self.arms.values():
            if arm.follower:
                goal, on = arm.goals()
                for j in range(7):
                    limp = not on[j]
                    if limp != arm.limp[j]:
                        self.scene.set_limp(arm.side, j, limp)
                        arm.limp[j] = limp
                self.scene.set_arm_goal(arm.side, goal[:6], finger_from_follower_gripper(goal[6]))
                if self._turn:
                    self._publish_follower(arm)
            elif self.operator_enabled and self.plan is not None and not self._turn:
                now = self.scene.data.time
                q = self.plan.at(now - self.operator_t0)[SIDES.index(arm.side)]
                if now < self.blend_until and arm.blend_from is not None:
                    a = 1.0 - (self.blend_until - now) / OPERATOR_BLEND_S
                    q = arm.blend_from + a * a * (3 - 2 * a) * (q - arm.blend_from)
                vel = (q - arm.last) / (2 * dt) if dt > 0 else np.zeros(7)
                arm.last = q
                arm.publish(q, vel)

    def _publish_state(self) -> None:
        """The pose the cameras see, stamped now (the moment it is true in real time)."""
        if self.cameras is not None:
            self.cameras.state.write(self.scene.data.qpos, time.monotonic_ns())

    # --- control channel -------------------------------------------------------------------------
    def handle(self, msg: tuple) -> Any:
        op, *args = msg
        if op == "reset":
            return self._reset(*args)
        if op == "success":
            return self.scene.success()
        if op == "set_operator":
            return self.set_operator(*args)
        if op == "take_over":
            return self._take_over(*args)
        if op == "operator_status":
            return self.operator_status()
        if op == "set_leader_pose":
            return self._set_leader_pose(*args)
        if op == "set_camera_delay":
            cam, seconds = args
            if self.cameras is None:
                raise ValueError("this world has no cameras")
            self.cameras.set_delay(cam, seconds)
            return None
        if op == "unplug":
            (name,) = args
            if name not in self.arms:
                raise ValueError(f"no arm {name!r}; the world has {', '.join(self.arms)}")
            self.arms[name].bus.unplug()  # the host sees its port go away, as when a cable is pulled
            return None
        if op == "stats":
            out = dict(self.stats)
            if self.cameras is not None:
                out["frames"] = self.cameras.frames()
                out["render_ms"] = self.cameras.render_ms()
            return out
        if op == "object_poses":
            return {n: pos.tolist() for n, pos in self.scene.object_positions().items()}
        if op == "arm_qpos":
            return {side: self.scene.arm_qpos(side).tolist() for side in SIDES}
        raise ValueError(f"unknown world command {op!r}")

    # --- main loop -------------------------------------------------------------------------------
    def start(self) -> dict:
        ports = {name: arm.start() for name, arm in self.arms.items()}
        self._apply_operator_mode()
        cameras = {}
        if self.cameras is not None:
            self._publish_state()
            self.cameras.start()
            cameras = self.cameras.info()
        return {"ports": ports, "cameras": cameras, "pid": os.getpid(), "timestep": self.scene.model.opt.timestep}

    def run(self, conn: Any) -> None:
        dt = self.scene.model.opt.timestep * SYNC_STEPS
        next_t = time.monotonic()
        last_poll = 0.0
        win_wall, win_steps = time.monotonic(), 0
        paused = 0.0  # wall time spent paused by commands in this window (not counted against the rtf)
        ppid = self.config.parent_pid
        guard = None
        if self.config.sched != "off":
            from rig.realtime import RunawayGuard

            guard = RunawayGuard(limit=0.9)  # physics that cannot keep real time must not hold a core at FIFO
        while True:
            if guard is not None:
                guard.check()
            now = time.monotonic()
            if now - last_poll >= CONTROL_POLL_S:
                last_poll = now
                if ppid and os.getppid() != ppid:
                    return  # the parent died: do not keep ptys and shared memory alive
                handled = self._serve_control(conn)
                if handled is None:
                    return
                took = time.monotonic() - now
                if handled and took > 0.01:  # a long command (a reset replans): the world paused
                    next_t = time.monotonic()
                    paused += took
                if now - win_wall >= 1.0:
                    sim_s = (self.stats["steps"] - win_steps) * self.scene.model.opt.timestep
                    self.stats["rtf"] = sim_s / max(1e-3, now - win_wall - paused)
                    win_wall, win_steps, paused = now, self.stats["steps"], 0.0
            self._exchange(dt)
            self.scene.step(SYNC_STEPS)
            self.stats["steps"] += SYNC_STEPS
            if self.cameras is not None:
                self._publish_state()
            if not self.config.realtime:
                continue
            next_t += dt
            wait = next_t - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -RESYNC_BEHIND_S:
                self.stats["overruns"] += 1
                next_t = time.monotonic()

    def _serve_control(self, conn: Any) -> int | None:
        """Answer pending commands; returns how many, or None when the world must stop."""
        handled = 0
        try:
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "shutdown":
                    conn.send(("ok", None))
                    return None
                try:
                    conn.send(("ok", self.handle(msg)))
                except Exception as e:  # the parent raises it as a RigError
                    conn.send(("error", f"{type(e).__name__}: {e}"))
                handled += 1
        except (EOFError, OSError, BrokenPipeError):
            return None  # the parent closed its end
        return handled

    def close(self) -> None:
        if self.cameras is not None:
            self.cameras.stop()
        for arm in self.arms.values():
            with contextlib.suppress(Exception):
                arm.stop()


RENDER_GL_ENV = "RIG_RENDER_GL"


def world_main(conn: Any, config: WorldConfig) -> None:
    """Entry point of the world process."""
    # Physics needs no OpenGL: keep a missing libEGL from breaking `import mujoco` here, and hand
    # the user's choice of GL backend to the render process.
    os.environ.setdefault(RENDER_GL_ENV, os.environ.pop("MUJOCO_GL", "egl"))
    sys.setswitchinterval(0.0005)  # bus threads answer within a fraction of a millisecond
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # terminate() still closes ports and rings
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the world
    if config.sched != "off":
        from rig.realtime import request

        request(config.sched, inherit=True)  # the bus threads started below inherit it
    world = None
    try:
        world = World(config)
        info = world.start()
        conn.send(("ready", info))
        world.run(conn)
    except BaseException as e:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        if world is not None:
            world.close()
        with contextlib.suppress(Exception):
            conn.close()

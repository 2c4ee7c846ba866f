"""The rig in its own process: the collector's app drives it from outside.

Textual composing a frame holds the GIL for milliseconds; in one process that delayed the
control loop's ticks (p99 period error 1.2 -> 3.5 ms). So the app starts an *engine* process
that owns the Collector (world, buses, loop, cameras, recorder) and talks to it over a pipe:

- requests ``(id, op, args)`` -> replies ``("reply", id, ok, value, view)``: an action is queued
  on the collector's worker and answered at once; every reply carries a fresh view. The actions
  and the view are defined once, in rig/tui/interface.py; the dispatch here and the proxy
  ``CollectorProcess`` are derived from them;
- events ``("event", kind, payload, view)``: a take was saved, an error to show;
- camera previews come down-scaled (a few tens of kB per frame), never full frames.

The engine polls its own collector (target length, faults) at 10 Hz, so a slow or frozen app
changes nothing for the take. When the app goes away for any reason (q, a crash, a kill), the
pipe closes and the engine saves the take in progress and stops the followers before it exits.
``CollectorProcess`` has the Collector's interface, so the app runs on either.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from drivers.errors import RigError
from recorder import Dataset
from rig.config import RigConfig, load_config
from rig.takes import resolve_task
from rig.tui.controller import CollectOptions, Collector, Snapshot, State
from rig.tui.interface import ACTIONS, VIEW_FIELDS, Actions, CollectorView

POLL_S = 0.1  # the engine advances its own timed states and fault checks this often
CALL_TIMEOUT_S = 15.0  # an action is only queued: a reply this late means the engine is stuck
CLOSE_TIMEOUT_S = 90.0  # a safe shutdown saves the take and stops the arms (slow on a loaded machine)
START_TIMEOUT_S = 60.0  # the process imports numpy, zarr, MuJoCo's bindings ...
PREVIEW_WIDTH = 160  # preview frames are strided down to at most this many pixels across
# Drills the engine passes on to a simulated world: faults, a hand holding a leader, the physics' arm pose
WORLD_DRILLS = ("unplug", "set_camera_delay", "set_leader_pose", "arm_qpos")


class EngineError(RigError):
    pass


EngineView = CollectorView  # the view every reply carries (rig/tui/interface.py)


# ---- the engine process ----------------------------------------------------------------------


def _preview(image: np.ndarray | None, width: int) -> np.ndarray | None:
    if image is None:
        return None
    step = max(1, -(-image.shape[1] // width))  # ceil: at most `width` pixels across
    return np.ascontiguousarray(image[::step, ::step])


def _snapshot(c: Collector, health: bool = True) -> Snapshot:
    snap = c.snapshot(health)
    # Faults are exceptions of the driver's own types: send their text, which is what the app shows.
    snap.cameras = [replace(v, fault=None if v.fault is None else str(v.fault)) for v in snap.cameras]
    return snap


def _world_drill(c: Collector, op: str, args: tuple) -> Any:
    world = c.takes.world
    if world is None:
        raise EngineError("fault drills need the simulated world; this rig has none")
    if op not in WORLD_DRILLS:
        raise EngineError(f"unknown drill {op!r}; known: {', '.join(WORLD_DRILLS)}")
    return getattr(world, op)(*args)


def _dispatch(c: Collector, op: str, args: tuple) -> Any:
    if op == "open":
        c.open()
        return None
    if op in ACTIONS:
        return getattr(c, op)(*args) is not None  # accepted (queued) or not
    if op == "snapshot":
        return _snapshot(c, *args)
    if op == "previews":
        names, width = args
        return {n: _preview(c.latest_frame(n), width) for n in names}
    if op == "view":
        return None
    if op == "close":
        return c.close()
    if op == "drill":
        return _world_drill(c, args[0], tuple(args[1:]))
    raise EngineError(f"unknown engine request {op!r}")


def _quiet(log_path: str | None) -> None:
    """The app owns the terminal: the engine's (and its world's) output goes to a log file."""
    if log_path is None:
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"--- rig engine pid {os.getpid()} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)


def _terminate(*_: Any) -> None:
    raise SystemExit(0)


def engine_main(conn: Any, options: CollectOptions, log_path: str | None) -> None:
    """Entry point of the engine process (spawned): serve the app until it closes or goes away."""
    _quiet(log_path)
    # Ctrl-C and a closed terminal reach the whole process group: the app decides, then closes
    # us over the pipe (or the pipe breaks). A plain kill still shuts the rig down safely.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            conn.send(msg)

    c = Collector(options)
    c.on_saved = lambda result: send(("event", "saved", (result, c.first_frame), CollectorView.of(c)))
    c.on_error = lambda text: send(("event", "error", text, CollectorView.of(c)))
    send(("ready", os.getpid()))
    next_poll = 0.0
    try:
        while True:
            if conn.poll(POLL_S):
                rid, op, args = conn.recv()
                try:
                    value, ok = _dispatch(c, op, args), True
                except Exception as exc:  # told to the app, which shows it; the engine goes on
                    value, ok = str(exc) if isinstance(exc, RigError) else f"{type(exc).__name__}: {exc}", False
                send(("reply", rid, ok, value, CollectorView.of(c, notices=True)))
                if op == "close":
                    return
            if time.monotonic() >= next_poll:
                try:
                    c.poll()
                except Exception:  # a bug in a check must not end the session: log it, go on
                    traceback.print_exc()
                next_poll = time.monotonic() + POLL_S
    except (EOFError, OSError, KeyboardInterrupt, SystemExit):
        pass  # the app went away (or we were killed politely): fall through to the safe close
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nothing interrupts the safe close itself
        report = c.close()
        print(f"rig engine closed: followers {report}", flush=True)


# ---- the app's end ---------------------------------------------------------------------------


UI_NICE = 5  # the app's process, once the engine runs: a 4 Hz screen can wait, a 50 Hz tick cannot


def yield_cpu_to_rig(increment: int = UI_NICE) -> None:
    """Lower this (the app's) process's CPU priority. Call after the engine has started: the
    engine keeps the priority it was born with, and on a busy 2-core machine the scheduler then
    runs the loop before the app's screen updates. Children started later (quick-train) inherit."""
    with contextlib.suppress(OSError):
        os.nice(increment)


def release_followers(config: RigConfig) -> dict[str, str]:
    """Last resort when the engine died without its safe close (killed, out of memory): its ports
    are free now, so this process stops the followers itself (torque off, or hold per config).
    A simulated world needs none: it exits with the engine that started it."""
    from rig.arms import Follower

    if config.sim is not None:
        return {}
    report: dict[str, str] = {}
    for arm in config.followers:
        try:
            follower = Follower(arm, arm.port, retries=2).open()
        except Exception as exc:  # the adapter itself may be what failed
            report[arm.name] = f"unreachable ({exc})"
            continue
        try:
            report[arm.name] = follower.make_safe(hold=config.safety.on_exit == "hold")
        finally:
            with contextlib.suppress(Exception):
                follower.close()
    return report


class _Call:
    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


def default_log_path(dataset: Path) -> Path:
    return Path(dataset).resolve().parent / "rig-collect.log"


class CollectorProcess:
    """The Collector, run in an engine process. Same interface; every call returns at once."""

    def __init__(self, options: CollectOptions, *, log_path: Path | None = None):
        self.options = options
        # The engine loads the same file itself; a bad config fails here first, in one message.
        self.config = load_config(options.config)
        self.log_path = log_path or default_log_path(options.dataset)
        self.on_saved = None
        self.on_error = None
        self.first_frame: tuple[int, str, np.ndarray] | None = None
        self.notices: list[str] = []
        self._dataset: Dataset | None = None
        self._view: EngineView | None = None
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._closed_report: dict[str, str] | None = None
        self._closing = False  # close() asked the engine to exit: its pipe closing is expected
        self._dead = False  # the pipe is closed: no reply will come
        self._gone: str | None = None  # why the engine is gone, when it went unasked
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Start the resource tracker (and the engine) while stderr is real: a running Textual app
        # swaps it for a capture object, which breaks multiprocessing's spawn (see Collector).
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # Not a daemon: the engine has children of its own (the world) and must outlive a crash
        # of the app long enough to stop the followers.
        self.process = ctx.Process(target=engine_main, args=(child, options, str(self.log_path)),
                                   name="rig-engine", daemon=False)
        self.process.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self.process.terminate()
            raise EngineError(f"the rig's engine process did not start within {START_TIMEOUT_S:.0f} s; "
                              f"see {self.log_path}")
        try:
            self._conn.recv()  # ("ready", pid)
        except EOFError as exc:
            self.process.join(5)
            raise EngineError(f"the rig's engine process exited at start (code {self.process.exitcode}); "
                              f"see {self.log_path}") from exc
        self._reader = threading.Thread(target=self._read, name="engine-reader", daemon=True)
        self._reader.start()

    # ---- the pipe --------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                msg = self._conn.recv()
                if msg[0] == "reply":
                    _, rid, ok, value, view = msg
                    self._take_view(view)
                    call = self._calls.pop(rid, None)
                    if call is not None:
                        call.ok, call.value = ok, value
                        call.done.set()
                elif msg[0] == "event":
                    _, kind, payload, view = msg
                    self._take_view(view)
                    self._event(kind, payload)
        except (EOFError, OSError):
            pass
        self._dead = True
        if not self._closing:
            self.process.join(2)
            released = release_followers(self.config)
            self._gone = (f"the rig's engine process exited unexpectedly (code {self.process.exitcode}); "
                          + (f"followers: {', '.join(f'{k} {v}' for k, v in released.items())}; " if released else "")
                          + f"see {self.log_path}. Restart rig")
            self._view = replace(self.view, shutdown_report=released) if self._view is not None else None
        for call in list(self._calls.values()):
            call.ok, call.value = False, self._gone or "the rig's engine process has closed"
            call.done.set()
        self._calls.clear()

    def _take_view(self, view: EngineView) -> None:
        self.notices.extend(view.notices)
        self._view = view

    def _event(self, kind: str, payload: Any) -> None:
        if kind == "saved":
            result, self.first_frame = payload
            if self.on_saved is not None:
                self.on_saved(result)
        elif kind == "error" and self.on_error is not None:
            self.on_error(payload)

    def _call(self, op: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        if self._gone is not None or self._closed_report is not None:
            raise EngineError(self._gone or "the rig's engine process has closed")
        call, rid = _Call(), next(self._ids)
        self._calls[rid] = call
        if self._dead:  # the reader may have failed its waiting calls just before this one
            self._calls.pop(rid, None)
            raise EngineError(self._gone or "the rig's engine process has closed")
        try:
            with self._send_lock:
                self._conn.send((rid, op, args))
        except (OSError, ValueError) as exc:
            self._calls.pop(rid, None)
            raise EngineError(f"the rig's engine process has gone ({exc}); see {self.log_path}") from exc
        if not call.done.wait(timeout):
            self._calls.pop(rid, None)
            raise EngineError(f"the rig's engine did not answer {op!r} within {timeout:.0f} s; see {self.log_path}")
        if not call.ok:
            raise EngineError(call.value)
        return call.value

    def _action(self, op: str, *args: Any) -> bool | None:
        try:
            return True if self._call(op, *args) else None
        except EngineError as exc:
            if self.on_error is not None:
                self.on_error(str(exc))
            return None

    # ---- the Collector's interface ---------------------------------------------------------

    def open(self) -> None:
        self._action("open")

    def close(self) -> dict[str, str]:
        """Safe shutdown in the engine (take saved, followers stopped), then the process exits."""
        if self._closed_report is not None:
            return self._closed_report
        report: dict[str, str] = {}
        self._closing = True
        try:
            report = self._call("close", timeout=CLOSE_TIMEOUT_S)
        except EngineError:
            report = dict(self.view.shutdown_report)
        self._closed_report = report
        self.process.join(CLOSE_TIMEOUT_S)
        if self.process.is_alive():  # stuck in its safe close: stop it, then stop the followers here
            self.process.kill()
            self.process.join(CLOSE_TIMEOUT_S)
            report = self._closed_report = release_followers(self.config) or report
        with contextlib.suppress(OSError):
            self._conn.close()
        if self._view is not None:
            self._view = replace(self._view, state=State.CLOSED, shutdown_report=report)
        return report

    def drill(self, op: str, *args: Any) -> Any:
        """Simulated rig: inject a fault in the world (``unplug`` an arm, delay a camera)."""
        return self._call("drill", op, *args)

    def poll(self) -> None:
        """The engine polls itself; here only the view is refreshed."""
        with contextlib.suppress(EngineError):
            self._call("view")

    def snapshot(self, health: bool = True) -> Snapshot:
        v = self.view
        try:
            return self._call("snapshot", health)
        except EngineError:
            return Snapshot(v.state, v.message, [], {}, [], v.episode, 0.0, self.options.seconds or 0.0, self.task,
                            v.kept, v.last, False)

    def latest_frames(self, cameras: list[str], width: int = PREVIEW_WIDTH) -> dict[str, np.ndarray | None]:
        try:
            return self._call("previews", list(cameras), width)
        except EngineError:
            return {}

    def latest_frame(self, camera: str) -> np.ndarray | None:
        return self.latest_frames([camera]).get(camera)

    def camera_names(self) -> list[str]:
        return [c.name for c in self.config.cameras] if self.options.cameras else []

    # ---- state, as of the last reply -------------------------------------------------------

    @property
    def view(self) -> EngineView:
        if self._gone is not None:
            base = self._view or EngineView(State.FAULT, "")
            return replace(base, state=State.FAULT if self._closed_report is None else State.CLOSED,
                           message=self._gone, fault=self._gone)
        if self._view is None:
            return EngineView(State.STARTING, "starting the rig ...")
        return self._view

    @property
    def task(self) -> str:
        return resolve_task(self.config, self.options.task)[1]

    @property
    def dataset(self) -> Dataset | None:
        """The app's own reader of the dataset, once the engine has created it."""
        if self._dataset is None and (Path(self.options.dataset) / "zarr.json").exists():
            self._dataset = Dataset(self.options.dataset)
        return self._dataset

    def refresh(self) -> EngineView:
        """A fresh view now (tests and scripts that wait on the engine's state)."""
        self.poll()
        return self.view


def _proxy_action(name: str):
    def action(self: CollectorProcess, *args: Any) -> bool | None:
        return self._action(name, *args)

    action.__name__ = action.__qualname__ = name
    action.__doc__ = getattr(Actions, name).__doc__
    return action


def _view_field(name: str) -> property:
    return property(lambda self: getattr(self.view, name), doc=f"``{name}`` as of the engine's last reply")


# The proxy is derived from the one interface: an action is sent under its name, a view field is
# read from the last reply's view. (``notices`` the proxy collects itself, across replies.)
for _name in ACTIONS:
    setattr(CollectorProcess, _name, _proxy_action(_name))
for _name in VIEW_FIELDS:
    if _name != "notices":
        setattr(CollectorProcess, _name, _view_field(_name))
_missing = [a for a in ACTIONS if not callable(getattr(Collector, a, None))]
assert not _missing, f"the Collector lacks the interface's actions {_missing}"


__all__ = ["CollectorProcess", "EngineError", "EngineView", "engine_main", "release_followers", "yield_cpu_to_rig"]

"""The interface every camera implements, and the capture machinery they share.

A camera captures in its own background thread from ``start()`` to ``stop()``. Consumers never
block it: the UI peeks at ``latest()``; the recorder ``subscribe()``s to a bounded ``FrameQueue``
that drops its *oldest* frame when full (and counts it) rather than making the capture wait.

A watchdog thread raises ``fault`` when no frame has come for ``freeze_periods`` frame periods
(``CameraFrozen``; cleared when frames resume) or when the backend reports the device gone
(``CameraDisconnected``; final). Blocked ``FrameQueue.get()`` calls wake up and raise the fault.
"""

from __future__ import annotations

import abc
import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.cameras.frame import Frame
from drivers.errors import RigError

_NS = 1_000_000_000


class CameraFault(RigError):
    """A running camera stopped delivering frames."""


class CameraFrozen(CameraFault):
    """No frame for several frame periods; the device is still there (or cannot tell)."""


class CameraDisconnected(CameraFault):
    """The device went away (unplugged, stream ended, backend error); capture has stopped."""


@dataclass(frozen=True, slots=True)
class CameraStats:
    """A snapshot of one camera's health."""

    camera: str
    frames: int  # delivered since start()
    rate_hz: float  # measured over the last second
    drops: int  # frames missing from gaps in Frame.index
    overflows: int  # frames subscribers lost because their queue was full
    freezes: int  # times the watchdog found the camera frozen
    first_index: int | None  # frames + drops == last_index - first_index + 1
    last_index: int | None
    last_error: str | None
    fault: str | None  # the fault now in force, if any
    device_clock: str  # what Frame.t_device_ns means for this camera


class FrameQueue:
    """A bounded queue of frames for one consumer; putting never blocks.

    When full, ``put`` discards the oldest frame and counts it in ``overflows``. Once empty, ``get``
    raises the camera's fault (a ``CameraFault``) if the camera faulted, ``queue.Empty`` on timeout
    or when the camera was stopped: a consumer never waits on a camera that cannot deliver.
    """

    def __init__(self, maxsize: int, fault: Callable[[], CameraFault | None] = lambda: None):
        if maxsize < 1:
            raise ValueError(f"FrameQueue maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.overflows = 0
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._fault = fault
        self._closed = False
        self._ended = False  # the camera stopped: nothing more will come until it starts again
        self._on_close: Callable[[FrameQueue], None] | None = None

    def put(self, frame: Frame) -> None:
        with self._cond:
            if len(self._frames) >= self.maxsize:
                self._frames.popleft()
                self.overflows += 1
            self._frames.append(frame)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Frame:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._frames:
                fault = self._fault()
                if fault is not None:
                    raise fault
                if self._closed or self._ended:
                    raise queue.Empty("frame queue closed" if self._closed else "camera stopped")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)
            return self._frames.popleft()

    def get_nowait(self) -> Frame:
        with self._cond:
            if not self._frames:
                raise queue.Empty
            return self._frames.popleft()

    def drain(self) -> list[Frame]:
        """Everything queued now, oldest first."""
        with self._cond:
            frames = list(self._frames)
            self._frames.clear()
            return frames

    def wake(self) -> None:
        """Let blocked getters re-check the camera's fault."""
        with self._cond:
            self._cond.notify_all()

    def set_ended(self, ended: bool) -> None:
        """The camera stopped (True) or started (False); wakes blocked getters."""
        with self._cond:
            self._ended = ended
            self._cond.notify_all()

    def close(self) -> None:
        """Stop receiving frames (unsubscribes from the camera)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._on_close is not None:
            self._on_close(self)

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


class Camera(abc.ABC):
    """One camera: a background capture thread, a freeze watchdog, and frame fan-out.

    Subclasses implement ``_open`` (runs in ``start()``, in the caller's thread, so a missing
    device raises there), ``_grab`` (capture thread: wait up to ``timeout_s`` for the next frame)
    and ``_close``. They stamp ``t_host_ns = time.monotonic_ns()`` right when the backend returns.
    """

    device_clock = "none"  # subclasses say what their Frame.t_device_ns means

    def __init__(self, name: str, width: int, height: int, fps: float, *, freeze_periods: int = 10,
                 startup_timeout_s: float = 5.0):
        if width <= 0 or height <= 0 or fps <= 0:
            raise RigError(f"camera {name!r}: width, height and fps must be positive, got {width}x{height} at {fps}")
        self.name, self.width, self.height, self.fps = name, int(width), int(height), float(fps)
        self.freeze_periods = freeze_periods
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscribers: list[FrameQueue] = []
        self._running = False
        self._reset_counters()

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def period_s(self) -> float:
        return 1.0 / self.fps

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Open the device and start capturing. Idempotent; may follow ``stop()``."""
        with self._lock:
            if self._running:
                return
            self._reset_counters()
            self._stop_event.clear()
        self._open()
        self._started_ns = time.monotonic_ns()
        self._running = True
        for q in self._snapshot_subscribers():
            q.set_ended(False)
        self._threads = [
            threading.Thread(target=self._capture_loop, name=f"camera-{self.name}", daemon=True),
            threading.Thread(target=self._watchdog_loop, name=f"camera-{self.name}-watchdog", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop capturing and release the device. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._stop_event.set()
        capture = self._threads[0]
        for t in self._threads:
            t.join(timeout=max(2.0, 3 * self.period_s))
        # A backend stuck in a blocking read keeps its handle: closing it under the reading
        # thread could crash the process. The daemon thread dies with the process instead.
        if not capture.is_alive():
            self._close()
        self._threads = []
        for q in self._snapshot_subscribers():
            q.set_ended(True)

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- consumers -------------------------------------------------------------------------

    def latest(self) -> Frame | None:
        """The newest frame, without waiting (for previews)."""
        return self._latest

    def subscribe(self, maxsize: int = 8) -> FrameQueue:
        """A queue receiving every frame from now on; the oldest is dropped when it is full."""
        q = FrameQueue(maxsize, fault=lambda: self._fault)
        q._on_close = self.unsubscribe
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: FrameQueue) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)
                self._retired_overflows += q.overflows

    @property
    def fault(self) -> CameraFault | None:
        """The fault in force (frozen or disconnected), or None while healthy."""
        return self._fault

    def raise_if_faulted(self) -> None:
        if self._fault is not None:
            raise self._fault

    def stats(self) -> CameraStats:
        now = time.monotonic_ns()
        with self._lock:
            times = self._recent
            while times and times[0] <= now - _NS:
                times.popleft()
            # Intervals over their span; with fewer than two frames in the window, the count.
            rate = (len(times) - 1) * _NS / (times[-1] - times[0]) if len(times) >= 2 else float(len(times))
            overflows = self._retired_overflows + sum(q.overflows for q in self._subscribers)
            fault = self._fault
            return CameraStats(
                camera=self.name,
                frames=self._frames,
                rate_hz=rate,
                drops=self._drops,
                overflows=overflows,
                freezes=self._freezes,
                first_index=self._first_index,
                last_index=self._last_index,
                last_error=self._last_error,
                fault=None if fault is None else str(fault),
                device_clock=self.device_clock,
            )

    # ---- subclass hooks --------------------------------------------------------------------

    @abc.abstractmethod
    def _open(self) -> None:
        """Acquire the device; raise a RigError naming the device and the fix if it cannot."""

    @abc.abstractmethod
    def _grab(self, timeout_s: float) -> Frame | None:
        """Wait up to about ``timeout_s`` for the next frame; None if none came.

        Raise ``CameraDisconnected`` when the device is gone.
        """

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the device."""

    # ---- machinery -------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self._latest: Frame | None = None
        self._fault: CameraFault | None = None
        self._frames = 0
        self._drops = 0
        self._freezes = 0
        self._first_index: int | None = None
        self._last_index: int | None = None
        self._last_frame_ns: int | None = None
        self._last_error: str | None = None
        self._recent: collections.deque[int] = collections.deque()
        self._retired_overflows = 0
        self._started_ns = time.monotonic_ns()

    def _snapshot_subscribers(self) -> list[FrameQueue]:
        with self._lock:
            return list(self._subscribers)

    def _capture_loop(self) -> None:
        timeout = max(2 * self.period_s, 0.02)
        while not self._stop_event.is_set():
            try:
                frame = self._grab(timeout)
            except CameraFault as fault:
                self._set_fault(fault)
                return
            except Exception as exc:  # an unexpected backend error ends capture just the same
                self._set_fault(CameraDisconnected(
                    f"camera {self.name!r}: capture failed ({type(exc).__name__}: {exc}); "
                    "check the device connection and restart the camera"
                ))
                return
            if frame is not None and not self._stop_event.is_set():
                self._publish(frame)

    def _publish(self, frame: Frame) -> None:
        with self._lock:
            if self._last_index is None:
                self._first_index = frame.index
            elif frame.index > self._last_index + 1:
                self._drops += frame.index - self._last_index - 1
            self._last_index = frame.index
            self._frames += 1
            self._last_frame_ns = frame.t_host_ns
            self._recent.append(frame.t_host_ns)
            while self._recent and self._recent[0] <= frame.t_host_ns - _NS:
                self._recent.popleft()
            self._latest = frame
            if isinstance(self._fault, CameraFrozen):
                self._fault = None  # frames flow again; stats keep the count and last_error
            subscribers = list(self._subscribers)
        for q in subscribers:
            q.put(frame)

    def _set_fault(self, fault: CameraFault) -> None:
        with self._lock:
            if isinstance(self._fault, CameraDisconnected):
                return  # final: nothing overrides a disconnect
            self._fault = fault
            self._last_error = str(fault)
            if isinstance(fault, CameraFrozen):
                self._freezes += 1
            subscribers = list(self._subscribers)
        for q in subscribers:
            q.wake()

    def _watchdog_loop(self) -> None:
        tick = min(max(self.period_s / 2, 0.005), 0.1)
        limit_ns = int(self.freeze_periods * self.period_s * _NS)
        while not self._stop_event.wait(tick):
            if self._fault is not None:
                continue
            now = time.monotonic_ns()
            last = self._last_frame_ns
            if last is None:
                waited = now - self._started_ns
                if waited > max(limit_ns, int(self.startup_timeout_s * _NS)):
                    self._set_fault(CameraFrozen(
                        f"camera {self.name!r} started but sent no frame within {waited / _NS:.1f} s; "
                        "check that the device streams at the configured resolution/fps "
                        "and that no other program holds it"
                    ))
            elif now - last > limit_ns:
                self._set_fault(CameraFrozen(
                    f"camera {self.name!r} froze: no frame for {(now - last) / _NS:.2f} s "
                    f"({self.freeze_periods} periods at {self.fps:g} fps) after frame {self._last_index}; "
                    "check its USB cable and bandwidth (several cameras on one hub often starve) "
                    "or lower its resolution/fps"
                ))

"""Command sources: what the control loop sends the followers towards, one row per tick.

A source only proposes targets; the loop (rig/loop.py) does everything else the same way for
all of them: bus reads, the engage blend, joint limits, the step clamp, alert checks, deadlines
and tick records. Sources:

- :class:`Leaders` (teleop): each follower mirrors its leader.
- :class:`Replay`: a recorded take's actions, one row per tick; the loop then re-engages on the
  leaders.
- :class:`Pose`: a fixed pose (a policy's start pose).
- :class:`Hold`: the targets stay where they are (a rig without leaders, between sources).
- :class:`PolicySource`: a policy's chunked predictions, optionally temporally ensembled (ACT).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.errors import RigError

if TYPE_CHECKING:
    from rig.loop import ControlLoop


class CommandSource:
    """Base of the command sources. ``name`` is one of rig.ticks.SOURCES (the tick record's
    ``source``); ``uses_leaders``: a leader's missed or glitched read holds its follower;
    ``failure``: why the source cannot drive (one line; the loop holds the followers and reports it)."""

    name = "leaders"
    uses_leaders = False
    failure: str | None = None

    def attach(self, loop: ControlLoop) -> None:
        """Check the source fits the loop; called on the caller's thread by ``loop.use()``."""

    def begin(self, loop: ControlLoop, k: int) -> None:
        """The source takes over at tick ``k`` (called on the loop thread)."""

    def end(self) -> None:
        """The loop stopped using this source (switched away, or shut down)."""

    def target(self, loop: ControlLoop, k: int) -> np.ndarray | None:
        """The wanted follower targets for tick ``k`` (rig units, the loop's n values), or None
        when the source has nothing more to send (the loop falls back on the leaders)."""
        raise NotImplementedError


class Leaders(CommandSource):
    """Teleop: every follower mirrors its leader. ``takeover``: the operator took over from a
    policy (recorded as source "takeover")."""

    uses_leaders = True

    def __init__(self, takeover: bool = False):
        self.name = "takeover" if takeover else "leaders"

    def target(self, loop: ControlLoop, k: int) -> np.ndarray:
        return loop.leader_q


class Replay(CommandSource):
    """A recorded take: ``actions`` (T, n), one row per tick from the switch on."""

    name = "replay"

    def __init__(self, actions: np.ndarray):
        self.actions = np.asarray(actions, dtype=np.float64)
        self.i = 0  # the next row

    def attach(self, loop: ControlLoop) -> None:
        if self.actions.ndim != 2 or self.actions.shape[1] != loop.n:
            raise RigError(f"replay needs actions of shape (T, {loop.n}); got {self.actions.shape}")

    def target(self, loop: ControlLoop, k: int) -> np.ndarray | None:
        if self.i >= len(self.actions):
            return None
        row = self.actions[self.i]
        self.i += 1
        return row


class Pose(CommandSource):
    """Go to and hold one pose (the engage blend makes the way there smooth)."""

    def __init__(self, q: np.ndarray, name: str = "policy"):
        self.q = np.asarray(q, dtype=np.float64)
        self.name = name

    def attach(self, loop: ControlLoop) -> None:
        if self.q.shape != (loop.n,):
            raise RigError(f"a pose for this rig has {loop.n} values; got shape {self.q.shape}")

    def target(self, loop: ControlLoop, k: int) -> np.ndarray:
        return self.q


class Hold(CommandSource):
    """Keep the targets where they are: what a rig without leaders falls back on."""

    def target(self, loop: ControlLoop, k: int) -> np.ndarray:
        return loop.target


class PolicySource(CommandSource):
    """A policy drives: every ``execute`` ticks it predicts the next K actions from the latest
    camera frames and the followers' state; each tick sends the chunk's action for that tick
    (tied to time: skipped ticks skip actions too).

    ``ensemble`` (ACT's temporal ensembling, m): predict every ``execute`` ticks and send the
    average of every chunk's action for this tick, older chunks weighted exp(-m * age) heavier.

    Prediction is off the tick. Attached to a control loop (``loop.use``) with ``worker`` on (the
    default), a worker thread predicts: the tick hands it the followers' q/dq when a chunk is due
    (``PREFETCH_TICKS`` early, so it is ready when needed), the worker reads the cameras' latest
    frames (the JPEG round trip), predicts and hands back (tick of the observation, chunk); each
    tick takes the newest ready chunk and never waits on torch or a codec. Until the first chunk
    is ready the followers hold. If the policy or its inputs fail (it raises, a camera has no
    frames), ``failure`` says so in one line, the followers hold and the loop goes on ticking.
    Not attached to a loop, or ``worker=False``, it predicts inline and a failure raises: the
    fast simulator's direct loop (rig/train/fastsim.py), which must stay deterministic.

    The policy: attributes ``cfg.k``, ``cfg.n``, ``cfg.cameras``, ``cfg.image_hw``; optional
    ``reset()`` (called when it takes over); ``predict_chunk(images uint8 (ncam, H, W, 3) at
    cfg.image_hw after the JPEG round trip, q float32, dq float32) -> (k, n)``. ``cameras``: the
    opened cameras named by ``cfg.cameras``, in that order.
    """

    name = "policy"
    PREFETCH_TICKS = 1  # ask this many ticks before a chunk is due: a prediction takes < 1 tick

    def __init__(self, policy: Any, cameras: Sequence[Any] = (), execute: int | None = None,
                 ensemble: float | None = None, worker: bool = True):
        self.policy = policy
        self.cameras = list(cameras)
        self.execute, self.ensemble = chunk_schedule(policy, execute, ensemble)
        k = policy.cfg.k
        self._chunks: collections.deque = collections.deque(maxlen=k)  # (tick predicted at, chunk)
        self.hw = tuple(policy.cfg.image_hw)
        self._small = np.zeros((len(self.cameras), *self.hw, 3), np.uint8)  # the latest frames, decoded
        self._seen = [-1] * len(self.cameras)  # their frame indices
        self.worker = worker
        self.failure: str | None = None  # why the policy stopped predicting (the followers hold)
        self.chunks_predicted = 0
        # The worker's two bounded slots (a deque of one: appending replaces, both ends are atomic).
        self._requests: collections.deque = collections.deque(maxlen=1)  # (generation, tick, q, dq)
        self._ready: collections.deque = collections.deque(maxlen=1)  # (generation, tick, chunk)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False
        self._gen = 0
        self._due = 0  # the tick the next chunk is due at (asked for PREFETCH_TICKS before)
        self._reset_pending = False

    def attach(self, loop: ControlLoop) -> None:
        if self.policy.cfg.n != loop.n:
            raise RigError(f"the policy predicts {self.policy.cfg.n} values but the rig's followers have {loop.n}")
        if self.worker and self._thread is None:  # started here, on the caller's thread, not in a tick
            self._thread = threading.Thread(target=self._thread_main, name="policy-worker", daemon=True)
            self._thread.start()

    def begin(self, loop: ControlLoop, k: int) -> None:
        self._chunks.clear()
        if self._thread is None:
            reset = getattr(self.policy, "reset", None)
            if reset is not None:
                reset()
            return
        self._gen += 1
        self._ready.clear()
        self._reset_pending = True  # the worker resets the policy before its next prediction
        self._ask(loop, k)

    def end(self) -> None:
        """The loop no longer runs this source: the worker ends after its prediction in flight."""
        self._ended = True
        self._wake.set()

    def target(self, loop: ControlLoop, k: int) -> np.ndarray:
        if self._thread is None:
            return self._target_inline(loop, k)
        chunks = self._chunks
        try:
            gen, k0, chunk = self._ready.popleft()
            if gen == self._gen:
                chunks.append((k0, chunk))
        except IndexError:
            pass
        if k >= self._due - self.PREFETCH_TICKS:
            self._ask(loop, k)
        if self.failure is not None or not chunks:
            return loop.target  # hold: nothing (right) to send
        if self.ensemble is None:
            k0, chunk = chunks[-1]
            return chunk[min(max(k - k0, 0), len(chunk) - 1)]
        return _ensembled(chunks, k, self.ensemble)

    def _ask(self, loop: ControlLoop, k: int) -> None:
        """Hand the worker this tick's observation (the cameras it reads itself)."""
        if self.failure is not None:
            return
        self._requests.append((self._gen, k, loop.follower_q.astype(np.float32),
                               loop.follower_dq.astype(np.float32)))
        self._due = k + self.PREFETCH_TICKS + self.execute  # from its observation at k, used from k + 1
        self._wake.set()

    def _target_inline(self, loop: ControlLoop, k: int) -> np.ndarray:
        chunks = self._chunks
        if not chunks or k - chunks[-1][0] >= self.execute:
            chunk = self.policy.predict_chunk(self.images(), loop.follower_q.astype(np.float32),
                                              loop.follower_dq.astype(np.float32))
            chunks.append((k, np.asarray(chunk)))
            self.chunks_predicted += 1
        if self.ensemble is None:
            k0, chunk = chunks[-1]
            return chunk[min(k - k0, len(chunk) - 1)]
        return _ensembled(chunks, k, self.ensemble)

    def _thread_main(self) -> None:
        """The worker's body: predict the newest observation handed over, until ended or failed."""
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._ended:
                return
            try:
                gen, k, q, dq = self._requests.popleft()
            except IndexError:
                continue
            try:
                if self._reset_pending:
                    self._reset_pending = False
                    reset = getattr(self.policy, "reset", None)
                    if reset is not None:
                        reset()
                chunk = np.asarray(self.policy.predict_chunk(self.images(), q, dq), dtype=np.float64)
                n = self.policy.cfg.n
                if chunk.ndim != 2 or chunk.shape[1] != n or not np.isfinite(chunk).all():
                    raise RigError(f"the policy predicted a chunk of shape {chunk.shape} (with NaN or inf: "
                                   f"{not np.isfinite(chunk).all()}), not finite (k, {n}) actions")
            except Exception as exc:  # the policy or its inputs: the followers hold, the loop goes on
                self.failure = failure_line(exc)
                return
            self._ready.append((gen, k, chunk))
            self.chunks_predicted += 1

    def images(self) -> np.ndarray:
        """The latest frame of each camera, as the policy was trained on it: the same JPEG round
        trip and down-scaling as the recorded frames. Each frame is decoded once (cameras run at
        15 fps, predictions up to every tick)."""
        if not self.cameras:
            return self._small
        from recorder.codec import encode_jpeg
        from rig.downscale import decode_small, reduction

        for i, cam in enumerate(self.cameras):
            frame = cam.latest()
            if frame is None:
                raise RigError(f"camera {cam.name!r} delivers no frames; the policy needs it")
            if self._seen[i] == frame.index:
                continue
            blob = encode_jpeg(frame.data) if frame.encoding == "rgb8" else bytes(frame.data)
            self._small[i] = decode_small(blob, self.hw, reduction(cam.width, cam.height, self.hw))
            self._seen[i] = frame.index
        return self._small


def failure_line(exc: BaseException) -> str:
    """A policy's failure as the one line the app and the CLI show."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, RigError):
        return f"the policy stopped: {text}; the followers hold"
    return f"the policy stopped: it raised {type(exc).__name__}" + (f": {text[:200]}" if text else "") + \
        "; the followers hold"


def chunk_schedule(policy: Any, execute: int | None = None, ensemble: float | None = None) -> tuple[int, float | None]:
    """How a policy's chunks are sent: (a new chunk every ``execute`` ticks, ensembling m or None).
    Unless the caller says, the policy's own choice (attributes ``execute``, ``ensemble``, the
    way it was trained to run), else a new chunk every K/2 ticks; ensembling averages
    overlapping chunks, so by default it predicts every tick, as ACT."""
    if execute is None and ensemble is None:
        execute, ensemble = getattr(policy, "execute", None), getattr(policy, "ensemble", None)
    k = policy.cfg.k
    return min(k, execute or (1 if ensemble is not None else max(1, k // 2))), ensemble


def _ensembled(chunks, k: int, m: float) -> np.ndarray:
    """The action for tick ``k``: every chunk that covers it, oldest weighted heaviest (as ACT)."""
    acts, ws = [], []
    for age, (k0, c) in enumerate(chunks):
        if 0 <= k - k0 < len(c):
            acts.append(c[k - k0])
            ws.append(np.exp(-m * age))
    w = np.asarray(ws)
    return (np.asarray(acts) * w[:, None]).sum(0) / w.sum()

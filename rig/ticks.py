"""What the teleop loop hands to everyone else: one record per tick, through bounded queues."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(slots=True)
class TickRecord:
    """One control tick. Vectors hold every arm's values in config order (ALOHA: left then
    right, 6 joints in radians + the gripper normalized 0 closed .. 1 open)."""

    tick: int  # k: this tick was due at t0 + k * period
    t_deadline_ns: int
    t_start_ns: int  # when the tick actually began (monotonic)
    t_end_ns: int  # when the follower goals had been sent
    leader_q: np.ndarray
    follower_q: np.ndarray
    follower_dq: np.ndarray  # rad/s (gripper: normalized units/s)
    follower_current: np.ndarray  # mA (load-reporting servos: percent)
    action: np.ndarray  # the follower targets sent this tick, same units as follower_q
    missed: int = 0  # bitmask over arms whose read failed this tick (their last value is held)
    engage: float = 1.0  # soft-engage progress: 0 at start, 1 once mirroring


class TickSink(Protocol):
    def put(self, record: TickRecord) -> None:
        """Take a record without ever blocking the loop."""


class TickQueue:
    """A bounded queue for tick records: a full queue drops the record and counts it."""

    def __init__(self, maxsize: int = 512):
        self.q: queue.Queue[TickRecord] = queue.Queue(maxsize)
        self.dropped = 0

    def put(self, record: TickRecord) -> None:
        try:
            self.q.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def get(self, timeout: float | None = None) -> TickRecord | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[TickRecord]:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out


class FanOut:
    """Hand each record to several sinks (recorder, UI, trainer), each with its own queue."""

    def __init__(self, *sinks: TickSink):
        self.sinks = list(sinks)

    def put(self, record: TickRecord) -> None:
        for s in self.sinks:
            s.put(record)

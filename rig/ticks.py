"""What the control loop hands to everyone else: one record per tick, through bounded queues.

:class:`TickRecord` is the one definition of a tick's fields. The recorder's stream definition
(:func:`tick_fields`) and the row a writer appends (:meth:`TickRecord.row`) are derived from it, so
a field is added here once and reaches the episodes and their readers.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

# Which command source drove a tick: the `source` field holds the index into this tuple.
# "takeover": the leaders, after an operator moved a leader away while a policy drove.
SOURCES = ("leaders", "replay", "policy", "takeover")
SOURCE_CODES = {name: i for i, name in enumerate(SOURCES)}


def _scalar(dtype: str, **default):
    return field(metadata={"dtype": dtype, "vector": False}, **default)


def _vector():
    return field(metadata={"dtype": "f4", "vector": True})


@dataclass(slots=True)
class TickRecord:
    """One control tick. Vectors hold every follower's values in config order (ALOHA: left then
    right, 6 joints in radians + the gripper normalized 0 closed .. 1 open); ``leader_q`` holds
    each follower's leader, in the same order."""

    tick: int = _scalar("i8")  # k: this tick was due at t0 + k * period
    t_deadline_ns: int = _scalar("i8")
    t_start_ns: int = _scalar("i8")  # when the tick actually began (monotonic): the row's time
    t_end_ns: int = _scalar("i8")  # when the follower goals had been sent
    leader_q: np.ndarray = _vector()
    follower_q: np.ndarray = _vector()
    follower_dq: np.ndarray = _vector()  # rad/s (gripper: normalized units/s)
    follower_current: np.ndarray = _vector()  # mA (load-reporting servos: percent)
    action: np.ndarray = _vector()  # the follower targets sent this tick, same units as follower_q
    missed: int = _scalar("i4", default=0)  # bitmask over arms whose read failed (their last value held)
    engage: float = _scalar("f4", default=1.0)  # blend progress: 0 at a switch of source, 1 once blended in
    source: int = _scalar("u1", default=0)  # index into SOURCES: who drove this tick

    def row(self) -> dict:
        """This record as a recorder row: the :func:`tick_fields` values (the time is t_start_ns)."""
        return {name: getattr(self, name) for name in _ROW}


TIME_FIELD = "t_start_ns"  # a stream row's own time, not one of its fields
_ROW = tuple(f.name for f in fields(TickRecord) if f.name != TIME_FIELD)


def tick_fields(n: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """The recorder's stream definition of tick rows for a rig with ``n`` values: name ->
    (shape, dtype), derived from :class:`TickRecord`."""
    out = {}
    for f in fields(TickRecord):
        if f.name != TIME_FIELD:
            out[f.name] = ((n,) if f.metadata["vector"] else (), f.metadata["dtype"])
    return out


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

"""Match camera frames to control ticks on the one monotonic clock."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """For each tick: the latest frame captured at or before it.

    ``indices[i]`` is a row of the camera's arrays (-1: no frame yet at tick i);
    ``skew_ns[i]`` = tick time - (frame time - latency), -1 where there is no frame.
    """

    indices: np.ndarray
    skew_ns: np.ndarray
    latency_ns: int
    ticks_without_frame: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def summary(self) -> dict[str, float | int]:
        return {
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "ticks_without_frame": self.ticks_without_frame,
            "latency_ns": self.latency_ns,
        }


def align_frames_to_ticks(tick_t_ns: np.ndarray, frame_t_ns: np.ndarray, latency_ns: int = 0) -> Alignment:
    """Index of the latest frame whose capture time (``frame_t_ns - latency_ns``) is <= each tick.

    ``latency_ns`` is the camera's known delay between exposure and host stamp; subtracting it
    moves each frame back to when it was really seen.
    """
    ticks = np.asarray(tick_t_ns, dtype=np.int64)
    frames = np.asarray(frame_t_ns, dtype=np.int64) - np.int64(latency_ns)
    order = None
    if frames.size > 1 and np.any(np.diff(frames) < 0):  # stamps out of order: search a sorted view
        order = np.argsort(frames, kind="stable")
        frames = frames[order]
    pos = np.searchsorted(frames, ticks, side="right") - 1
    has = pos >= 0
    indices = np.full(ticks.shape, -1, dtype=np.int64)
    skew = np.full(ticks.shape, -1, dtype=np.int64)
    if frames.size:
        chosen = pos[has]
        skew[has] = ticks[has] - frames[chosen]
        indices[has] = chosen if order is None else order[chosen]
    valid = skew[has] / 1e6
    if valid.size:
        p50, p99, mx = (float(np.percentile(valid, 50)), float(np.percentile(valid, 99)), float(valid.max()))
    else:
        p50 = p99 = mx = float("nan")
    return Alignment(indices, skew, int(latency_ns), int((~has).sum()), p50, p99, mx)

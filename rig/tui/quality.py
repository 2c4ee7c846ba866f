"""The figures a collector needs to judge a take at a glance, and the flags the episode list shows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recorder.dataset import Episode
from recorder.inspect import inspect_episode
from rig.config import DEFAULT_RATE_HZ
from rig.recording import JOINTS

IDLE_S = 2.0  # a stretch this long with no joint moving is worth a look
JUMP_RAD = 1.0  # no arm moves a joint this far in one 20 ms tick: such a step is a bad reading


@dataclass
class Quality:
    index: int
    duration_s: float
    ticks: int
    dropped_frames: dict[str, int] = field(default_factory=dict)  # per camera: counter gaps + writer drops
    max_skew_ms: float | None = None  # worst frame-to-tick distance over all cameras
    overruns: int = 0  # ticks that ended after the next tick was due
    skipped_ticks: int = 0  # deadlines the loop skipped to catch up
    idle: list[tuple[float, float]] = field(default_factory=list)  # (start s, length s)
    jumps: int = 0  # ticks where a leader or follower value leapt implausibly (a corrupt read)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped_frames.values())

    def flags(self, period_s: float = 0.02) -> list[str]:
        out = []
        if self.total_dropped:
            out.append(f"drops:{self.total_dropped}")
        if self.max_skew_ms is not None and self.max_skew_ms > 1e3 * period_s * 2:
            out.append(f"skew:{self.max_skew_ms:.0f}ms")
        if self.overruns or self.skipped_ticks:
            out.append(f"overruns:{self.overruns}")
        if self.idle:
            out.append(f"idle:{sum(d for _, d in self.idle):.1f}s")
        if self.jumps:
            out.append(f"jumps:{self.jumps}")
        return out

    def lines(self) -> list[str]:
        drops = ", ".join(f"{c} {n}" for c, n in self.dropped_frames.items()) or "no cameras"
        idle = ", ".join(f"{s:.1f} s for {d:.1f} s" for s, d in self.idle[:4]) or "none"
        skew = "n/a" if self.max_skew_ms is None else f"{self.max_skew_ms:.1f} ms"
        return [
            f"duration      {self.duration_s:.1f} s, {self.ticks} ticks",
            f"dropped       {drops}",
            f"max skew      {skew}",
            f"overruns      {self.overruns} (skipped ticks {self.skipped_ticks})",
            f"idle ≥{IDLE_S:g} s    {idle}",
            f"jumps         {self.jumps} ticks with a step > {JUMP_RAD:g} rad",
        ]


def episode_quality(ep: Episode) -> Quality:
    """Drops, skew, overruns and idle stretches of one episode (tens of ms for a 20 s take)."""
    report = inspect_episode(ep, tick_stream=JOINTS if JOINTS in ep.streams else None, idle_s=IDLE_S)
    info = ep.info
    q = Quality(ep.index, report.duration_s, 0)
    for cam in report.cameras:
        q.dropped_frames[cam.name] = cam.dropped + int(info.dropped.get(cam.name, 0))
        if cam.skew and cam.skew.get("max_ms") is not None:
            q.max_skew_ms = max(q.max_skew_ms or 0.0, float(cam.skew["max_ms"]))
    for s in report.streams:
        if s.name == report.tick_stream:
            q.ticks = s.samples
            q.idle = list(s.idle)
            q.skipped_ticks = s.skipped_ticks or 0
    if JOINTS in ep.streams:
        data = ep.read_stream(JOINTS)
        rate = ep.group[f"streams/{JOINTS}"].attrs.get("rate_hz") or DEFAULT_RATE_HZ
        period_ns = int(1e9 / float(rate))
        if "t_end_ns" in data and "t_deadline_ns" in data and len(data["t_end_ns"]):
            late = data["t_end_ns"].astype(np.int64) - data["t_deadline_ns"].astype(np.int64)
            q.overruns = int(np.count_nonzero(late > period_ns))
        bad = np.zeros(max(0, len(data.get("t_ns", [])) - 1), bool)
        for name in ("leader_q", "follower_q"):
            if name in data and len(data[name]) > 1:
                bad |= np.abs(np.diff(data[name].astype(np.float64), axis=0)).max(axis=1) > JUMP_RAD
        q.jumps = int(bad.sum())
    return q

"""Health report of an episode: drops, freezes, skew, loop overruns, stalls and idle time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from recorder import layout
from recorder.dataset import Episode
from recorder.errors import RecorderError
from recorder.layout import DEADLINE_FIELDS, END_FIELD, T_NS, TICK_FIELD

IDLE_FIELDS = ("leader_q", "follower_q")


@dataclass
class StreamReport:
    name: str
    samples: int
    nominal_hz: float | None
    measured_hz: float | None
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start s, length s)
    skipped_ticks: int | None = None  # gaps in the tick counter
    late_ticks: int | None = None  # started (t_ns) later than deadline + tolerance
    lateness_ms: dict[str, float] | None = None  # p50/p99/max of t_ns - deadline
    overruns: int | None = None  # work ended (t_end_ns) after the next tick's deadline
    idle: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class CameraReport:
    name: str
    frames: int
    nominal_fps: float | None
    measured_fps: float | None
    dropped: int  # frames missing from the driver's counter
    freezes: list[tuple[float, float]] = field(default_factory=list)  # no frame for a while
    skew: dict[str, float | int] | None = None  # vs the tick stream


@dataclass
class InspectReport:
    index: int
    status: str
    success: bool | None
    duration_s: float
    tick_stream: str | None
    streams: list[StreamReport]
    cameras: list[CameraReport]

    def to_dict(self) -> dict:
        return asdict(self)


def _gaps(
    t: np.ndarray, period_s: float, factor: float, t0: int, t_end: int | None
) -> list[tuple[float, float]]:
    """Stretches with no sample for more than ``factor`` periods (including at the start and end)."""
    if period_s <= 0:
        return []
    limit = int(period_s * factor * 1e9)
    edges = np.concatenate(([t0], t, [t_end])) if t_end is not None else np.concatenate(([t0], t))
    d = np.diff(edges)
    idx = np.flatnonzero(d > limit)
    return [(round((edges[i] - t0) / 1e9, 3), round(d[i] / 1e9, 3)) for i in idx]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index runs where ``mask`` is True."""
    if not mask.size:
        return []
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _rate(t: np.ndarray) -> float | None:
    if t.size < 2:
        return None
    med = float(np.median(np.diff(t)))
    return round(1e9 / med, 2) if med > 0 else None


def pick_tick_stream(ep: Episode) -> str | None:
    names = ep.streams
    for n in names:
        if TICK_FIELD in ep.group[f"{layout.STREAMS}/{n}"]:
            return n
    if "joints" in names:
        return "joints"
    return names[0] if names else None


def inspect_episode(
    ep: Episode,
    tick_stream: str | None = None,
    latency_ns: Mapping[str, int] | None = None,
    stall_factor: float = 3.0,
    idle_s: float = 2.0,
    idle_eps: float = 1e-3,
    late_tolerance_ns: int | None = None,
) -> InspectReport:
    attrs = ep.attrs
    info = ep.info
    if tick_stream is not None and tick_stream not in ep.streams:
        have = ", ".join(ep.streams) or "no streams"
        raise RecorderError(f"episode {ep.index} has no stream {tick_stream!r} to align frames to (it has {have}); "
                            "give one of those to --tick-stream, or leave it out")
    tick_stream = tick_stream or pick_tick_stream(ep)
    all_t = [ep.read_stream(n)[T_NS] for n in ep.streams]  # checked reads: damage is named, never zeros
    all_t += [ep.frame_times(c)[T_NS] for c in ep.cameras]
    firsts = [int(t[0]) for t in all_t if t.size]
    lasts = [int(t[-1]) for t in all_t if t.size]
    # The episode spans from start() to stop(), or to the last sample after a crash/recovery.
    t0 = min([int(attrs.get("start_monotonic_ns") or 0) or (min(firsts) if firsts else 0), *firsts])
    t_end = (
        max([int(attrs.get("stop_monotonic_ns") or 0), *lasts])
        if (lasts or attrs.get("stop_monotonic_ns"))
        else t0
    )

    streams = []
    tick_t = None
    for name in ep.streams:
        data = ep.read_stream(name)
        t = data[T_NS]
        if name == tick_stream:
            tick_t = t
        nominal = ep.group[f"{layout.STREAMS}/{name}"].attrs.get("rate_hz")
        period = 1.0 / nominal if nominal else (1.0 / (_rate(t) or 1.0))
        rep = StreamReport(name, int(t.size), nominal, _rate(t), _gaps(t, period, stall_factor, t0, t_end))
        if TICK_FIELD in data and t.size:
            d = np.diff(data[TICK_FIELD].astype(np.int64))
            rep.skipped_ticks = int(np.clip(d - 1, 0, None).sum())
        deadline_field = next((f for f in DEADLINE_FIELDS if f in data), None)
        if deadline_field is not None and t.size:
            deadline = data[deadline_field].astype(np.int64)
            late = t - deadline
            tol = late_tolerance_ns if late_tolerance_ns is not None else int(period * 1e9 * 0.1)
            rep.late_ticks = int((late > tol).sum())
            rep.lateness_ms = {
                "p50": round(float(np.percentile(late, 50)) / 1e6, 3),
                "p99": round(float(np.percentile(late, 99)) / 1e6, 3),
                "max": round(float(late.max()) / 1e6, 3),
            }
            if END_FIELD in data:
                rep.overruns = int((data[END_FIELD].astype(np.int64) > deadline + int(period * 1e9)).sum())
        for f in IDLE_FIELDS:
            if f in data and t.size > 1:
                q = data[f].reshape(t.size, -1).astype(np.float64)
                still = np.abs(np.diff(q, axis=0)).max(axis=1) <= idle_eps
                for a, b in _runs(still):
                    length = (t[b] - t[a]) / 1e9
                    if length >= idle_s:
                        rep.idle.append((round((t[a] - t0) / 1e9, 3), round(length, 3)))
                break
        streams.append(rep)

    cameras = []
    for cam in ep.cameras:
        ft = ep.frame_times(cam)
        t, idx = ft[T_NS], ft[layout.INDEX]
        nominal = ep.group[f"{layout.CAMERAS}/{cam}"].attrs.get("fps")
        period = 1.0 / nominal if nominal else (1.0 / (_rate(t) or 1.0))
        dropped = int(np.clip(np.diff(idx) - 1, 0, None).sum()) if idx.size > 1 else 0
        rep_c = CameraReport(
            cam, int(t.size), nominal, _rate(t), dropped, _gaps(t, period, stall_factor, t0, t_end)
        )
        if tick_t is not None and tick_t.size:
            from recorder.align import align_frames_to_ticks

            al = align_frames_to_ticks(tick_t, t, (latency_ns or {}).get(cam, ep.camera_latency_ns(cam)))
            rep_c.skew = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in al.summary().items()}
        cameras.append(rep_c)
    return InspectReport(
        info.index, info.status, info.success, round(info.duration_s, 3), tick_stream, streams, cameras
    )


def _spans(spans: list[tuple[float, float]], limit: int = 5) -> str:
    if not spans:
        return "none"
    txt = ", ".join(f"{s:.2f}s+{d:.2f}s" for s, d in spans[:limit])
    return txt + (f" (+{len(spans) - limit} more)" if len(spans) > limit else "")


def format_report(r: InspectReport) -> str:
    lines = [
        f"episode {r.index}: status={r.status} success={r.success} duration={r.duration_s:.2f}s "
        f"tick stream={r.tick_stream}"
    ]
    for s in r.streams:
        lines.append(
            f"  stream {s.name}: {s.samples} samples, {s.measured_hz} Hz (nominal {s.nominal_hz}); "
            f"stalls: {_spans(s.stalls)}"
        )
        if s.skipped_ticks is not None:
            lines.append(f"    skipped ticks: {s.skipped_ticks}")
        if s.late_ticks is not None:
            over = "" if s.overruns is None else f"; {s.overruns} ticks overran their period"
            lines.append(f"    loop: {s.late_ticks} late ticks; lateness ms {s.lateness_ms}{over}")
        if s.idle:
            lines.append(f"    idle: {_spans(s.idle)}")
    for c in r.cameras:
        lines.append(
            f"  camera {c.name}: {c.frames} frames, {c.measured_fps} fps (nominal {c.nominal_fps}); "
            f"dropped {c.dropped}; freezes: {_spans(c.freezes)}"
        )
        if c.skew:
            lines.append(
                f"    skew to ticks ms: p50 {c.skew['p50_ms']} p99 {c.skew['p99_ms']} max {c.skew['max_ms']}; "
                f"ticks without frame {c.skew['ticks_without_frame']}"
            )
    return "\n".join(lines)

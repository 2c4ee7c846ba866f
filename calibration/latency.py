"""Camera latency: how long after the joints a camera's frames arrive, measured from motion.

A frame stamped ``t`` (host clock, on delivery) shows the world as it was at ``t - latency``. The
image change between two consecutive frames measures how much moved between their captures; the
joints say how much moved between any two instants. Shifting the joint record by a candidate
latency ``L`` and correlating "joint travel between ``t[i-1] - L`` and ``t[i] - L``" with "image
change between frames ``i-1`` and ``i``" peaks at the true latency. (UMI measures its latencies the
same way: by correlating a motion seen two ways.)

Pure functions over arrays; ``collect_live`` records the two signals from a running rig and
``estimate_episode`` reads them from a recorded episode.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.arm import CalibrationError

THUMB = (80, 60)  # frames are compared at this size: motion, not detail, matters
MAX_LAG_S = 0.5
STEP_S = 0.001
MIN_TRAVEL = 0.5  # rad, summed over joints and time: less is not enough motion to measure
MIN_IMAGE_CHANGE = 0.2  # grey levels: frame-to-frame change must vary by more than this
MAX_TICK_GAP_S = 0.05  # joint samples further apart than this (median) cannot place motion in time
MAX_LOST_FRACTION = 0.5  # ... and no more than this share of the record may lie in gaps twice that long
MIN_CORRELATION = 0.65  # below this the motion was too little or too uniform to trust the peak


@dataclass(frozen=True)
class LatencyEstimate:
    camera: str
    latency_ns: int
    correlation: float  # correlation of image change and joint travel at the peak
    frames: int
    frame_period_ms: float
    lags_s: np.ndarray = field(repr=False, compare=False)
    curve: np.ndarray = field(repr=False, compare=False)  # correlation per lag

    @property
    def latency_ms(self) -> float:
        return self.latency_ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ns": int(self.latency_ns), "correlation": round(float(self.correlation), 4),
                "frames": int(self.frames), "frame_period_ms": round(float(self.frame_period_ms), 3),
                "method": "sqrt frame-difference energy vs sqrt joint travel, cross-correlated over lags"}


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A small grey image (float32) of a frame, for motion energy."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


def motion_energy(thumbs: np.ndarray) -> np.ndarray:
    """Mean absolute change between consecutive thumbnails: (F,) -> (F-1,)."""
    t = np.asarray(thumbs, dtype=np.float32)
    return np.abs(np.diff(t, axis=0)).reshape(len(t) - 1, -1).mean(axis=1)


def joint_travel(t_ns: np.ndarray, q: np.ndarray, a_ns: np.ndarray, b_ns: np.ndarray) -> np.ndarray:
    """Sum over joints of |q(b) - q(a)| for each interval (a, b), q linearly interpolated."""
    t = (np.asarray(t_ns, dtype=np.int64) - t_ns[0]).astype(np.float64)
    qa = np.stack([np.interp(a_ns - t_ns[0], t, q[:, j]) for j in range(q.shape[1])], axis=1)
    qb = np.stack([np.interp(b_ns - t_ns[0], t, q[:, j]) for j in range(q.shape[1])], axis=1)
    return np.abs(qb - qa).sum(axis=1)


def estimate_latency(camera: str, joint_t_ns: np.ndarray, joint_q: np.ndarray, frame_t_ns: np.ndarray,
                     energy: np.ndarray, *, max_lag_s: float = MAX_LAG_S, step_s: float = STEP_S,
                     min_correlation: float = MIN_CORRELATION) -> LatencyEstimate:
    """The lag (s) that best lines joint travel up with image change; ``energy[i]`` is the change
    between frames ``i`` and ``i+1``."""
    jt = np.asarray(joint_t_ns, dtype=np.int64)
    if len(jt) < 10:
        raise CalibrationError(f"camera {camera!r}: only {len(jt)} joint samples were recorded; is the control loop "
                               "running (and reading every arm)?")
    q = np.asarray(joint_q, dtype=np.float64).reshape(len(jt), -1)
    ft = np.asarray(frame_t_ns, dtype=np.int64)
    e = np.asarray(energy, dtype=np.float64)
    if len(ft) != len(e) + 1:
        raise ValueError("energy must have one value per pair of consecutive frames")
    gaps = np.diff(jt) / 1e9 if len(jt) > 1 else np.array([np.inf])
    lost = float(gaps[gaps > 2 * MAX_TICK_GAP_S].sum() / gaps.sum()) if np.isfinite(gaps).all() else 1.0
    if np.median(gaps) > MAX_TICK_GAP_S or lost > MAX_LOST_FRACTION:
        raise CalibrationError(
            f"camera {camera!r}: the joint record is too sparse ({lost:.0%} of it in gaps over "
            f"{2 * MAX_TICK_GAP_S * 1e3:.0f} ms): the control loop could not keep its rate. Close other busy "
            "programs and record again")
    travel = float(np.abs(np.diff(q, axis=0)).sum()) if len(q) > 1 else 0.0
    if travel < MIN_TRAVEL:
        raise CalibrationError(f"camera {camera!r}: the arms hardly moved ({travel:.2f} rad of joint travel in all); "
                               "move the arms in view of the camera, with pauses and bursts of motion, and record again")
    lags = np.arange(0.0, max_lag_s + step_s / 2, step_s)  # a frame cannot show what has not happened yet
    # Only frame pairs whose shifted interval lies inside the joint record at every lag.
    lo, hi = jt[0] + int(max_lag_s * 1e9), jt[-1] - int(max_lag_s * 1e9)
    keep = (ft[:-1] - int(max_lag_s * 1e9) >= jt[0]) & (ft[1:] + int(max_lag_s * 1e9) <= jt[-1])
    keep &= ft[1:] > ft[:-1]
    if keep.sum() < 10 or lo >= hi:
        raise CalibrationError(f"camera {camera!r}: only {int(keep.sum())} frames overlap the joint record; record "
                               f"longer (at least {2 * max_lag_s + 3:.0f} s of motion)")
    a, b, ek = ft[:-1][keep], ft[1:][keep], e[keep]
    if np.ptp(ek) < MIN_IMAGE_CHANGE:
        raise CalibrationError(f"camera {camera!r}: its image hardly changes between frames; is it covered, frozen or "
                               "pointed away from the arms? Point it at the arms and record again")
    # Correlation of image change with joint travel, per lag, both square-rooted: how much an
    # image changes grows with travel but also with how near the moving parts are to the lens
    # (a wrist camera by its own gripper), so the big values tell little about timing. Roots tame
    # them. (Tried on recorded sim runs: plain, rank, log and prewhitened series all wandered
    # further from the true latency.)
    e0 = _standard(np.sqrt(ek))
    curve = np.empty(len(lags))
    for k, lag in enumerate(lags):
        d = joint_travel(jt, q, a - int(lag * 1e9), b - int(lag * 1e9))
        curve[k] = float(np.mean(e0 * _standard(np.sqrt(d))))
    best = int(np.argmax(curve))
    r = float(curve[best])
    period = float(np.median(np.diff(ft)) / 1e6)
    if r < min_correlation:
        raise CalibrationError(
            f"camera {camera!r}: image motion and joint motion hardly correlate (best r = {r:.2f} < {min_correlation}); "
            "move the arms in view of the camera, with pauses and bursts of motion, and record again")
    return LatencyEstimate(camera, int(round(lags[best] * 1e9)), r, int(keep.sum()), period, lags, curve)


def _standard(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


# ---- gathering the signals ------------------------------------------------------------------------

@dataclass
class Recording:
    joint_t_ns: np.ndarray
    joint_q: np.ndarray
    frame_t_ns: dict[str, np.ndarray]
    thumbs: dict[str, np.ndarray]
    device_t_ns: dict[str, np.ndarray] = field(default_factory=dict)  # the cameras' own stamps (0: none)

    def estimate(self, **kw) -> dict[str, LatencyEstimate]:
        return {cam: estimate_latency(cam, self.joint_t_ns, self.joint_q, self.frame_t_ns[cam],
                                      motion_energy(self.thumbs[cam]), **kw) for cam in self.thumbs}


class TickCollector:
    """A tick sink keeping when each tick read the arms and the follower values it read.

    The sample time is the middle of the tick's read-compute-write span (``t_start_ns`` ..
    ``t_end_ns``): the reads happen inside it, and on a loaded machine it can last a good part of
    a tick. Ticks where a bus read failed hold stale values and are left out. Never blocks.
    """

    def __init__(self, maxsize: int = 100_000):
        self.q: queue.Queue = queue.Queue(maxsize)

    def put(self, record: Any) -> None:
        if getattr(record, "missed", 0):
            return
        try:
            t = (record.t_start_ns + record.t_end_ns) // 2 if record.t_end_ns else record.t_start_ns
            self.q.put_nowait((t, np.array(record.follower_q, dtype=np.float64)))
        except queue.Full:
            pass

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        while True:
            try:
                rows.append(self.q.get_nowait())
            except queue.Empty:
                break
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0))
        return np.array([r[0] for r in rows], np.int64), np.stack([r[1] for r in rows])


def collect_live(cameras: Mapping[str, Any], ticks: TickCollector, seconds: float,
                 on_progress: Any = None, *, min_frames: int = 0, max_seconds: float | None = None) -> Recording:
    """Thumbnails of every frame of ``cameras`` and the ticks that ``ticks`` gathers, for ``seconds``
    (longer, up to ``max_seconds``, until every camera delivered ``min_frames``: a loaded machine
    renders or captures fewer frames than asked).

    The caller runs the rig (teleop with ``ticks`` as its sink) and makes the arms move.
    """
    subs = {name: cam.subscribe(maxsize=256) for name, cam in cameras.items()}
    times: dict[str, list[int]] = {n: [] for n in cameras}
    device: dict[str, list[int]] = {n: [] for n in cameras}
    thumbs: dict[str, list[np.ndarray]] = {n: [] for n in cameras}
    ticks.take()  # from now on
    start = time.monotonic()
    end = start + seconds
    hard_end = start + max(seconds, max_seconds or seconds)
    try:
        while True:
            now = time.monotonic()
            if now >= hard_end or (now >= end and min(map(len, times.values()), default=0) >= min_frames):
                break
            for name, q in subs.items():
                for f in q.drain():
                    if f.encoding != "rgb8":
                        import cv2
                        rgb = cv2.cvtColor(cv2.imdecode(f.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                    else:
                        rgb = f.data
                    times[name].append(f.t_host_ns)
                    device[name].append(f.t_device_ns or 0)
                    thumbs[name].append(thumbnail(rgb))
            if on_progress is not None:
                on_progress(time.monotonic() - start)
            time.sleep(0.02)
    finally:
        for name, q in subs.items():
            cameras[name].unsubscribe(q)
    jt, jq = ticks.take()
    return Recording(jt, jq, {n: np.array(v, np.int64) for n, v in times.items()},
                     {n: np.stack(v) if v else np.zeros((0, THUMB[1], THUMB[0]), np.float32)
                      for n, v in thumbs.items()},
                     {n: np.array(v, np.int64) for n, v in device.items()})


def estimate_episode(episode: Any, cameras: Iterable[str] | None = None, stream: str = "joints",
                     **kw) -> dict[str, LatencyEstimate]:
    """Latency of each camera of a recorded episode (``recorder.Episode``)."""
    joints = episode.read_stream(stream)
    out = {}
    for cam in cameras or episode.cameras:
        ft = episode.frame_times(cam)["t_ns"]
        frames = episode.read_frames(cam)
        thumbs = np.stack([thumbnail(f) for f in frames])
        out[cam] = estimate_latency(cam, joints["t_ns"], joints["follower_q"], ft, motion_energy(thumbs), **kw)
    return out

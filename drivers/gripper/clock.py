"""Device clock -> host monotonic clock, from ping/echo exchanges.

Each exchange gives host send/receive times around one device receive time. The device time is
paired with the host midpoint; the error of that pairing is at most half the round trip, and
delays (USB polling, a busy device loop, scheduler hiccups) only ever make a round trip longer.
So only the quickest exchanges of the window are trusted, and a Theil-Sen line through them
(median of pairwise slopes: outliers cannot drag it) gives offset and drift together.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

NS_PER_US = 1000.0


@dataclass(frozen=True)
class ClockFit:
    """host_ns = host_ref_ns + slope * (device_us - device_ref_us); slope is ns per device us."""

    device_ref_us: int
    host_ref_ns: int
    slope: float
    points: int
    span_s: float

    @property
    def drift_ppm(self) -> float:
        """How much faster the device clock runs than the host's (positive = device fast)."""
        return (NS_PER_US / self.slope - 1.0) * 1e6

    def to_host_ns(self, device_us: int) -> int:
        return self.host_ref_ns + round(self.slope * (device_us - self.device_ref_us))


@dataclass(frozen=True)
class Exchange:
    host_tx_ns: int
    host_rx_ns: int
    device_us: int

    @property
    def rtt_ns(self) -> int:
        return self.host_rx_ns - self.host_tx_ns

    @property
    def host_mid_ns(self) -> float:
        return (self.host_tx_ns + self.host_rx_ns) / 2.0


class ClockSync:
    """Thread-safe running estimate of the device->host clock mapping.

    window: exchanges kept (at 10 pings/s, 600 = the last minute: long enough to see drift).
    keep_fraction: share of the window, quickest round trips first, used for the fit.
    min_span_s: below this span of device time the slope is taken as nominal (drift unknowable).
    max_drift_ppm: a fitted drift beyond this is treated as a bad fit (a crystal is within ~100).
    """

    def __init__(
        self,
        window: int = 600,
        keep_fraction: float = 0.15,
        min_span_s: float = 1.0,
        max_drift_ppm: float = 1000.0,
        max_fit_points: int = 60,
    ) -> None:
        self._exchanges: deque[Exchange] = deque(maxlen=window)
        self._keep = keep_fraction
        self._min_span_s = min_span_s
        self._max_drift_ppm = max_drift_ppm
        self._max_fit_points = max_fit_points
        self._fit: ClockFit | None = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget everything: the device rebooted and its clock started again."""
        with self._lock:
            self._exchanges.clear()
            self._fit = None

    def add(self, host_tx_ns: int, host_rx_ns: int, device_us: int) -> None:
        if host_rx_ns < host_tx_ns:
            return
        with self._lock:
            self._exchanges.append(Exchange(host_tx_ns, host_rx_ns, device_us))
            self._fit = self._compute()

    @property
    def fit(self) -> ClockFit | None:
        with self._lock:
            return self._fit

    @property
    def ready(self) -> bool:
        return self.fit is not None

    @property
    def exchanges(self) -> int:
        with self._lock:
            return len(self._exchanges)

    def to_host_ns(self, device_us: int) -> int | None:
        fit = self.fit
        return None if fit is None else fit.to_host_ns(device_us)

    def _compute(self) -> ClockFit | None:
        ex = list(self._exchanges)
        if not ex:
            return None
        rtt = np.array([e.rtt_ns for e in ex], dtype=np.float64)
        n_keep = max(min(len(ex), 3), int(len(ex) * self._keep))
        chosen = np.argsort(rtt, kind="stable")[:n_keep]
        if len(chosen) > self._max_fit_points:
            # Spread the fit points over the whole window: evenly in time, not just the quickest
            # burst, so the slope sees the full span.
            chosen = np.sort(chosen)
            chosen = chosen[np.linspace(0, len(chosen) - 1, self._max_fit_points).round().astype(int)]
        dev = np.array([ex[i].device_us for i in chosen], dtype=np.float64)
        host = np.array([ex[i].host_mid_ns for i in chosen], dtype=np.float64)
        ref_dev = float(dev.min())
        ref_host = float(host.min())
        x = dev - ref_dev
        y = host - ref_host
        span_s = float(x.max()) * 1e-6
        slope = NS_PER_US
        if len(x) >= 3 and span_s >= self._min_span_s:
            i, j = np.triu_indices(len(x), k=1)
            dx = x[j] - x[i]
            ok = dx > 0.2 * x.max()  # pairs too close in time say nothing about the slope
            if ok.any():
                candidate = float(np.median((y[j] - y[i])[ok] / dx[ok]))
                if abs(NS_PER_US / candidate - 1.0) * 1e6 <= self._max_drift_ppm:
                    slope = candidate
        intercept = float(np.median(y - slope * x))
        return ClockFit(
            device_ref_us=int(ref_dev),
            host_ref_ns=int(round(ref_host + intercept)),
            slope=slope,
            points=len(x),
            span_s=span_s,
        )

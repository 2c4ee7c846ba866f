"""Clock-sync estimator on synthetic exchanges with known truth."""

from __future__ import annotations

import random

from drivers.gripper.clock import ClockSync


def simulate(sync: ClockSync, *, drift_ppm: float, seconds: float, rate_hz: float, rng: random.Random,
             offset_ns: int = 5_000_000_000, spike_ns: int = 3_000_000) -> callable:
    """Feed pings; device clock = (host - offset) * (1 + drift). Returns truth: device_us -> host_ns."""
    scale = 1 + drift_ppm * 1e-6
    t = offset_ns + 1_000_000
    for _ in range(int(seconds * rate_hz)):
        up = 40_000 + rng.expovariate(1 / 30_000)      # host -> device, one-sided delays
        down = 40_000 + rng.expovariate(1 / 30_000)
        if rng.random() < 0.1:
            up += rng.uniform(0, spike_ns)                # a busy device loop / USB hiccup
        rx_host = t + up
        device_us = round((rx_host - offset_ns) * scale / 1000)
        sync.add(round(t), round(rx_host + down), device_us)
        t += 1e9 / rate_hz
    return lambda dev_us: offset_ns + dev_us * 1000 / scale


def test_offset_and_drift_recovered_despite_spikes():
    rng = random.Random(1)
    sync = ClockSync()
    truth = simulate(sync, drift_ppm=50, seconds=20, rate_hz=10, rng=rng)
    fit = sync.fit
    assert abs(fit.drift_ppm - 50) < 5
    for dev_us in (1_000_000, 10_000_000, 20_000_000, 25_000_000):  # the last is 5 s extrapolated
        assert abs(sync.to_host_ns(dev_us) - truth(dev_us)) < 50_000


def test_negative_drift_and_few_points():
    sync = ClockSync()
    assert sync.fit is None and sync.to_host_ns(5) is None
    truth = simulate(sync, drift_ppm=-80, seconds=0.3, rate_hz=10, rng=random.Random(2))
    fit = sync.fit
    assert fit.slope == 1000.0  # span too short to see drift: nominal slope, offset only
    assert abs(sync.to_host_ns(200_000) - truth(200_000)) < 100_000
    simulate(sync, drift_ppm=-80, seconds=10, rate_hz=10, rng=random.Random(3))
    assert abs(sync.fit.drift_ppm + 80) < 10


def test_reset_forgets_the_old_epoch():
    sync = ClockSync()
    simulate(sync, drift_ppm=0, seconds=2, rate_hz=10, rng=random.Random(4))
    assert sync.exchanges == 20
    sync.reset()
    assert sync.fit is None and sync.exchanges == 0


def test_absurd_slope_falls_back_to_nominal():
    sync = ClockSync(min_span_s=0.5)
    for i in range(20):  # device clock running at twice the host rate: not a crystal, a bug
        sync.add(i * 100_000_000, i * 100_000_000 + 50_000, i * 200_000)
    assert sync.fit.slope == 1000.0

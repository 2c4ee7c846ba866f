"""How fast the Python side decodes gripper frames and refits the clock.

    python benchmarks/bench_gripper_decode.py
"""

from __future__ import annotations

import random
import time

from drivers.gripper import protocol as p
from drivers.gripper.clock import ClockSync


def bench_decode(n: int = 20_000) -> float:
    names = p.LAYOUTS[p.MsgType.SAMPLE][0]
    stream = b"".join(p.encode(p.MsgType.SAMPLE, **dict.fromkeys(names, 0) | {"seq": i}) for i in range(n))
    dec = p.FrameDecoder()
    t0 = time.perf_counter()
    got = 0
    for i in range(0, len(stream), 4096):  # typical serial read sizes
        got += len(dec.feed(stream[i : i + 4096]))
    dt = time.perf_counter() - t0
    assert got == n
    return n / dt


def bench_clock_add(n: int = 600) -> float:
    rng = random.Random(0)
    sync = ClockSync()
    t0 = time.perf_counter()
    for i in range(n):
        t = i * 100_000_000
        sync.add(t, t + 80_000 + int(rng.expovariate(1 / 30_000)), i * 100_000)
    return (time.perf_counter() - t0) / n


if __name__ == "__main__":
    rate = bench_decode()
    print(f"decode: {rate:,.0f} samples/s ({rate / 200:,.0f}x the 200 Hz stream)")
    per_add = bench_clock_add()
    print(f"clock refit per ping (window full): {per_add * 1e3:.2f} ms (10 pings/s)")

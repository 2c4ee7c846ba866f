"""Teleop on the simulated rig: 4 arms of 9 servos, emulated wire timing at 1 Mbaud.

Runs, one after the other in one invocation: 50 Hz with the sim cameras rendering (MuJoCo's CPU
renderer shares the cores), 50 Hz and 200 Hz with cameras off. Reports achieved rate, period error p50/p99/max, overruns, tick CPU time, the
command latency (leader read to follower goal sent, within a tick) and the tracking lag of the
followers behind the leaders (cross-correlation of joint velocities).

    python benchmarks/bench_teleop.py [--seconds 60]
    python benchmarks/bench_teleop.py --only scheduling [--seconds 30]

The scheduling section runs 50 Hz with cameras on three ways in one invocation: alone, beside two
CPU hogs (plain Python busy loops, one per core) with the config's default `[loop] realtime =
"auto"`, and beside the same hogs with realtime off.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os

import numpy as np

from rig.config import LoopConfig, load_config
from rig.session import RigSession
from rig.ticks import TickQueue


def tracking_lag_ms(recs, period_s: float) -> float:
    """Lag (ms) at which the leader's past pose best explains the follower's pose (RMS, joints only)."""
    lead = np.array([r.leader_q for r in recs])
    foll = np.array([r.follower_q for r in recs])
    joints = [i for i in range(lead.shape[1]) if i % 7 != 6]  # grippers follow their own dynamics
    lead, foll = lead[:, joints], foll[:, joints]
    errs = [float(np.sqrt(np.mean((lead[: len(lead) - lag] - foll[lag:]) ** 2))) for lag in range(0, 25)]
    best = int(np.argmin(errs))
    if 0 < best < len(errs) - 1:  # parabolic refinement between ticks
        a, b, c = errs[best - 1], errs[best], errs[best + 1]
        best += 0.5 * (a - c) / (a - 2 * b + c)
    return best * period_s * 1e3


def _hog() -> None:
    while True:
        pass


@contextlib.contextmanager
def hogs(n: int):
    procs = [mp.Process(target=_hog, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.join()


def run(rate: float, seconds: float, cameras: bool, realtime: str | int = "auto") -> dict:
    cfg = load_config("sim-aloha")
    cfg = dataclasses.replace(cfg, rate_hz=rate, loop=LoopConfig(realtime))
    sink = TickQueue(int(rate * (seconds + 10)))
    with RigSession(cfg, sink=sink, cameras=cameras) as s:
        summary = s.run(seconds)
        world_stats = s.world.stats() if s.world else {}
    recs = sink.drain()
    engaged = [r for r in recs if r.engage >= 1.0]
    cmd = np.array([(r.t_end_ns - r.t_start_ns) / 1e6 for r in engaged])
    summary["command_latency_ms"] = {"p50": float(np.median(cmd)), "p99": float(np.percentile(cmd, 99))}
    summary["tracking_lag_ms"] = tracking_lag_ms(engaged, 1.0 / rate)
    summary["world_rtf"] = world_stats.get("rtf")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", choices=["rates", "scheduling"], default=None)
    args = ap.parse_args()
    results = {}
    if args.only in (None, "rates"):
        results["50 Hz, cameras on"] = run(50.0, args.seconds, True)
        results["50 Hz, cameras off"] = run(50.0, args.seconds, False)
        results["200 Hz, cameras off"] = run(200.0, args.seconds, False)
    if args.only in (None, "scheduling"):
        n = os.cpu_count() or 2
        results["50 Hz, cameras on, alone"] = run(50.0, args.seconds, True)
        with hogs(2):
            results["... beside 2 CPU hogs"] = run(50.0, args.seconds, True)
            results["... beside 2 CPU hogs, realtime off"] = run(50.0, args.seconds, True, "off")
        print(f"({n} cores)")
    print("| run | achieved Hz | period err p50 / p99 / max ms | overruns | tick CPU p50 ms | "
          "command latency p50 ms | tracking lag ms | bus errors | loop scheduling |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        pe = r["period_error_ms"]
        print(f"| {name} | {r['achieved_rate_hz']:.2f} | {pe['p50']:.3f} / {pe['p99']:.3f} / {pe['max']:.2f} | "
              f"{r['overruns']} | {r['tick_cpu_ms']['p50']:.2f} | {r['command_latency_ms']['p50']:.2f} | "
              f"{r['tracking_lag_ms']:.0f} | {sum(r['bus_errors'].values())} | {r['scheduling']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

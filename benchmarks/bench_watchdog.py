"""How soon the followers stop after `rig teleop` is killed outright (kill -9).

A leader/follower pair of emulated buses lives in this process (it outlives the killed rig);
`rig teleop` runs in its own process with [safety] watchdog_ms (default 100). The leader waves,
so the follower is moving when rig dies. Per run: time from the kill to the moment every
follower servo's Bus Watchdog had fired and it stopped where it was (the emulator's own state),
and the same from the last instruction packet the servos heard. Median over the runs.

    python benchmarks/bench_watchdog.py [--runs 5] [--watchdog-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rigs import WavingHand, pair_buses, pair_config  # noqa: E402  (the tests' two-arm rig)

from drivers.dynamixel.emulator import EmulatedBus  # noqa: E402
from rig.session import wait_until  # noqa: E402


def wait_for(predicate, timeout: float) -> bool:
    return wait_until(predicate, timeout, interval=0.002)


def one_run(watchdog_ms: float) -> dict | None:
    buses: list[EmulatedBus] = []

    def emulated(specs, baud=1_000_000, **kw):
        bus = EmulatedBus(specs, baud, **kw)
        bus.start()
        buses.append(bus)
        return bus

    leader, follower = pair_buses(emulated)
    hand = WavingHand(leader)
    hand.start()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pair_config(Path(tmp), leader, follower, watchdog_ms=watchdog_ms, engage_seconds=0.2)
        proc = subprocess.Popen([sys.executable, "-m", "rig", "teleop", "--config", cfg.source],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            servos = [follower.servo(i) for i in (1, 2, 3, 4, 5)]
            units = round(watchdog_ms / 20)
            if not wait_for(lambda: all(s.get("bus_watchdog") == units and s.torque_enabled for s in servos), 30):
                return None
            time.sleep(1.0)
            if any(s.watchdog_fired for s in servos) or proc.poll() is not None:
                return None  # the loop stalled past the watchdog before the kill: not this measurement
            os.kill(proc.pid, signal.SIGKILL)
            t_kill = time.monotonic()
            if not wait_for(lambda: all(s.watchdog_fired for s in servos), 5):
                return {"stopped": False}
            last = max(s.last_instruction for s in servos)
            fired = max(s.watchdog_fired_at for s in servos)
            return {"stopped": True, "kill_to_stop_s": fired - t_kill, "last_packet_to_stop_s": fired - last}
        finally:
            hand.stop.set()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for b in buses:
                b.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--watchdog-ms", type=float, default=100.0)
    args = ap.parse_args()
    runs, skipped = [], 0
    while len(runs) < args.runs and skipped < 3 * args.runs:
        r = one_run(args.watchdog_ms)
        if r is None:
            skipped += 1
            continue
        runs.append(r)
        print(json.dumps(r), flush=True)
    stops = [r["kill_to_stop_s"] for r in runs if r["stopped"]]
    summary = {
        "watchdog_ms": args.watchdog_ms,
        "runs": len(runs),
        "never_stopped": sum(not r["stopped"] for r in runs),
        "skipped_stalled_before_kill": skipped,
        "kill_to_stop_s": {"median": statistics.median(stops), "max": max(stops)} if stops else None,
        "last_packet_to_stop_s_median": statistics.median(r["last_packet_to_stop_s"] for r in runs if r["stopped"])
        if stops else None,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

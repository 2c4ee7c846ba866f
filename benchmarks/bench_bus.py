"""Bus round trip: sync read (current+velocity+position) + sync write of goal positions.

9 servos, return delay 0, at 1 Mbaud and 4 Mbaud. The emulator runs in its own process
(`rig sim-bus`) so it does not share the driver's interpreter. Side by side in one run:
our blocking port vs dynamixel-sdk's stock PortHandler (which spins while it waits), and Fast
Sync Read vs plain Sync Read. CPU is the driver thread's own CPU time per transaction. Transactions run back to back, so each
one also waits for the previous sync write's bytes to leave the wire.

    python benchmarks/bench_bus.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
from dynamixel_sdk import PortHandler

from drivers.dynamixel.bus import DynamixelBus
from drivers.dynamixel.errors import DynamixelError

N, L = 9, 10  # servos; bytes in present current+velocity+position


def wire_limit_s(baud: int, fast: bool) -> float:
    """Bytes on the wire for one read+write transaction, at 10 bits per byte."""
    instruction = 14 + N
    replies = 8 + N * (L + 4) if fast else N * (11 + L)
    write = 14 + N * (1 + 4)
    return (instruction + replies + write) * 10 / baud


def start_emulator(baud: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "rig", "sim-bus", "--servos", str(N), "--model", "xm540-w270",
                             "--baud", str(baud)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


class StockSdkBus(DynamixelBus):
    """The same bus over dynamixel-sdk's own PortHandler, for comparison."""

    def __init__(self, port: str, baud: int, **kw):
        super().__init__(port, baud, **kw)
        self.port = PortHandler(port)
        self.port.lost = False


def measure(bus: DynamixelBus, fast: bool, seconds: float) -> dict:
    ids = list(range(1, N + 1))
    reader = bus.reader(ids, "present_current", "present_position")
    reader.use_fast = fast
    writer = bus.writer(ids, "goal_position")
    goals = np.full(N, 2048)
    walls, cpus, errors = [], [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            reader.read()
        except DynamixelError:
            errors += 1  # a starved machine: counted, not timed
            continue
        writer.write(goals)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
    walls.sort()
    return {
        "p50_ms": 1e3 * walls[len(walls) // 2],
        "p99_ms": 1e3 * walls[int(len(walls) * 0.99)],
        "cpu_ms": 1e3 * statistics.median(cpus),
        "cpu_share": sum(cpus) / sum(walls),
        "n": len(walls),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    rows = []
    for baud in (1_000_000, 4_000_000):
        proc, port = start_emulator(baud)
        try:
            for label, cls in (("rig port", DynamixelBus), ("stock SDK port", StockSdkBus)):
                for fast in (True, False):
                    with cls(port, baud, timeout_margin_ms=20) as bus:
                        r = measure(bus, fast, args.seconds)
                    limit = wire_limit_s(baud, fast) * 1e3
                    rows.append((baud, label, "fast sync read" if fast else "sync read", limit, r))
        finally:
            proc.terminate()
            proc.wait()
    print("| baud | port | read | wire limit ms | p50 ms | p99 ms | p50/limit | CPU ms/txn | CPU/wall | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for baud, label, kind, limit, r in rows:
        print(f"| {baud / 1e6:g}M | {label} | {kind} | {limit:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['p50_ms'] / limit:.2f}x | {r['cpu_ms']:.3f} | {100 * r['cpu_share']:.0f}% | {r['errors']} |")


if __name__ == "__main__":
    main()

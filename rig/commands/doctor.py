"""`rig doctor`: what stands between this machine and a working bus."""

from __future__ import annotations

import os
import sys

from drivers.dynamixel.setup import (
    candidate_ports,
    fix_return_delays,
    in_dialout,
    inspect_port,
    reboot_faulted,
)
from rig import realtime


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check ports, permissions, latency timers, return delays, duplicate IDs")
    p.add_argument("ports", nargs="*", help="ports to check (default: every USB-serial adapter found)")
    p.add_argument("--baud", type=int, default=1_000_000)
    p.add_argument("--fix", action="store_true",
                   help="set return delay 0 on every servo of the chain (torque off while writing)")
    p.add_argument("--reboot", action="store_true", help="reboot servos in hardware error (fix the cause first)")
    p.set_defaults(func=run)


def run(args) -> int:
    problems: list[str] = []
    ok, line = realtime.availability("auto")
    print(f"scheduling: {line}")
    if not in_dialout():
        problems.append("you are not in the dialout group: sudo usermod -aG dialout $USER, then log in again")
    ports = args.ports or candidate_ports()
    if not ports:
        print("no USB-serial adapters found (/dev/serial/by-id, /dev/ttyUSB*, /dev/ttyACM*).")
        print("Plug in the U2D2 / adapter, or try the simulated rig: `rig sim-bus` then `rig doctor PORT`.")
    for port in ports:
        if not os.path.exists(port):  # not a permission matter: nothing is there to open
            problems.append(f"{port} does not exist; check the USB cable and the path (ls /dev/serial/by-id/)")
            continue
        for done in (fix_return_delays(port, args.baud) if args.fix else []) + \
                (reboot_faulted(port, args.baud) if args.reboot else []):
            print(f"done: {done}")
        rep = inspect_port(port, args.baud)
        latency = "n/a" if rep.latency_timer_ms is None else f"{rep.latency_timer_ms} ms"
        print(f"{port} -> {rep.resolved}: latency timer {latency}, {len(rep.servos)} servo(s) at {args.baud} baud")
        for s in rep.servos:
            rdt = rep.return_delays.get(s.id)
            delay = "?" if rdt is None else f"{rdt * 2} µs"
            print(f"  ID {s.id:>3}  {s.model_name:<14} fw {s.firmware:<3} return delay {delay}")
        problems += rep.problems
    if problems:
        print("\nproblems:")
        for p in problems:
            print(f"  - {p}")
        print(f"rig: doctor found {len(problems)} problem(s), listed above", file=sys.stderr)
        return 2  # what every expected failure returns (README), so scripts can tell it from a crash
    print("no problems found")
    return 0

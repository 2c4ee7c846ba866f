"""`rig sim-bus`: a standalone emulated servo chain on a pty, for any tool to talk to."""

from __future__ import annotations

import signal
import threading

from drivers.dynamixel.control_table import MODELS
from drivers.dynamixel.emulator import EmulatedBus, ServoSpec
from rig.commands.argtypes import int_range, positive_int


def register(sub) -> None:
    p = sub.add_parser("sim-bus", help="start an emulated Dynamixel chain on a pty and print its port")
    p.add_argument("--servos", type=int_range(1, 253), default=9, help="number of servos, IDs from 1 (default 9)")
    p.add_argument("--model", default="xm430-w350", choices=sorted(MODELS))
    p.add_argument("--baud", type=positive_int, default=1_000_000)
    p.add_argument("--return-delay", type=int_range(0, 254), default=0, help="Return Delay Time register (x2 µs)")
    p.add_argument("--no-wire-timing", action="store_true", help="answer at once instead of at wire speed")
    p.set_defaults(func=run)


def run(args) -> int:
    specs = [ServoSpec(id=i + 1, model=args.model, return_delay=args.return_delay) for i in range(args.servos)]
    bus = EmulatedBus(specs, args.baud, wire_timing=not args.no_wire_timing, name="sim-bus")
    port = bus.start()
    print(port, flush=True)
    print(f"{args.servos} x {args.model} at {args.baud} baud; Ctrl-C to stop", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        bus.stop()
    return 0

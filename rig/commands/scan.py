"""`rig scan PORT [--baud B]`: every servo on a port."""

from __future__ import annotations

import sys

from drivers.dynamixel.setup import SCAN_ORDER, scan


def register(sub) -> None:
    p = sub.add_parser("scan", help="list every servo on a port (ID, model, firmware, baud)")
    p.add_argument("port", help="serial port, e.g. /dev/serial/by-id/usb-FTDI_... or a `rig sim-bus` pty")
    p.add_argument("--baud", type=int, action="append",
                   help="baud to try (repeatable); default: every standard Dynamixel rate")
    p.set_defaults(func=run)


def run(args) -> int:
    bauds = args.baud or SCAN_ORDER
    print(f"scanning {args.port} at {', '.join(map(str, bauds))} baud ...", flush=True)
    servos = scan(args.port, bauds)
    if not servos:
        print(f"rig: no servos answered on {args.port}; check power and cabling (a factory-new servo answers at "
              f"57600 baud)", file=sys.stderr)
        return 2  # an expected failure, as every other
    print(f"{'ID':>4}  {'model':<14} {'firmware':>8}  {'baud':>8}")
    for s in servos:
        print(f"{s.id:>4}  {s.model_name:<14} {s.firmware:>8}  {s.baud:>8}")
    ids = [s.id for s in servos]
    if len(set(ids)) != len(ids):
        print("warning: the same ID answers at two bauds; give each servo its own ID (`rig setup-motors`).")
    return 0

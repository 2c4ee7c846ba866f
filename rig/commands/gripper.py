"""`rig gripper {monitor,standin}`: the handheld gripper's live monitor and its host stand-in."""

from __future__ import annotations

import argparse
import os
import time

from drivers.gripper.driver import GripperConfig, HandheldGripper
from drivers.gripper.standin import build_host_firmware
from rig.commands.argtypes import nonnegative_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gripper", help="handheld gripper: live monitor, host stand-in")
    gsub = parser.add_subparsers(dest="gripper_command", metavar="ACTION", required=True)

    mon = gsub.add_parser("monitor", help="connect and print jaw, trigger, buttons, rate and clock sync")
    mon.add_argument("port", help="serial port, e.g. /dev/serial/by-id/usb-...-gripper or a stand-in link")
    mon.add_argument("--rate", type=positive_int, default=200, help="sampling rate in Hz (default 200)")
    mon.add_argument("--seconds", type=nonnegative_float, default=0.0, help="stop after this long (default: Ctrl-C)")
    mon.set_defaults(func=monitor)

    st = gsub.add_parser(
        "standin", help="run the host build of the firmware on a pty (simulated gripper)",
        description="Arguments after -- go to gripper-host, e.g. -- --link /tmp/gripper --drift-ppm 50",
    )
    st.add_argument("args", nargs=argparse.REMAINDER, help="gripper-host flags (see firmware/README.md)")
    st.set_defaults(func=standin)


def monitor(args: argparse.Namespace) -> int:
    with HandheldGripper(GripperConfig(args.port, rate_hz=args.rate)) as g:
        info = g.info
        print(f"gripper {info.serial_number}: firmware {info.firmware}, protocol v{info.protocol}, "
              f"{info.rate_hz} Hz, encoder {'ok' if info.encoder_ok else 'MISSING'}, "
              f"IMU {'ok' if info.imu_ok else 'MISSING'}")
        t_end = time.monotonic() + args.seconds if args.seconds > 0 else float("inf")
        last_count = g.stats.samples
        while time.monotonic() < t_end:
            time.sleep(0.5)
            g.drain()
            s, fit = g.latest, g.clock.fit
            rate = (g.stats.samples - last_count) / 0.5
            last_count = g.stats.samples
            if s is None:
                print("no samples yet")
                continue
            print(f"jaw {s.jaw_normalized:5.3f} ({s.jaw_rad:+.3f} rad)  trigger {int(s.trigger)}  "
                  f"buttons {s.buttons:03b}  {rate:6.1f} Hz  drift {fit.drift_ppm if fit else 0:+6.1f} ppm  "
                  f"lost {g.stats.lost}  reconnects {g.stats.reconnects}")
    return 0


def standin(args: argparse.Namespace) -> int:
    binary = build_host_firmware()
    extra = [a for a in args.args if a != "--"]
    os.execv(str(binary), [str(binary), *extra])
    return 0  # not reached

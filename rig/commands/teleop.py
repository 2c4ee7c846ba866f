"""`rig teleop`: mirror leaders onto followers, headless, with a live status line."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from rig.config import load_config
from rig.session import RigSession, TeleopFault


def register(sub) -> None:
    p = sub.add_parser("teleop", help="mirror the leader arms onto the followers (headless)")
    p.add_argument("--config", default=None, help="built-in config name or path to a TOML file (default sim-aloha)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--stats-json", type=Path, default=None, help="write the loop statistics here at the end")
    p.add_argument("--cameras", action="store_true", help="also start the cameras (off by default: nothing records)")
    p.set_defaults(func=run)


def status_line(summary: dict) -> str:
    pe = summary["period_error_ms"]
    errors = sum(summary["bus_errors"].values())
    return (f"\r{summary['achieved_rate_hz']:6.2f} Hz  p99 period error {pe['p99']:5.2f} ms  "
            f"overruns {summary['overruns']}  bus errors {errors}  ticks {summary['ticks']}")


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def run(args) -> int:
    config = load_config(args.config)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` leaves the followers safe too
    tty = sys.stdout.isatty()

    def poll():
        line = status_line(session.teleop.stats.summary())
        print(line, end="" if tty else "\n", flush=True)

    print(f"rig teleop: {config.name} at {config.rate_hz:g} Hz; engaging over {config.safety.engage_seconds:g} s "
          "(Ctrl-C to stop)", flush=True)
    summary = None
    session = None
    try:
        with RigSession(config, cameras=args.cameras) as session:
            for warning in session.warnings:
                print(f"rig: warning: {warning}", file=sys.stderr)
            try:
                summary = session.run(args.duration, poll)
            finally:
                summary = summary or session.teleop.stats.summary()
        if tty:
            print()
        for arm, state in session.shutdown_report.items():
            print(f"{arm}: {state}")
    except TeleopFault as fault:  # say what the shutdown actually did, servo by servo
        report = "; ".join(f"{arm}: {state}" for arm, state in (session.shutdown_report if session else {}).items())
        raise TeleopFault(f"{fault} [{report}]" if report else str(fault)) from None
    finally:
        if args.stats_json and summary is not None:
            args.stats_json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["period_error_ms"] | {"achieved_rate_hz": summary["achieved_rate_hz"],
                                                   "overruns": summary["overruns"]}))
    return 0

"""`rig teleop`: mirror leaders onto followers, headless, with a live status line.

A handheld rig has no followers: there `rig teleop` streams the gripper and reports what a
collector needs to trust it (sample rate, jaw, buttons, lost samples, clock drift, latency).
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from drivers.errors import RigError
from rig.commands.argtypes import positive_float
from rig.config import load_config
from rig.session import RigSession, TeleopFault


def register(sub) -> None:
    p = sub.add_parser("teleop", help="mirror the leader arms onto the followers (headless); "
                                      "a handheld rig streams its gripper")
    p.add_argument("--config", default=None, help="built-in config name or path to a TOML file (default sim-aloha)")
    p.add_argument("--duration", type=positive_float, default=None, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--stats-json", type=Path, default=None, help="write the loop statistics here at the end")
    p.add_argument("--cameras", action="store_true", help="also start the cameras (off by default: nothing records)")
    p.set_defaults(func=run)


def status_line(summary: dict) -> str:
    pe = summary["period_error_ms"]
    errors = sum(summary["bus_errors"].values())
    return (f"\r{summary['achieved_rate_hz']:6.2f} Hz  p99 period error {pe['p99']:5.2f} ms  "
            f"overruns {summary['overruns']}  bus errors {errors}  ticks {summary['ticks']}")


class GripperFigures:
    """The handheld gripper's stream, summed up: the only consumer of its samples while
    `rig teleop` runs (nothing records)."""

    def __init__(self, gripper):
        self.gripper = gripper
        self.t0 = time.monotonic()
        self.samples = 0
        self.jaw_min, self.jaw_max, self.jaw = np.inf, -np.inf, float("nan")
        self.trigger, self.buttons, self.presses = False, 0, 0
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=2000)
        self._recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=8)  # (t, samples)

    def update(self) -> None:
        for smp in self.gripper.drain():
            self.samples += 1
            self.jaw = smp.jaw_normalized
            self.jaw_min, self.jaw_max = min(self.jaw_min, self.jaw), max(self.jaw_max, self.jaw)
            if smp.buttons & ~self.buttons:
                self.presses += 1
            self.trigger, self.buttons = bool(smp.trigger), smp.buttons
            self._latency_ms.append((smp.t_received_ns - smp.t_host_ns) / 1e6)  # capture to host
        self._recent.append((time.monotonic(), self.samples))

    def rate_hz(self) -> float:
        """Samples per second over the last few updates."""
        if len(self._recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def summary(self) -> dict:
        st, fit = self.gripper.stats, self.gripper.clock.fit
        elapsed = time.monotonic() - self.t0
        lat = np.asarray(self._latency_ms)
        return {
            "samples": self.samples,
            "rate_hz": self.samples / elapsed if elapsed > 0 else 0.0,
            "configured_rate_hz": self.gripper.config.rate_hz,
            "lost": st.lost, "dropped": st.dropped, "crc_errors": st.crc_errors, "reconnects": st.reconnects,
            "jaw": {"last": self.jaw, "min": self.jaw_min, "max": self.jaw_max} if self.samples else None,
            "button_presses": self.presses,
            "clock_drift_ppm": fit.drift_ppm if fit is not None else None,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
            if len(lat) else None,
            "duration_s": elapsed,
        }

    def status_line(self) -> str:
        fit = self.gripper.clock.fit
        drift = f"{fit.drift_ppm:+6.1f} ppm" if fit is not None else "  (syncing)"
        return (f"\r{self.rate_hz():6.1f} Hz  jaw {self.jaw:4.2f}  trigger {int(self.trigger)}  "
                f"buttons {self.buttons:03b}  lost {self.gripper.stats.lost}  clock drift {drift}  "
                f"samples {self.samples}")


def stream_gripper(session: RigSession, duration_s: float | None, tty: bool) -> dict:
    """A rig without followers: report the handheld gripper's stream until Ctrl-C or ``duration_s``."""
    figures = GripperFigures(session.gripper)
    end = None if duration_s is None else time.monotonic() + duration_s
    next_line = time.monotonic() + 1.0
    try:
        while end is None or time.monotonic() < end:
            time.sleep(0.1)
            figures.update()
            if time.monotonic() >= next_line:
                print(figures.status_line(), end="" if tty else "\n", flush=True)
                next_line += 1.0
    except KeyboardInterrupt:
        pass
    figures.update()
    if not figures.samples:
        raise RigError(f"the handheld gripper on {session.config.gripper.port} sent no sample; check its cable "
                       "(`rig gripper monitor PORT` shows its stream)")
    return {"gripper": figures.summary()}


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def run(args) -> int:
    config = load_config(args.config)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` leaves the followers safe too
    tty = sys.stdout.isatty()

    def poll():
        line = status_line(session.teleop.stats.summary())
        print(line, end="" if tty else "\n", flush=True)

    if not config.followers and config.gripper is None:
        raise RigError(f"{config.source}: this rig has no follower arms to mirror onto and no handheld gripper; "
                       "add [[arms]] with role = \"follower\" (or a [gripper] table)")
    if config.followers:
        print(f"rig teleop: {config.name} at {config.rate_hz:g} Hz; engaging over "
              f"{config.safety.engage_seconds:g} s (Ctrl-C to stop)", flush=True)
    else:
        print(f"rig teleop: {config.name} has no followers to mirror onto: streaming its handheld gripper "
              "(Ctrl-C to stop)", flush=True)
    summary = None
    session = None
    try:
        with RigSession(config, cameras=args.cameras) as session:
            for warning in session.warnings:
                print(f"rig: warning: {warning}", file=sys.stderr)
            if session.teleop is None:
                summary = stream_gripper(session, args.duration, tty)
            else:
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
    if "gripper" in summary:
        print(json.dumps(summary["gripper"]))
        return 0
    print(json.dumps(summary["period_error_ms"] | {"achieved_rate_hz": summary["achieved_rate_hz"],
                                                   "overruns": summary["overruns"],
                                                   "scheduling": summary.get("scheduling", "normal")}))
    return 0

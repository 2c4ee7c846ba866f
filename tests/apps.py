"""Driving the collector's app in tests: a handheld rig's config, what the screen shows, and
waiting on the rig's state."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rig.tui.controller import State


def handheld_config(path: Path, name: str, standin_args: list[str]) -> Path:
    """A handheld rig: the firmware's host build as the gripper (button 0 records), scripted with
    ``standin_args`` (e.g. ``--at 1.5:press 0 100``), and a small synthetic wrist camera."""
    path.write_text(f"""\
name = "{name}"
[gripper]
port = "standin"
rate_hz = 200
record_button = 0
standin_args = {json.dumps(standin_args)}
[[cameras]]
name = "wrist"
kind = "synthetic"
width = 160
height = 120
fps = 20
""")
    return path


def wait_for(c, pred, timeout: float, what: str) -> None:
    """Wait on a CollectorProcess's state, refreshing its view."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c.refresh()
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {c.state} {c.message}\n{c.history}")


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def flat(text: str) -> str:
    """Screen text with runs of whitespace (wrapped lines, box padding) as single spaces."""
    return " ".join(text.split())


async def until(pilot, predicate, timeout: float, what: str, after_fault: bool = False) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        c = pilot.app.collector
        if c.state in (State.FAULT, State.CLOSED) and not after_fault:
            break  # no point waiting: say what failed
        await pilot.pause(0.1)
    c = pilot.app.collector
    history = "\n".join(map(str, c.history))
    raise AssertionError(f"timed out waiting for {what}; state {c.state}: {c.message}\n{history}\n"
                         f"{screen_text(pilot.app)}")

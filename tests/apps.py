"""Driving the collector's app in tests: what the screen shows, and waiting on the rig's state."""

from __future__ import annotations

import time

from rig.tui.controller import State


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

"""Driving the collector's app in tests: a handheld rig's config, what the screen shows, and
waiting on the rig's state."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rig.tui.controller import State

ROOT = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux")


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


class Pane:
    """A tmux pane running the app in a real terminal: its text, keys into it, waiting on text."""

    @classmethod
    def launch(cls, cwd: Path, *args: str, size: tuple[int, int] = (160, 48)) -> Pane:
        """`rig ARGS` in a new tmux server, in ``cwd``; after it exits the shell prints
        ``RIG-EXIT:<status>`` and the pane stays for the test to read."""
        rig = shutil.which("rig")
        cmd = shlex.quote(rig) if rig else f"{shlex.quote(sys.executable)} -m rig"
        # COLUMNS/LINES from the test's own environment would override the pane's real size.
        env = f"env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(str(ROOT))}"
        argv = " ".join(shlex.quote(a) for a in args)
        shell = f"cd {shlex.quote(str(cwd))} && {env} {cmd} {argv}; echo RIG-EXIT:$?; sleep 120"
        pane = cls(f"rig-test-{os.getpid()}", "collect")
        subprocess.run([TMUX, "-L", pane.socket, "new-session", "-d", "-s", pane.session, "-x", str(size[0]),
                        "-y", str(size[1]), shell], check=True)
        return pane

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)

    def __init__(self, socket: str, session: str):
        self.socket, self.session = socket, session
        self.base = [TMUX, "-L", socket]

    def text(self) -> str:
        out = subprocess.run([*self.base, "capture-pane", "-p", "-t", self.session], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", self.session, *keys], check=True)

    def wait(self, needle: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.25)
        size = subprocess.run([*self.base, "display", "-p", "-t", self.session, "#{window_width}x#{window_height}"],
                              capture_output=True, text=True).stdout.strip()
        raise AssertionError(f"{needle!r} did not appear within {timeout:g} s; the screen ({size}):\n{text}")

"""Smoke test: `rig` with no arguments, in a real terminal (tmux), on the simulated rig.

Reads the screen with `tmux capture-pane`: the app comes up READY, records a take with space,
shows its replay, keeps it with enter, and quits safely with q, leaving one episode on disk.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mujoco")
ROOT = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux")
pytestmark = pytest.mark.system("tmux", "render")  # the app shows the simulated cameras


class Pane:
    def __init__(self, socket: str, session: str):
        self.base = [TMUX, "-L", socket]
        self.session = session

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


def test_rig_with_no_arguments_opens_the_app_records_a_take_and_quits_safely(tmp_path):
    rig = shutil.which("rig")
    cmd = shlex.quote(rig) if rig else f"{shlex.quote(sys.executable)} -m rig"
    # COLUMNS/LINES from the test's own environment would override the pane's real size.
    env = f"env -u COLUMNS -u LINES PYTHONPATH={shlex.quote(str(ROOT))}"
    # After the app exits the shell prints its status and the pane stays for us to read.
    shell = f"cd {shlex.quote(str(tmp_path))} && {env} {cmd}; echo RIG-EXIT:$?; sleep 120"
    socket, session = f"rig-test-{os.getpid()}", "collect"
    pane = Pane(socket, session)
    subprocess.run([TMUX, "-L", socket, "new-session", "-d", "-s", session, "-x", "160", "-y", "48", shell],
                   check=True)
    try:
        pane.wait("READY", 120)
        text = pane.wait("left_follower", 5)  # the arms panel fills at its next refresh (1 s)
        assert "press space to record take 0" in text and "top" in text and "fps" in text
        pane.keys("Space")
        pane.wait("recording take 0", 15)  # the take has begun on disk
        time.sleep(2.0)
        pane.keys("Space")
        pane.wait("review of take 0", 20)
        text = pane.wait("REVIEW", 5)
        assert "take 0 saved" in text
        pane.keys("Enter")
        pane.wait("press space to record take 1", 20)
        pane.keys("q")
        text = pane.wait("RIG-EXIT:", 60)
        assert "RIG-EXIT:0" in text, text
        # Each follower is reported; "torque off" unless its bus stopped answering during shutdown
        # (then every servo on it was sent torque-off blindly and the line says "unreachable").
        assert "session closed; followers: left_follower " in text and "right_follower " in text
        assert "holding" not in text and "1 episode(s) kept in data/rig.zarr" in text
    finally:
        subprocess.run([TMUX, "-L", socket, "kill-server"], capture_output=True)
    dataset = tmp_path / "data" / "rig.zarr"  # the default dataset, relative to where rig ran
    from recorder import Dataset

    eps = Dataset(dataset).episodes()
    assert [(e.index, e.status) for e in eps] == [(0, "complete")] and eps[0].stream_counts["joints"] > 10

"""Smoke test: `rig` with no arguments, in a real terminal (tmux), on the simulated rig.

Reads the screen with `tmux capture-pane`: the app comes up READY, records a take with space,
shows its replay, keeps it with enter, and quits safely with q, leaving one episode on disk.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("mujoco")
from tests.apps import Pane  # noqa: E402

pytestmark = pytest.mark.system("tmux", "render")  # the app shows the simulated cameras


def test_rig_with_no_arguments_opens_the_app_records_a_take_and_quits_safely(tmp_path):
    pane = Pane.launch(tmp_path)
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
        flat = text.replace("\n", "")  # the closing line is long enough to wrap at the pane's width
        assert "session closed; followers: left_follower " in flat
        assert "right_follower " in flat and "holding" not in flat and "1 episode(s) kept in data/rig.zarr" in flat
    finally:
        pane.kill()
    dataset = tmp_path / "data" / "rig.zarr"  # the default dataset, relative to where rig ran
    from recorder import Dataset

    eps = Dataset(dataset).episodes()
    assert [(e.index, e.status) for e in eps] == [(0, "complete")] and eps[0].stream_counts["joints"] > 10

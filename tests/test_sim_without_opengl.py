"""A machine without an OpenGL library still runs the simulated rig, cameras off, and says why."""

from __future__ import annotations

import pytest

from rig.config import load_config
from rig.session import RigSession

pytestmark = pytest.mark.sim


def test_render_failure_falls_back_to_no_cameras_with_the_fix(monkeypatch):
    monkeypatch.setenv("RIG_RENDER_GL", "no-such-gl-backend")  # the renderer cannot start
    with RigSession(load_config("sim-aloha")) as s:
        assert s.cameras == {}
        assert s.warnings == ["the simulated cameras are off: this machine has no OpenGL library for MuJoCo to "
                              "render with. Install it with `sudo apt-get install libegl1 libgl1-mesa-dri` and "
                              "restart"]
        summary = s.run(1.0)  # the arms still mirror
    assert summary["ticks"] > 10

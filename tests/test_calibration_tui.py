"""The calibration screen driven by Textual's Pilot over an emulated arm: a full guided calibration,
and motor setup giving a lone servo its ID."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("textual")

from textual.app import App  # noqa: E402

from drivers.dynamixel.emulator import ServoSpec  # noqa: E402
from rig.arms import arm_calibration  # noqa: E402
from rig.config import load_config  # noqa: E402
from rig.tui.calibration import CalibrationScreen  # noqa: E402
from tests.test_calibration_arm import ArmModel, arm_toml, leader_bus  # noqa: E402


def text_of(app) -> str:
    return " ".join("\n".join(s.text for s in app.screen._compositor.render_strips()).split())


async def until(pilot, pred, timeout=10.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}: {text_of(pilot.app)}")


class Host(App):
    def __init__(self, screen):
        super().__init__()
        self._cal = screen

    def on_mount(self):
        self.push_screen(self._cal)


def test_guided_arm_calibration_on_the_screen(tmp_path, emulated, monkeypatch):
    monkeypatch.setenv("RIG_CALIBRATION_DIR", str(tmp_path / "cal"))
    bus = leader_bus(emulated)
    model = ArmModel(bus, [1, 2, 4], mount=[2100, 2000, 1900], turn=[1, 1, -1], gripper_id=5, shadows={2: 3})
    path = tmp_path / "rig.toml"
    path.write_text(arm_toml(bus.port))
    config = load_config(path)
    screen = CalibrationScreen(config=config)

    async def run():
        app = Host(screen)
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, lambda: "not calibrated" in text_of(app), what="the menu")
            screen.start_arm("arm")
            await until(pilot, lambda: "Zero pose" in text_of(app) and "waist" in text_of(app), what="step 1")
            model.pose([0, 0, 0], 2250)
            await pilot.pause(0.2)
            await pilot.press("n")
            await until(pilot, lambda: "Positive direction" in text_of(app), what="step 2")
            model.pose([0.6, 0.6, 0.6])
            await pilot.pause(0.2)
            await pilot.press("n")
            await until(pilot, lambda: "[3/5] Range" in text_of(app), what="step 3")
            for f in np.linspace(-1, 1, 9):
                model.pose([f, f, f])
                await pilot.pause(0.12)  # the sampler reads at 20 Hz
            await pilot.press("n")
            await until(pilot, lambda: "Gripper open" in text_of(app), what="step 4")
            model.pose([0, 0, 0], 2250)
            await pilot.pause(0.2)
            await pilot.press("n")
            model.pose([0, 0, 0], 1650)
            await pilot.pause(0.2)
            await pilot.press("n")
            await until(pilot, lambda: "saved" in text_of(app), what="the file saved")
            assert screen.saved is not None and screen.saved.path.exists()

    asyncio.run(run())
    cal = arm_calibration(load_config(path).arm("arm"))
    assert cal.source.startswith("file:") and [j.sign for j in cal.joints] == [-1, 1, -1]
    lo, hi = cal.joints[1].min_ticks, cal.joints[1].max_ticks
    assert hi - lo == pytest.approx(2 * 4096 / (2 * np.pi), abs=3)  # the sweep from -1 to 1 rad


def test_motor_setup_from_the_screen(tmp_path, emulated):
    bus = emulated([ServoSpec(1, model="xl330-m288", return_delay=250)], baud=57_600)  # factory settings
    path = tmp_path / "rig.toml"
    path.write_text(arm_toml(bus.port, extra="allow_uncalibrated = true"))
    screen = CalibrationScreen(config=load_config(path))

    async def run():
        app = Host(screen)
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, lambda: "motors" in text_of(app), what="the menu")
            menu = screen.query_one("#cal-menu")
            menu.highlighted = menu.option_count - 1
            menu.action_select()
            await until(pilot, lambda: "Motor setup" in text_of(app), what="motor setup")
            screen.query_one("#motor-port").value = bus.port
            screen.query_one("#motor-id").value = "7"
            await pilot.press("a")
            await until(pilot, lambda: "now ID 7" in text_of(app), timeout=30, what="the new ID")
            assert "connect the next motor (ID 8)" in text_of(app)

    asyncio.run(run())
    servo = bus.servos[0]
    assert (servo.id, servo.baud, servo.get("return_delay_time")) == (7, 1_000_000, 0)

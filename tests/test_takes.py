"""The take lifecycle (rig.takes) on the handheld rig, through the real stand-ins: the firmware's
host build is the gripper, scripted over its control FIFO; `rig record` and `rig collect` drive
the same takes. Assertions are on files on disk, values and what the screen says."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder import Dataset
from rig.config import load_config
from rig.takes import resolve_task
from rig.tui.controller import CollectOptions, State
from rig.tui.engine import CollectorProcess
from tests.apps import Pane, handheld_config, wait_for

ROOT = Path(__file__).resolve().parents[1]
HARDWARE_PORT = "/dev/serial/by-id/usb-rig_handheld_gripper-if00"  # the built-in `handheld` config's


def rig(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_the_sim_task_comes_from_the_worlds_own_task_list():
    sim = load_config("sim-aloha")
    assert resolve_task(sim, None) == ("transfer_cube", "transfer_cube")
    assert resolve_task(sim, "insertion") == ("insertion", "insertion")  # one of the world's tasks: the scene
    assert resolve_task(sim, "pick up the red cube") == ("transfer_cube", "pick up the red cube")  # only text
    assert resolve_task(load_config("sim-handheld"), "insertion") == (None, "insertion")  # no world to pick


@pytest.mark.skipif(os.path.exists(HARDWARE_PORT), reason="a gripper is plugged in here")
@pytest.mark.parametrize("command", ["record", "collect"])
def test_the_hardware_handheld_config_without_a_gripper_is_one_clear_line(command, tmp_path):
    out = rig(command, "--config", "handheld", "--dataset", str(tmp_path / "d.zarr"))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"rig: no gripper at {HARDWARE_PORT}: plug it in (`ls /dev/serial/by-id/` lists what is connected), "
        "or set [gripper] port in handheld (built-in); `--config sim-handheld` runs without one"]
    assert not (tmp_path / "d.zarr").exists()  # nothing started


@pytest.mark.system("cc", "render")  # the gripper stand-in is built here; the wrist camera renders
def test_rig_record_sim_handheld_records_the_gripper_and_the_wrist_camera(tmp_path):
    ds = tmp_path / "hand.zarr"
    out = rig("record", "--config", "sim-handheld", "--episodes", "2", "--seconds", "1", "--reset-seconds", "0.2",
              "--dataset", str(ds))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 episode(s)" in out.stdout
    for info in Dataset(ds).episodes():
        assert info.status == "complete" and info.task == "sim-handheld"
        assert info.stream_counts["gripper"] > 100 and info.camera_counts["wrist"] > 5
        assert "joints" not in info.stream_counts  # no arms: no ticks


def test_rig_record_button_needs_a_gripper(tmp_path):
    out = rig("record", "--config", "sim-aloha", "--button", "--dataset", str(tmp_path / "d.zarr"))
    assert out.returncode == 2
    assert out.stderr.strip() == "rig: --button needs a handheld gripper, and sim-aloha (built-in) has no [gripper] table"


@pytest.mark.system("cc", "render")
def test_collect_sim_handheld_opens_and_records_with_space(tmp_path):
    """`rig collect --config sim-handheld` opened on a FAULT ('NoneType' has no attribute 'n')."""
    c = CollectorProcess(CollectOptions(config="sim-handheld", dataset=tmp_path / "takes.zarr", seconds=0,
                                        reset_seconds=0.2, train=False), log_path=tmp_path / "engine.log")
    try:
        c.open()
        wait_for(c, lambda: c.state == State.READY, 60, "READY")
        assert c.message == "press space (or the gripper's button 0) to record take 0 (sim-handheld)"
        snap = c.snapshot()
        assert snap.arms == [] and snap.loop == {} and snap.gripper is not None
        g = snap.gripper
        assert g.connected and g.nominal_hz == 200 and g.record_button == 0 and 0.0 <= g.jaw <= 1.0
        # the simulated home's hand holds the gripper up against gravity (and moves it)
        assert g.accel is not None and 5.0 < sum(a * a for a in g.accel) ** 0.5 < 15.0
        assert c.toggle() is True
        wait_for(c, lambda: c.recording, 10, "recording")
        time.sleep(1.0)
        c.toggle()
        wait_for(c, lambda: c.state == State.REVIEW, 10, "the take saved")
        snap = c.snapshot()
        assert snap.gripper.rate_hz > 0 and snap.gripper.offset_s is not None and snap.gripper.syncs > 0
        assert c.replay_actions() is True  # accepted, and says why nothing moves
        wait_for(c, lambda: "no followers to replay on" in c.message, 5, "the replay's answer")
        assert c.keep() is True
        report = c.close()
    finally:
        c.close()
    assert report == {} and c.state == State.CLOSED
    info = Dataset(tmp_path / "takes.zarr").info(0)
    assert info.status == "complete" and info.stream_counts["gripper"] > 100 and info.camera_counts["wrist"] > 5


# ---- the app on a handheld rig: the gripper's panel, its button, the replay ------------------------


def gripper_command(control: Path, line: str) -> None:
    """What a hand does to the gripper, through the stand-in firmware's control FIFO."""
    fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def _handheld_app(tmp_path: Path) -> None:
    pytest.importorskip("textual")
    from rig.tui.app import CollectorApp
    from rig.tui.replay import ReplayScreen
    from tests.apps import screen_text, until

    control = tmp_path / "control"
    ds = tmp_path / "takes.zarr"
    config = handheld_config(tmp_path / "hand.toml", "hand-app", ["--control", str(control), "--at", "0:jaw 0.75"])
    c = CollectorProcess(CollectOptions(config=config, dataset=ds, seconds=0,
                                        reset_seconds=0.2, train=False), log_path=tmp_path / "engine.log")
    app = CollectorApp(c, train=False)
    try:
        async with app.run_test(size=(170, 50)) as pilot:
            await until(pilot, lambda: c.state == State.READY, 60, "READY")
            await until(pilot, lambda: "drift" in screen_text(app) and " Hz" in screen_text(app), 10,
                        "the gripper's figures")
            text = screen_text(app)
            assert "press space (or the gripper's button 0) to record take 0 (hand-app)" in text
            assert "0.75 open" in text and "accel" in text and "gyro" in text and "offset" in text, text
            assert "button 0 starts/stops a take" in text
            assert "teleop loop" not in text and "misses" not in text  # no arms panel on a gripper alone

            # The gripper's button starts the take, as space does.
            gripper_command(control, "press 0 100")
            await until(pilot, lambda: c.state == State.RECORDING and c.recording and c.episode == 0, 10,
                        "the take started by the button")
            await pilot.pause(1.0)
            gripper_command(control, "jaw 0.2")  # the hand closes the jaw during the take
            await pilot.pause(1.0)
            gripper_command(control, "press 0 100")  # ... and the button stops it
            await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.t_joints is not None
                        and app.replay_first_frame_ns > 0, 15, "the replay with the jaw trajectory")
            replay = app.screen
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "review of take 0" in text and "gripper jaw (0 closed .. 1 open) vs time" in text, text
            assert "wrist" in text and "▀" in text  # the wrist camera's frame, in half blocks

            # What the replay plots is what is on disk.
            g = Dataset(ds).episode(0).read_stream("gripper")
            assert np.array_equal(replay.curves["gripper"][:, 0], g["jaw"].astype(np.float64))
            assert np.any(np.abs(g["jaw"] - 0.75) < 0.02) and np.any(np.abs(g["jaw"] - 0.2) < 0.02)
            assert np.all(np.diff(g["seq"]) == 1)  # no sample lost between the two presses

            # Keep it; space records the next take, and stops it.
            await pilot.press("enter")
            await until(pilot, lambda: c.state == State.READY and app.screen is app.live, 15, "READY after keep")
            await pilot.press("space")
            await until(pilot, lambda: c.state == State.RECORDING and c.episode == 1, 10, "take 1")
            await pilot.pause(0.5)
            await pilot.press("space")
            await until(pilot, lambda: c.state == State.REVIEW, 10, "take 1 saved")
            await pilot.press("q")
            await until(pilot, lambda: c.state == State.CLOSED, 30, "CLOSED", after_fault=True)
    finally:
        report = c.close()
    assert report == {}
    infos = Dataset(ds).episodes()
    assert [(e.index, e.status) for e in infos] == [(0, "complete"), (1, "complete")]
    assert all(e.task == "hand-app" and e.camera_counts["wrist"] > 3 for e in infos)


@pytest.mark.system("cc", "render")
def test_the_app_on_a_handheld_rig_shows_the_gripper_and_its_button_records_a_take_that_replays(tmp_path):
    asyncio.run(_handheld_app(tmp_path))


@pytest.mark.system("tmux", "cc", "render")
def test_rig_collect_sim_handheld_in_a_real_terminal(tmp_path):
    """`rig collect --config sim-handheld` as a contractor runs it: READY with the gripper's
    panel, a take with space, its jaw replay, and a clean exit."""
    pane = Pane.launch(tmp_path, "collect", "--config", "sim-handheld")
    try:
        pane.wait("READY", 90)
        text = pane.wait("drift", 10)  # the gripper's panel fills at the next refresh
        assert "press space (or the gripper's button 0) to record take 0" in text and "accel" in text
        assert "wrist" in text and "left_follower" not in text
        pane.keys("Space")
        pane.wait("recording take 0", 15)
        time.sleep(1.5)
        pane.keys("Space")
        text = pane.wait("gripper jaw", 20)
        assert "review of take 0" in text
        pane.keys("Enter")
        pane.wait("press space (or the gripper's button 0) to record take 1", 20)
        pane.keys("q")
        text = pane.wait("RIG-EXIT:", 60)
        assert "RIG-EXIT:0" in text and "rig: session closed; 1 episode(s) kept in data/rig.zarr" in text, text
    finally:
        pane.kill()
    info = Dataset(tmp_path / "data" / "rig.zarr").info(0)
    assert info.status == "complete" and info.stream_counts["gripper"] > 100

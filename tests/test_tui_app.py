"""The collector's app driven by Textual's Pilot on the real simulated rig: a full take, replay,
keep, discard, relabel and a safe quit; then a bus fault and a camera fault.

The app runs as `rig collect` runs it: the rig in its engine process, the app in this one.
Faults are drilled in the simulated world (a bus unplugged, a camera that stops delivering), so
the driver, the loop and the engine meet them as they would on hardware. Assertions are on the
dataset on disk and on the text the screen shows.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("textual")

from recorder import Dataset  # noqa: E402
from rig.tui.app import CollectorApp  # noqa: E402
from rig.tui.controller import CollectOptions, State  # noqa: E402
from rig.tui.engine import CollectorProcess  # noqa: E402
from rig.tui.episodes import ConfirmScreen, EpisodesScreen  # noqa: E402
from rig.tui.replay import ReplayScreen  # noqa: E402
from tests.apps import flat, screen_text, until  # noqa: E402

SIZE = (170, 50)
START_TIMEOUT = 90.0  # the world takes seconds to start, more on a loaded machine


async def start_take(pilot, episode: int | None = None) -> None:
    """Space on READY, then wait until the take is being written."""
    c = pilot.app.collector
    await pilot.press("space")
    await until(pilot, lambda: c.state == State.RECORDING and c.recording and episode in (None, c.episode), 10,
                "RECORDING")


def assert_followers_released(report: dict[str, str]) -> None:
    """Both followers were stopped with torque off. "unreachable" is the driver's word for a
    follower whose confirming read timed out (a starved machine): it then broadcast torque-off
    to every servo on that bus without a reply, which is still a release, never a hold."""
    assert set(report) == {"left_follower", "right_follower"}, report
    for name, outcome in report.items():
        assert outcome == "stopped; torque off confirmed on 9 of 9" or outcome.startswith("unreachable ("), \
            (name, outcome)


def make_app(tmp_path, **kw) -> tuple[CollectorApp, CollectorProcess]:
    opts = CollectOptions(dataset=tmp_path / "takes.zarr", seconds=kw.pop("seconds", 30.0), reset_seconds=0.2,
                          train=False, **kw)
    collector = CollectorProcess(opts, log_path=tmp_path / "engine.log")
    return CollectorApp(collector, train=False), collector


async def _full_take(tmp_path):
    app, c = make_app(tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: c.state == State.READY, START_TIMEOUT, "READY")
            await until(pilot, lambda: "period error p99" in screen_text(app) and "▀" in screen_text(app), 10,
                        "the loop figures and the camera previews")
            text = screen_text(app)
            assert "READY" in text and "press space to record take 0" in text
            for arm in ("left_leader", "right_leader", "left_follower", "right_follower"):
                assert arm in text
            for cam in ("top", "left_wrist", "right_wrist"):
                assert cam in text
            assert "period error p99" in text and "task: transfer_cube" in text, text
            from rig.realtime import availability

            assert ("SCHED_FIFO 20" if availability("auto")[0] else "normal") in text  # the loop's class
            assert "▀" in text  # a live preview is drawn in half blocks
            for key in ("start/stop", "keep", "discard", "re-record", "success", "failure", "quit"):
                assert key in text  # the footer names every key

            # Take 0: space starts, space stops; the replay opens on its own.
            await start_take(pilot, episode=0)
            await pilot.pause(1.5)
            assert "RECORDING" in screen_text(app) and "recording take 0" in screen_text(app)
            await pilot.press("space")
            await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.replay_first_frame_ns > 0,
                        10, "the first replay frame")
            stop_to_frame_s = (app.replay_first_frame_ns - c.t_stop_ns) / 1e9
            assert 0 < stop_to_frame_s < 5.0  # the goal (<= 1 s) is measured by benchmarks/bench_tui.py
            replay = app.screen
            # the figures are set, then drawn on a later refresh: wait for the drawn panel
            await until(pilot, lambda: replay.quality is not None and replay.t_joints is not None
                        and "overruns" in screen_text(app), 15, "the quality panel")
            text = screen_text(app)
            assert "REVIEW" in text and "review of take 0" in text and "left_follower.waist" in text, text
            q = replay.quality
            assert f"overruns      {q.overruns}" in text and "max skew" in text and "dropped" in text
            info = Dataset(tmp_path / "takes.zarr").info(0)
            assert info.status == "complete" and info.stream_counts["joints"] == q.ticks > 30

            # Scrub: paused on the right arrow, one frame at a time.
            await pilot.press("p")
            await pilot.press("left", "left")  # settle somewhere known, then step forward
            before = replay.frame_index
            await pilot.press("right")
            assert replay.frame_index == min(before + 1, len(replay.tracks[0].t_s) - 1)
            assert f"frame {replay.frame_index + 1}/{len(replay.tracks[0].t_s)}" in screen_text(app)

            # a: the followers replay the recorded actions (the banner says so).
            await pilot.press("a")
            await until(pilot, lambda: c.replay_tick > 0, 5, "the replay on the arms")
            assert "replaying episode 0's actions on the followers" in screen_text(app)

            # Relabel the take, then keep it: back to the live screen, READY for take 1.
            await pilot.press("s")
            await until(pilot, lambda: Dataset(tmp_path / "takes.zarr").info(0).success is True, 5, "label")
            await pilot.press("enter")
            await until(pilot, lambda: c.state == State.READY and app.screen is app.live, 15, "READY after keep")
            assert "press space to record take 1" in screen_text(app)

            # Take 1, discarded with a confirmation.
            await pilot.press("space")
            await until(pilot, lambda: c.state == State.RECORDING and c.episode == 1, 10, "take 1")
            await pilot.pause(1.0)
            await pilot.press("space")
            await until(pilot, lambda: c.state == State.REVIEW and isinstance(app.screen, ReplayScreen), 10,
                        "review of take 1")
            await pilot.press("backspace")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "the confirmation")
            assert "Discard episode 1?" in screen_text(app)
            await pilot.press("y")
            await until(pilot, lambda: c.state == State.READY and app.screen is app.live, 15, "READY after discard")
            assert Dataset(tmp_path / "takes.zarr").info(1).status == "discarded"

            # The episodes screen lists both; relabel take 0 as a failure from there.
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, EpisodesScreen), 5, "the episodes screen")
            await pilot.pause(0.5)
            text = screen_text(app)
            assert "discarded" in text and "success" in text and "complete" in text
            await pilot.press("up", "up")  # the cursor on episode 0
            await pilot.press("f")
            assert Dataset(tmp_path / "takes.zarr").info(0).success is False
            assert "failure" in screen_text(app)
            await pilot.press("escape")
            assert app.screen is app.live

            # q: safe quit, followers left torque off.
            await pilot.press("q")
            await until(pilot, lambda: c.state == State.CLOSED, 30, "CLOSED", after_fault=True)
    finally:
        report = c.close()
    assert_followers_released(report)
    eps = Dataset(tmp_path / "takes.zarr").episodes()
    assert [(e.index, e.status) for e in eps] == [(0, "complete"), (1, "discarded")]
    assert eps[0].success is False


async def _bus_fault(tmp_path):
    app, c = make_app(tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: c.state == State.READY, START_TIMEOUT, "READY")
            await start_take(pilot, episode=0)
            await pilot.pause(1.0)
            # The right follower's USB cable is pulled mid-take: its port vanishes under the driver.
            c.drill("unplug", "right_follower")
            await until(pilot, lambda: c.state == State.FAULT, 10, "FAULT", after_fault=True)
            await until(pilot, lambda: not c.teleop_running, 10, "the followers' safe stop", after_fault=True)
            await until(pilot, lambda: Dataset(tmp_path / "takes.zarr").info(0).status == "recovered", 10,
                        "the take saved", after_fault=True)
            text = flat(screen_text(app))
            assert "FAULT" in text and "right_follower" in text and "the port vanished" in text, text
            assert "check the arm's power and cable" in text
            report = c.shutdown_report
            assert_followers_released(report)
            assert report["left_follower"] == "stopped; torque off confirmed on 9 of 9"  # still on its bus: let go
            info = Dataset(tmp_path / "takes.zarr").info(0)
            assert info.status == "recovered" and "fault" in (info.note or ""), Dataset(tmp_path / "takes.zarr").episode(0).attrs
            assert info.stream_counts["joints"] > 5  # saved up to the fault
            await pilot.press("l")  # still responsive: other screens open
            await until(pilot, lambda: isinstance(app.screen, EpisodesScreen), 5, "the episodes screen",
                        after_fault=True)
            await pilot.press("escape")
            await pilot.press("q")
            await until(pilot, lambda: c.state == State.CLOSED, 30, "CLOSED", after_fault=True)
    finally:
        c.close()


async def _camera_fault(tmp_path):
    app, c = make_app(tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: c.state == State.READY, START_TIMEOUT, "READY")
            await start_take(pilot, episode=0)
            await pilot.pause(1.0)
            # The wrist camera stops delivering (a starved USB hub): its watchdog calls it frozen,
            # and once that lasts the app calls it a fault.
            c.drill("set_camera_delay", "left_wrist", 3600.0)
            await until(pilot, lambda: c.state == State.FAULT, 15, "FAULT", after_fault=True)
            await until(pilot, lambda: Dataset(tmp_path / "takes.zarr").info(0).status == "recovered", 10,
                        "the take saved", after_fault=True)
            text = flat(screen_text(app))
            assert "FAULT" in text and "camera left_wrist" in text and "froze" in text, text
            assert c.teleop_running  # the loop keeps the arms: a camera fault needs no safe stop
            info = Dataset(tmp_path / "takes.zarr").info(0)
            assert info.status == "recovered" and info.camera_counts["top"] > 5
            # It streams again: the fault clears and the next take can start.
            c.drill("set_camera_delay", "left_wrist", 0.0)
            await until(pilot, lambda: c.state == State.READY, 15, "READY again", after_fault=True)
            await until(pilot, lambda: "streaming again" in flat(screen_text(app)), 5, "the all-clear",
                        after_fault=True)
            await pilot.press("q")
            await until(pilot, lambda: c.state == State.CLOSED, 30, "CLOSED", after_fault=True)
    finally:
        report = c.close()
    assert_followers_released(report)


async def _keep_at_once(tmp_path):
    app, c = make_app(tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(2):  # two takes, each kept at once
                await until(pilot, lambda: c.state == State.READY and app.screen is app.live, START_TIMEOUT, "READY")
                await start_take(pilot)
                await pilot.pause(1.0)
                await pilot.press("space")
                await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and c.state == State.REVIEW, 10,
                            "the replay")
                await pilot.press("enter")  # kept before the replay finished loading: no crash
            await until(pilot, lambda: c.state == State.READY and app.screen is app.live, 15, "READY")
            # the status line is redrawn on the app's next refresh after the state turns READY
            await until(pilot, lambda: "press space to record take 2" in screen_text(app), 5, "the next take's prompt")
            await pilot.press("q")
            await until(pilot, lambda: c.state == State.CLOSED, 30, "CLOSED", after_fault=True)
    finally:
        c.close()
    assert [e.status for e in Dataset(tmp_path / "takes.zarr").episodes()] == ["complete", "complete"]


def test_keeping_a_take_before_its_replay_has_loaded(tmp_path):
    asyncio.run(_keep_at_once(tmp_path))


# Textual's Pilot is async; each test runs its own event loop (no pytest async plugin needed).
@pytest.mark.system("render")  # the camera previews
def test_a_full_take_start_stop_replay_keep_discard_relabel_quit(tmp_path):
    asyncio.run(_full_take(tmp_path))


def test_a_bus_fault_saves_the_take_stops_the_followers_and_keeps_the_app_responsive(tmp_path):
    asyncio.run(_bus_fault(tmp_path))


def panel_text(app, widget) -> str:
    """The screen's text inside one widget's region."""
    r = widget.region
    return "\n".join(line[r.x:r.right] for line in screen_text(app).splitlines()[r.y:r.bottom])


async def _arms_panel_error(size: tuple[int, int]) -> None:
    from textual.app import App

    from rig.tui.controller import ArmView
    from rig.tui.widgets import ArmsPanel

    error = ("/dev/serial/by-id/usb-FTDI_USB_UART_A10K8Z-if00-port0: the port vanished (USB cable pulled?); "
             "servo 7: Overheating, Electrical shock")

    class Arms(App):
        def compose(self):
            yield ArmsPanel(id="arms")

    app = Arms()
    async with app.run_test(size=size) as pilot:
        panel = app.query_one(ArmsPanel)
        panel.show([ArmView("left_follower", "follower", True, True, 12.1, 41, "", 0),
                    ArmView("right_follower", "follower", False, False, None, None, error, 3)])
        await pilot.pause()
        text = panel_text(app, panel)
        assert flat(f"right_follower: {error}") in flat(text), text  # whole, however narrow the panel
        assert "left_follower:" not in text  # a healthy arm has no error line


def test_the_arms_panel_shows_each_arms_whole_error():
    for width in (70, 120):
        asyncio.run(_arms_panel_error((width, 20)))


@pytest.mark.system("render")  # a simulated camera
def test_a_camera_that_stops_delivering_shows_a_fault_naming_it_until_it_streams_again(tmp_path):
    asyncio.run(_camera_fault(tmp_path))


async def _ui_crash(tmp_path) -> CollectorProcess:
    app, c = make_app(tmp_path)
    with pytest.raises(ZeroDivisionError):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: c.state == State.READY, START_TIMEOUT, "READY")
            await start_take(pilot)
            await pilot.pause(0.5)
            app.call_later(lambda: 1 / 0)  # a bug in the UI: Textual tears the app down
            await pilot.pause(0.5)
    return c


def test_a_crash_of_the_ui_loses_no_recording_and_releases_the_followers(tmp_path):
    c = asyncio.run(_ui_crash(tmp_path))
    # The UI is gone; the engine records on until `rig collect`'s finally closes it, which saves
    # the take and stops the followers.
    assert c.refresh().recording and c.teleop_running
    time.sleep(1.0)
    report = c.close()
    assert_followers_released(report)
    info = Dataset(tmp_path / "takes.zarr").info(0)
    assert info.status == "complete" and info.note == "the session ended during this take"
    assert info.duration_s > 1.4  # recorded on past the crash, up to the close


def test_when_the_app_process_dies_the_engine_saves_the_take_and_releases_the_followers(tmp_path):
    """`kill -9` of the app: nothing in it runs, the engine sees its pipe close and shuts down."""
    script = tmp_path / "app.py"
    script.write_text(f"""
import os, sys, time
from pathlib import Path
from rig.tui.controller import CollectOptions, State
from rig.tui.engine import CollectorProcess

if __name__ == "__main__":
    c = CollectorProcess(CollectOptions(dataset=Path({str(tmp_path / "takes.zarr")!r}), seconds=0, train=False),
                         log_path=Path({str(tmp_path / "engine.log")!r}))
    c.open()
    end = time.monotonic() + {START_TIMEOUT}
    while c.refresh().state != State.READY and time.monotonic() < end:
        time.sleep(0.1)
    c.toggle()
    while not c.refresh().recording and time.monotonic() < end:
        time.sleep(0.1)
    print(c.process.pid, flush=True)
    time.sleep(1.5)
    os.kill(os.getpid(), 9)
""")
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150, env=env)
    assert out.returncode == -9, out.stderr
    engine_pid = int(out.stdout.split()[0])
    end = time.monotonic() + 60
    while _alive(engine_pid) and time.monotonic() < end:
        time.sleep(0.2)
    assert not _alive(engine_pid), "the engine outlived its app"
    info = Dataset(tmp_path / "takes.zarr").info(0)
    assert info.status == "complete" and info.note == "the session ended during this take"
    assert info.duration_s > 1.0
    log = (tmp_path / "engine.log").read_text()
    assert "rig engine closed: followers" in log and "left_follower': 'stopped; torque off confirmed on 9 of 9'" in log, log


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) is as good as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---- trials beside takes: p, then s / f / k; the episodes screen marks them; the panel leads with them ----


def test_trials_in_the_app_are_judged_with_one_key_marked_on_the_episodes_screen_and_lead_the_panel(tmp_path,
                                                                                                    emulated):
    """A hardware-style rig (a pair on emulated buses, no world): `p` runs a policy trained for a
    few steps on two takes of this rig; the collector judges each trial with one key (k skip, f
    failure), a takeover makes one corrective; the episodes screen tells takes, trials and
    corrective takes apart and judges a trial from there; the quick-train panel leads with the
    trials on the arms of that policy, with n and its interval."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    from rig.train.data import EpisodeCache
    from rig.train.latest import latest_policy_path, save_latest
    from rig.train.trainer import TrainConfig, train_policy
    from rig.trials import policy_digest
    from tests.rigs import SYNTHETIC_CAMERA, pair_buses, pair_toml, pose_leader

    leader, follower = pair_buses(emulated)
    config = tmp_path / "pair.toml"
    config.write_text(pair_toml(leader.port, follower.port, missed_reads_to_stop=125) + SYNTHETIC_CAMERA)
    data = tmp_path / "takes.zarr"
    # Recorded by `rig record` in its own process (its dataset lock goes with it); the buses stay here.
    out = subprocess.run([sys.executable, "-m", "rig", "record", "--config", str(config), "--episodes", "2",
                          "--seconds", "1", "--reset-seconds", "0.2", "--dataset", str(data)], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stdout + out.stderr
    save_latest(train_policy(EpisodeCache().load(data), TrainConfig(steps=2, k=10, batch=8, width=8, hidden=32)),
                data)
    c = CollectorProcess(CollectOptions(config=config, dataset=data, seconds=0, reset_seconds=0.1, train=False,
                                        policy=latest_policy_path(data)), log_path=tmp_path / "engine.log")
    try:
        asyncio.run(_trials_in_the_app(c, leader, data, pose_leader))
    finally:
        c.close()
    ds = Dataset(data)
    digest = policy_digest(latest_policy_path(data))
    a2, a3 = ds.episode(2).attrs, ds.episode(3).attrs
    assert a2["policy"]["digest"] == digest == a3["policy"]["digest"]
    assert (a2["outcome"], a2["judged_by"], a2["success"]) == ("success", "operator", True)  # k, then s on the list
    assert (a3["outcome"], a3["judged_by"], a3["success"]) == ("failure", "operator", False)
    assert a3["corrective"] is True and a2["corrective"] is False


async def _run_trial(pilot, c, index: int) -> None:
    await pilot.press("p")
    await until(pilot, lambda: c.state == State.RECORDING and c.recording and c.episode == index and c.trial, 60,
                "the policy trial recording")
    await pilot.pause(1.0)
    await pilot.press("space")
    await until(pilot, lambda: c.state == State.REVIEW and c.last is not None and c.last.index == index, 20,
                "the trial saved")
    assert "judge it s success / f failure / k skip" in c.message, c.message  # no world: the collector judges


async def _trials_in_the_app(c, leader, data, pose_leader) -> None:
    app = CollectorApp(c, train=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: c.state == State.READY, 90, "READY")
        assert "skip trial" in screen_text(app)  # the footer names the key
        await _run_trial(pilot, c, 2)
        await pilot.press("k")
        await until(pilot, lambda: "trial 2 skipped" in c.message, 10, "skipped")
        await pilot.press("enter")
        await until(pilot, lambda: c.state == State.READY, 20, "READY after the first trial")

        # The second trial: a hand moves the leader while the policy drives: a takeover.
        await pilot.press("p")
        await until(pilot, lambda: c.state == State.RECORDING and c.recording and c.episode == 3, 60, "trial 3")
        await pilot.pause(0.5)
        with leader.lock:
            pose_leader(leader, [2048 + 0.3 * 4096 / (2 * 3.141592653589793), 2048, 2048])
        await pilot.pause(1.5)
        await pilot.press("space")
        await until(pilot, lambda: c.state == State.REVIEW and c.last is not None and c.last.index == 3, 20,
                    "the corrective trial saved")
        assert "corrective take" in c.message, c.message
        await pilot.press("f")
        await until(pilot, lambda: "marked failure" in c.message, 10, "judged a failure")
        await pilot.press("enter")
        await until(pilot, lambda: c.state == State.READY, 20, "READY after the second trial")
        # The panel leads with the trials on the arms: the skip counts in no figure.
        panel = app.train_panel
        await until(pilot, lambda: panel.lead == "success (trials on the arms): 0/1 = 0 % (95 % CI 0-79 %, n=1)",
                    10, "the panel's lead line")
        assert "success (trials on the arms)" in flat(screen_text(app))

        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, EpisodesScreen), 5, "the episodes screen")
        await pilot.pause(0.5)
        rows = {line.split()[0]: line.split() for line in screen_text(app).splitlines()
                if line.split() and line.split()[0] in ("0", "1", "2", "3")}
        assert rows["0"][1] == "take" and rows["1"][1] == "take"
        assert rows["2"][1] == "trial" and "skip" in rows["2"]
        assert rows["3"][1] == "corrective" and "failure" in rows["3"]
        await pilot.press("down", "down")  # the cursor from the first row (0) onto trial 2
        await pilot.press("s")
        await until(pilot, lambda: Dataset(data).episode(2).attrs.get("outcome") == "success", 5, "judged there")
        await pilot.press("escape")
        await until(pilot, lambda: panel.lead == "success (trials on the arms): 1/2 = 50 % (95 % CI 9-91 %, n=2)",
                    10, "the panel's lead line after the relabel")
        await pilot.press("q")
        await until(pilot, lambda: c.state == State.CLOSED, 60, "closed", after_fault=True)

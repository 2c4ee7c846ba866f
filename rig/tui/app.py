"""The collector's app: the live screen, instant replay after every take, the episode list.

`rig collect` runs the rig (world, buses, control loop, cameras, recorder) in an engine process
(rig.tui.engine): Textual's frame composing never shares a GIL with the loop. This app only reads
snapshots on timers (4 Hz state and previews, 1 Hz health) and hands key presses to the
collector, whose worker does anything that blocks. A slow or crashed UI never stops a recording:
the engine polls itself, and when the app goes away it saves the take and stops the followers.
The app also runs on an in-process Collector (same interface), as the engine itself does.
"""

from __future__ import annotations

import importlib.util
import inspect

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from rig.recording import TakeResult
from rig.tui.controller import Collector, State
from rig.tui.engine import CollectorProcess
from rig.tui.episodes import ConfirmScreen, EpisodesScreen
from rig.tui.replay import ReplayScreen
from rig.tui.train import TrainPanel
from rig.tui.widgets import ArmsPanel, Banner, CameraTile, GripperPanel, LoopPanel, TakePanel

TICK_HZ = 4.0  # state, banner and camera previews: one screen update per tick
HEALTH_TICKS = 4  # arms, loop and camera figures every 4th tick: once a second


def calibration_available() -> bool:
    try:
        return importlib.util.find_spec("rig.tui.calibration") is not None
    except (ImportError, ValueError):
        return False


class LiveScreen(Screen):
    AUTO_FOCUS = None
    DEFAULT_CSS = """
    LiveScreen #live-left { width: 2fr; min-width: 52; }
    LiveScreen #cameras { width: 3fr; grid-size: 2; grid-gutter: 0 1; }
    LiveScreen ArmsPanel { height: auto; border: round $primary; }
    LiveScreen LoopPanel { height: auto; border: round $primary; }
    LiveScreen TakePanel { height: auto; border: round $primary; }
    LiveScreen GripperPanel { height: auto; border: round $primary; }
    """

    def __init__(self, collector: Collector | CollectorProcess, train: TrainPanel):
        super().__init__()
        self.collector = collector
        self.train = train

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Horizontal():
            with Vertical(id="live-left"):
                yield TakePanel(id="take")
                config = self.collector.config
                if config.gripper is not None:
                    yield GripperPanel(id="gripper")
                if config.arms:  # a handheld gripper alone has no arms and no loop
                    yield ArmsPanel(id="arms")
                    yield LoopPanel(id="loop")
                yield self.train
            with Grid(id="cameras"):
                for name in self.collector.camera_names():
                    yield CameraTile(name, id=f"cam-{name}")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for panel, title in (("arms", "arms"), ("loop", "teleop loop"), ("take", "take"), ("gripper", "gripper")):
            for widget in self.query(f"#{panel}"):
                widget.border_title = title
        self.update_health()

    def update_previews(self) -> None:
        if not self.is_current:
            return
        tiles = list(self.query(CameraTile))
        frames = self.collector.latest_frames([t.camera for t in tiles])  # one request for all
        for tile in tiles:
            tile.show_frame(frames.get(tile.camera))

    def update_health(self) -> None:
        if not self.is_current:
            return
        snap = self.collector.snapshot()
        for arms in self.query(ArmsPanel):
            arms.show(snap.arms)
        for loop in self.query(LoopPanel):
            loop.show(snap.loop)
        views = {c.name: c for c in snap.cameras}
        for tile in self.query(CameraTile):
            if tile.camera in views:
                tile.show_stats(views[tile.camera])

    def update_state(self, snap, tick: int) -> None:
        """Called by the app's tick (4 Hz) while this screen shows: all updates in one repaint."""
        for panel in self.query(TakePanel):  # none yet before the screen is composed
            panel.show(snap)
        for gripper in self.query(GripperPanel):  # live: the jaw moves at 4 Hz on screen
            gripper.show(snap.gripper)
        if snap.state != State.SAVING:  # while a take is saved, the CPU goes to the recorder
            self.update_previews()
        if tick % HEALTH_TICKS == 0:
            self.update_health()


class CollectorApp(App):
    """``rig collect``. Build with a collector (a CollectorProcess, or a Collector in this process)
    that is not opened yet; the app opens it."""

    TITLE = "rig"
    AUTO_FOCUS = None
    BINDINGS = [
        Binding("space", "toggle", "start/stop"),
        Binding("enter", "keep", "keep"),
        Binding("backspace", "discard", "discard"),
        Binding("r", "rerecord", "re-record"),
        Binding("s", "label(True)", "success"),
        Binding("f", "label(False)", "failure"),
        Binding("k", "skip", "skip trial"),
        Binding("a", "replay_actions", "replay on arms"),
        Binding("p", "run_policy", "run policy"),
        Binding("l", "episodes", "episodes"),
        Binding("t", "focus_train", "flagged", show=False),
        Binding("c", "calibrate", "calibrate"),
        Binding("e", "end_session", "end session"),
        Binding("q", "quit_safely", "quit"),
        Binding("ctrl+q", "quit_safely", "quit", show=False, priority=True),
    ]

    class TakeSaved(Message):
        def __init__(self, result: TakeResult):
            super().__init__()
            self.result = result

    class RigError(Message):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

    def __init__(self, collector: Collector | CollectorProcess, *, train: bool = False, dataset_path=None):
        super().__init__()
        self.collector = collector
        from rig.train.latest import latest_policy_path

        dataset = dataset_path or collector.options.dataset
        self.train_panel = TrainPanel(dataset, collector.options.task, train,
                                      policy_file=collector.options.policy or latest_policy_path(dataset), id="train")
        self.live = LiveScreen(collector, self.train_panel)
        self.has_calibration = calibration_available()
        self.closing = False
        self._ticks = 0
        self.review_screen: ReplayScreen | None = None
        self.replay_first_frame_ns = 0  # when the last review drew its first frame (benchmark)
        collector.on_saved = lambda result: self.post_message(self.TakeSaved(result))
        collector.on_error = lambda text: self.post_message(self.RigError(text))

    # ---- lifecycle -------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self.live)
        self.call_after_refresh(self.collector.open)  # after the first paint: not competing with it
        self.set_interval(1 / TICK_HZ, self.tick)

    def tick(self) -> None:
        c = self.collector
        c.poll()
        for notice in c.notices:
            self.notify(notice, severity="warning", timeout=10)
        c.notices.clear()
        snap = c.snapshot(health=False)  # the arms, loop and camera figures: once a second, below
        if snap.state == State.READY:
            self.train_panel.start()
        for banner in self.screen.query(Banner):
            banner.show(snap)
        self._ticks += 1
        if self.screen is self.live:
            self.live.update_state(snap, self._ticks)
        review = self.review_screen
        if review is not None:
            views = review.query("FrameView")  # empty until the screen has finished mounting
            if views and views.first().first_drawn_ns and not self.replay_first_frame_ns:
                self.replay_first_frame_ns = views.first().first_drawn_ns
            if snap.state not in (State.REVIEW, State.SAVING):
                self.review_screen = None
                if self.screen is review:
                    self.pop_screen()  # the take was kept, discarded or re-recorded: back to live

    def on_collector_app_take_saved(self, message: TakeSaved) -> None:
        self.replay_first_frame_ns = 0
        first = self.collector.first_frame
        index = message.result.index
        self.open_replay(index, review=True, first_frame=first[1:] if first and first[0] == index else None)

    def on_collector_app_rig_error(self, message: RigError) -> None:
        self.notify(message.text, severity="error", timeout=15)

    def on_train_panel_open_episode(self, message: TrainPanel.OpenEpisode) -> None:
        self.open_replay(message.index)

    def open_replay(self, index: int, review: bool = False, first_frame=None) -> None:
        if self.collector.dataset is None:
            return
        screen = ReplayScreen(self.collector.dataset, index, review=review, config=self.collector.config,
                              camera_order=self.collector.camera_names(), first_frame=first_frame)
        if review:
            if self.review_screen is not None and self.screen is self.review_screen:
                self.pop_screen()
            self.review_screen = screen
        self.push_screen(screen)
        self.call_after_refresh(self.tick)  # its banner at once, not at the next tick

    # ---- keys ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "calibrate":
            return self.has_calibration  # the key (and its footer entry) only where the module exists
        if action in ("replay_actions", "run_policy", "skip"):
            return bool(self.collector.config.followers)  # a handheld rig has no arms to replay on
        return True

    def _index_here(self) -> int | None:
        """The episode a key acts on: the one open in a replay, else the last take."""
        if isinstance(self.screen, ReplayScreen):
            return self.screen.index
        return None

    def action_toggle(self) -> None:
        if self.collector.state == State.REVIEW:
            self.train_panel.notify_new_episode()  # starting the next take keeps this one
        self.collector.toggle()

    def action_keep(self) -> None:
        if isinstance(self.screen, ReplayScreen) and not self.screen.review:
            return
        if self.collector.keep() is not None:
            self.train_panel.notify_new_episode()

    def action_discard(self) -> None:
        index = self._index_here()
        c = self.collector
        target = index if index is not None else (c.last.index if c.last is not None else None)
        if target is None or c.state in (State.RECORDING, State.SAVING):
            return
        review_take = c.state == State.REVIEW and c.last is not None and target == c.last.index

        def done(yes: bool | None) -> None:
            if yes:
                c.discard(target)
                if not review_take:
                    self.notify(f"episode {target} discarded")
        self.push_screen(ConfirmScreen(f"Discard episode {target}?"), done)

    def action_rerecord(self) -> None:
        if isinstance(self.screen, ReplayScreen) and not self.screen.review:
            return  # r re-records the take under review, not an older episode being viewed
        self.collector.rerecord()

    def action_label(self, success: bool) -> None:
        self.collector.label(success, self._index_here())

    def action_skip(self) -> None:
        """A trial that cannot count (docs/trials.md): judged skip."""
        self.collector.skip(self._index_here())

    def action_replay_actions(self) -> None:
        self.collector.replay_actions(self._index_here())

    def action_run_policy(self) -> None:
        """The latest policy drives the followers as a recorded trial (docs/policy-on-arms.md)."""
        if self.collector.state == State.REVIEW:
            self.train_panel.notify_new_episode()  # the take under review is kept
        self.collector.run_policy()

    def action_episodes(self) -> None:
        if self.collector.dataset is not None and not isinstance(self.screen, EpisodesScreen):
            self.push_screen(EpisodesScreen(self.collector.dataset))
            self.call_after_refresh(self.tick)

    def action_focus_train(self) -> None:
        if self.screen is self.live:
            self.train_panel.focus_flagged()

    def action_calibrate(self) -> None:
        if not self.has_calibration:
            return
        try:
            from rig.tui.calibration import CalibrationScreen
            params = inspect.signature(CalibrationScreen).parameters
            c = self.collector
            offer = {"collector": c, "rig_busy": lambda: c.teleop_running, "config": c.config}
            self.push_screen(CalibrationScreen(**{k: v for k, v in offer.items() if k in params}))
        except Exception as exc:
            self.notify(f"calibration unavailable: {type(exc).__name__}: {exc}", severity="error")

    def action_end_session(self) -> None:
        """Stop a take in progress normally (it is saved and labelled), then quit safely."""
        if self.collector.state == State.RECORDING:
            self.collector.toggle()
        self.action_quit_safely()

    def action_quit_safely(self) -> None:
        if self.closing:
            return
        self.closing = True
        for banner in self.screen.query(Banner):
            banner.update(Text(" CLOSING ", "black on grey70") + Text("  saving and stopping the followers ..."))
        self._close_and_exit()

    async def action_quit(self) -> None:  # Textual's own quit paths also shut the rig down
        self.action_quit_safely()

    @work(thread=True, exclusive=True, group="close")
    def _close_and_exit(self) -> None:
        report: dict = {}
        try:
            self.train_panel.stop()
        except Exception:
            pass
        try:
            report = self.collector.close()
        finally:
            self.call_from_thread(self.exit, report)


__all__ = ["CollectorApp", "LiveScreen", "Static"]

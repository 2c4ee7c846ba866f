"""Instant replay of one episode: its camera frames (scrub or play), leader vs follower joint
trajectories (a handheld take: the gripper's jaw and trigger), and the quality summary.
Everything is read from the dataset on disk, so what the collector sees is exactly what was saved."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import plotext as plt
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static

from recorder import Dataset
from recorder.codec import decode_jpeg
from rig.handheld import GripperSource
from rig.recording import JOINTS
from rig.tui.quality import Quality, episode_quality
from rig.tui.widgets import Banner, FrameView

POSE_STREAM = "pose"  # rig.pose.episode.POSE_STREAM, without importing the pose pipeline
POSE_VIEW = (60, 11)  # columns and rows of each of the pose's two views
PLOT_EVERY_S = 0.5  # while playing, move the plot's time cursor at most this often (plotext is slow)


@dataclass
class Track:
    """One camera's frames on the episode's time axis (seconds from the first tick)."""

    name: str
    t_s: np.ndarray
    blobs: list[bytes] | None = None


def joint_names(config, n: int) -> list[str]:
    names = []
    if config is not None:
        for arm in config.arms:
            if arm.role == "follower":
                names += [f"{arm.name}.{j.name}" for j in arm.joints]
                if arm.gripper is not None:
                    names.append(f"{arm.name}.{arm.gripper.name}")
    return names if len(names) == n else [f"value {i}" for i in range(n)]


class ReplayScreen(Screen):
    """``review``: the take just recorded (enter keeps it, leaving the screen); otherwise any
    episode opened from the episode list (escape goes back)."""

    AUTO_FOCUS = None
    BINDINGS = [
        Binding("left", "step(-1)", "scrub", key_display="←→"),
        Binding("right", "step(1)", "scrub", show=False),
        Binding("shift+left", "step(-10)", "-10", show=False),
        Binding("shift+right", "step(10)", "+10", show=False),
        Binding("p", "play", "play"),
        Binding("2", "speed", "speed"),
        Binding("up", "joint(-1)", "joint", key_display="↑↓"),
        Binding("down", "joint(1)", "joint", show=False),
        Binding("tab", "camera", "camera"),
        Binding("escape", "back", "back"),
    ]
    DEFAULT_CSS = """
    ReplayScreen #replay-left { width: 3fr; border: round $accent; }
    ReplayScreen #replay-right { width: 4fr; }
    ReplayScreen #replay-status { height: 2; }
    ReplayScreen #replay-plot { height: 1fr; }
    ReplayScreen #replay-quality { height: auto; border-top: solid $primary; }
    """

    def __init__(self, dataset: Dataset, index: int, *, review: bool = False, config=None, camera_order=(),
                 first_frame: tuple[str, np.ndarray] | None = None):
        super().__init__()
        self.first_frame = first_frame  # (camera, image) already read from disk: shown at once
        self.dataset = dataset
        self.index = index
        self.review = review
        self.config = config
        self.camera_order = list(camera_order)
        self.tracks: list[Track] = []
        self.cam = 0
        self.t = 0.0  # the cursor, seconds from the episode start
        self.duration = 0.0
        self.playing = True  # a take plays back as soon as it is open
        self.speed = 1.0
        self.joint = 0
        self.names: list[str] = []
        self.t_joints: np.ndarray | None = None  # the plotted trajectories' time axis (s)
        self.leader: np.ndarray | None = None
        self.follower: np.ndarray | None = None
        self.curves: dict[str, np.ndarray] = {}  # label -> (T, channels): what the plot draws
        self.quality: Quality | None = None
        self._frame_i = -1
        self._plot_t = -1.0
        self._plot_at = 0.0
        self._last_tick = 0.0
        self.t0_ns = 0
        self.pose_views = ""  # the pose's top and side views, for a handheld take that has one

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Horizontal():
            with Vertical(id="replay-left"):
                yield FrameView(id="replay-frame")
                yield Static("", id="replay-status")
            with Vertical(id="replay-right"):
                yield Static(Text("loading the joint trajectories ...", "dim"), id="replay-plot")
                yield Static("", id="replay-pose")  # a handheld take's 6-DoF trajectory, once computed
                yield Static(Text("quality: computing ...", "dim"), id="replay-quality")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        title = "review of take" if self.review else "replay of episode"
        self.query_one("#replay-left").border_title = f"{title} {self.index}"
        if self.first_frame is not None:
            self.query_one(FrameView).set_image(self.first_frame[1])
            self._frame_i = 0
        self._load()
        self.set_interval(1 / 15, self._advance)

    # ---- loading (a thread: the UI keeps drawing) ----------------------------------------------

    @work(thread=True, exclusive=True, group="replay-load")
    def _load(self) -> None:
        ep = self.dataset.episode(self.index)
        cams = [c for c in self.camera_order if c in ep.cameras] + [c for c in ep.cameras
                                                                     if c not in self.camera_order]
        # The time axis starts when the writer started (the same clock as every sample).
        t0 = int(ep.attrs.get("start_monotonic_ns") or 0)
        # The first frame first: it is what the collector waits for.
        first = None
        if cams:
            t_first = ep.frame_times(cams[0])["t_ns"]
            t0 = t0 or (int(t_first[0]) if len(t_first) else 0)
            if len(t_first):
                given = self.first_frame
                first = given[1] if given is not None and given[0] == cams[0] else ep.read_frame(cams[0], 0)
                self._post(self._got_first, cams[0], (t_first.astype(np.int64) - t0) / 1e9, first)
        joints = ep.read_stream(JOINTS) if JOINTS in ep.streams else {}
        hand = GripperSource.name
        # A handheld take has no ticks: its trajectory is the gripper's own stream.
        gripper = ep.read_stream(hand) if not joints and hand in ep.streams else {}
        t_ticks = joints.get("t_ns", gripper.get("t_ns"))
        if not t0 and t_ticks is not None and len(t_ticks):
            t0 = int(t_ticks[0])
        self.t0_ns = t0
        tracks = [Track(c, (ep.frame_times(c)["t_ns"].astype(np.int64) - t0) / 1e9) for c in cams]
        self._post(self._got_tracks, tracks, None)  # the first frame is already up
        if t_ticks is not None and len(t_ticks):
            t_s = (t_ticks.astype(np.int64) - t0) / 1e9
            if joints:
                self._post(self._got_joints, t_s, joints["leader_q"], joints["follower_q"])
            else:
                self._post(self._got_gripper, t_s, gripper["jaw"], gripper["trigger"])
        if POSE_STREAM in ep.streams:  # a handheld take's pose, computed after it (rig/pose)
            self._post(self._got_pose, ep)
        for track in tracks:
            track.blobs = ep.read_jpeg(track.name)
        self._post(self._show_frame, force=True)
        try:
            quality = episode_quality(ep)
        except Exception as exc:  # the summary is advice; a failure must not hide the replay
            self._post(self._got_quality_error, f"{type(exc).__name__}: {exc}")
            return
        self._post(self._got_quality, quality)

    def _post(self, fn, *args, **kw) -> None:
        """Hand a result from the loading thread to the UI, unless the screen is gone meanwhile
        (enter pressed right after the stop key: the take is kept before its replay loaded)."""
        def deliver() -> None:
            if self.is_attached:
                with contextlib.suppress(NoMatches):
                    fn(*args, **kw)
        with contextlib.suppress(RuntimeError):  # the app itself is shutting down
            self.app.call_from_thread(deliver)

    def _got_first(self, cam: str, t_s: np.ndarray, image: np.ndarray) -> None:
        if not self.tracks:
            self.tracks = [Track(cam, t_s)]
            self.duration = max(self.duration, float(t_s[-1]))
        self.query_one(FrameView).set_image(image)
        self._frame_i = 0
        self._last_tick = time.monotonic()

    def _got_tracks(self, tracks: list[Track], first: np.ndarray | None) -> None:
        if self.tracks and tracks and self.tracks[0].name == tracks[0].name:
            tracks[0].blobs = self.tracks[0].blobs
        self.tracks = tracks
        ends = [float(t.t_s[-1]) for t in tracks if len(t.t_s)]
        self.duration = max([self.duration, *ends]) if ends else self.duration
        if first is not None:
            self.query_one(FrameView).set_image(first)
            self._frame_i = 0
        elif not tracks:
            self.query_one("#replay-status", Static).update(Text("this episode has no camera", "dim"))
        self._status()

    def _got_joints(self, t_s: np.ndarray, leader: np.ndarray, follower: np.ndarray) -> None:
        self.leader, self.follower = np.asarray(leader), np.asarray(follower)
        self.names = joint_names(self.config, self.follower.shape[1] if self.follower.ndim == 2 else 0)
        self._got_curves(t_s, {"leader": self.leader, "follower": self.follower})

    def _got_gripper(self, t_s: np.ndarray, jaw: np.ndarray, trigger: np.ndarray) -> None:
        self.names = ["gripper jaw (0 closed .. 1 open)", "gripper trigger"]
        self._got_curves(t_s, {"gripper": np.stack([np.asarray(jaw, np.float64),
                                                    np.asarray(trigger, np.float64)], axis=1)})

    def _got_pose(self, ep) -> None:
        from rig.pose.view import trajectory_plot  # cv2 and scipy: only for takes that have a pose

        # plotext keeps one global figure: drawn here, on the UI thread, as the other plots are
        self.pose_views = trajectory_plot(ep, width=POSE_VIEW[0], height=POSE_VIEW[1])
        self.query_one("#replay-pose", Static).update(Text.from_ansi(self.pose_views))

    def _got_curves(self, t_s: np.ndarray, curves: dict[str, np.ndarray]) -> None:
        self.t_joints, self.curves = t_s, curves
        self.duration = max(self.duration, float(t_s[-1]))
        self._plot(force=True)

    def _got_quality(self, q: Quality) -> None:
        self.quality = q
        text = Text("quality\n", "bold")
        flags = q.flags()
        text.append("\n".join(q.lines()))
        text.append("\nflags: ")
        text.append(", ".join(flags) if flags else "none", "yellow" if flags else "green")
        self.query_one("#replay-quality", Static).update(text)

    def _got_quality_error(self, message: str) -> None:
        self.query_one("#replay-quality", Static).update(Text(f"quality: unavailable ({message})", "red"))

    # ---- playing and scrubbing -------------------------------------------------------------------

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        if not self.playing or not self.tracks:
            return
        self.t += dt * self.speed
        if self.t >= self.duration:
            self.t = self.duration
            self.playing = False
        self._show_frame()
        self._plot()
        self._status()

    def _current_index(self) -> int:
        track = self.tracks[self.cam]
        if not len(track.t_s):
            return -1
        return int(min(len(track.t_s) - 1, max(0, np.searchsorted(track.t_s, self.t, side="right") - 1)))

    def _show_frame(self, force: bool = False) -> None:
        if not self.tracks:
            return
        i = self._current_index()
        track = self.tracks[self.cam]
        if i < 0 or track.blobs is None or i >= len(track.blobs) or (i == self._frame_i and not force):
            return
        self._frame_i = i
        self.query_one(FrameView).set_image(decode_jpeg(track.blobs[i]))

    def _status(self) -> None:
        if not self.tracks:
            return
        track = self.tracks[self.cam]
        n = len(track.t_s)
        state = ("▶ playing" if self.playing else "⏸ paused") + f" {self.speed:g}×"
        text = Text()
        text.append(f"{track.name}", "bold")
        text.append(f"  frame {max(self._frame_i, 0) + 1}/{n}  t {self.t:5.2f} / {self.duration:.2f} s  {state}")
        text.append("\n←/→ scrub · p play · 2 speed · tab camera · ↑/↓ joint · a replay on arms", "dim")
        self.query_one("#replay-status", Static).update(text)

    @property
    def channels(self) -> int:
        """Values per sample of the plotted trajectories (joints, or the gripper's jaw and trigger)."""
        first = next(iter(self.curves.values()), None)
        return first.shape[1] if first is not None and first.ndim == 2 else 0

    def _plot(self, force: bool = False) -> None:
        if self.t_joints is None or not self.channels or not len(self.t_joints):
            return
        now = time.monotonic()
        if not force and (now - self._plot_at < PLOT_EVERY_S or abs(self.t - self._plot_t) < 1e-3):
            return
        self._plot_at, self._plot_t = now, self.t
        widget = self.query_one("#replay-plot", Static)
        w, h = max(20, widget.content_size.width), max(8, widget.content_size.height)
        j = self.joint
        step = max(1, len(self.t_joints) // (2 * w))  # more points than columns only costs time
        t = self.t_joints[::step]
        plt.clear_figure()
        plt.plotsize(w, h)
        plt.theme("clear")
        for (label, values), color in zip(self.curves.items(), ("cyan", "orange"), strict=False):
            plt.plot(t.tolist(), values[::step, j].tolist(), label=label, color=color)
        plt.vline(self.t, "red")
        plt.title(f"{self.names[j] if j < len(self.names) else j} vs time (s)")
        widget.update(Text.from_ansi(plt.build()))

    def action_step(self, frames: int) -> None:
        if not self.tracks:
            return
        self.playing = False
        track = self.tracks[self.cam]
        i = min(len(track.t_s) - 1, max(0, self._current_index() + frames))
        self.t = float(track.t_s[i]) if len(track.t_s) else 0.0
        self._show_frame()
        self._plot(force=True)
        self._status()

    def action_play(self) -> None:
        if self.t >= self.duration:
            self.t = 0.0
        self.playing = not self.playing
        self._last_tick = time.monotonic()
        self._status()

    def action_speed(self) -> None:
        self.speed = 2.0 if self.speed == 1.0 else 1.0
        self._status()

    def action_joint(self, delta: int) -> None:
        if not self.channels:
            return
        self.joint = (self.joint + delta) % self.channels
        self._plot(force=True)

    def action_camera(self) -> None:
        if self.tracks:
            self.cam = (self.cam + 1) % len(self.tracks)
            self._show_frame(force=True)
            self._status()

    def action_back(self) -> None:
        self.app.pop_screen()  # a take under review stays under review: enter on the live screen keeps it

    @property
    def frame_index(self) -> int:
        return self._frame_i

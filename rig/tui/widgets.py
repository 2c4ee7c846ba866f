"""The live screen's panels. Each one renders a snapshot; none of them touches the rig."""

from __future__ import annotations

import time

import numpy as np
from rich.console import Group
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from textual.containers import Vertical
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from rig.handheld import GripperView
from rig.tui.controller import ArmView, CameraView, Snapshot, State
from rig.tui.preview import image_segments

STATE_STYLE = {
    State.STARTING: "black on grey70",
    State.ENGAGING: "black on yellow",
    State.READY: "black on green",
    State.RECORDING: "bold white on red",
    State.SAVING: "black on cyan",
    State.REVIEW: "black on bright_cyan",
    State.RESET: "black on magenta",
    State.FAULT: "bold white on dark_red",
    State.CLOSED: "black on grey50",
}


def _fmt_clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


class Banner(Static):
    """One line, coloured by state: what the rig is doing and what to do next."""

    DEFAULT_CSS = "Banner { height: auto; min-height: 1; padding: 0 1; }"

    def show(self, snap: Snapshot) -> None:
        state = snap.state.value + (" · REPLAYING ACTIONS" if snap.replaying else "")
        line = Text(f" {state} ", style=STATE_STYLE[snap.state])
        line.append(f"  {snap.message}")
        self.styles.background = None
        self.update(line)
        self.set_class(snap.state == State.FAULT, "fault")

    @property
    def text(self) -> str:
        return str(self.content) if not isinstance(self.content, Text) else self.content.plain


class ArmsPanel(Static):
    """One row of figures per arm; an arm's error in full on its own lines below the table, wrapped
    to the panel's width (in the table's last column it was cut to a few words)."""

    def show(self, arms: list[ArmView]) -> None:
        t = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
        for col in ("arm", "bus", "torque", "V", "°C", "misses"):
            t.add_column(col, no_wrap=True)
        t.add_column("errors", no_wrap=True, ratio=1)
        details = Text()
        for a in arms:
            if a.errors:
                details.append("\n" if details else "")
                details.append(f"{a.name}: ", "bold red")
                details.append(a.errors, "red")
            torque = "—" if a.torque_on is None else ("on" if a.torque_on else "off")
            t.add_row(
                a.name,
                Text("ok", "green") if a.connected else Text("closed", "red"),
                Text(torque, "green" if a.torque_on else ""),
                "—" if a.voltage_v is None else f"{a.voltage_v:.1f}",
                "—" if a.temperature_c is None else Text(f"{a.temperature_c}",
                                                          "red" if a.temperature_c >= 70 else ""),
                str(a.misses),
                Text("see below", "red") if a.errors else Text("none", "dim"),
            )
        self.update(Group(t, details) if details else t)


def _bar(frac: float, width: int = 16) -> Text:
    full = round(max(0.0, min(1.0, frac)) * width)
    return Text("█" * full, "cyan") + Text("░" * (width - full), "dim")


def _vec(v: tuple[float, float, float] | None, fmt: str = "+.2f") -> str:
    return "—" if v is None else " ".join(format(x, fmt) for x in v)


class GripperPanel(Static):
    """The handheld gripper: jaw, trigger and buttons (the record button marked), IMU, the
    stream's measured rate and the clock sync's offset and drift."""

    def show(self, g: GripperView | None) -> None:
        if g is None:
            self.update(Text("gripper: not open yet", "dim"))
            return
        t = Text()
        t.append("jaw     ")
        if g.jaw is None:
            t.append("no sample yet", "yellow")
        else:
            t.append_text(_bar(g.jaw))
            t.append(f" {g.jaw:4.2f} open ({g.jaw_rad:+.2f} rad)")
        t.append("   trigger ")
        t.append("●" if g.trigger else "○", "red" if g.trigger else "dim")
        t.append("\nbuttons ")
        for i in range(8):
            t.append("●" if g.buttons >> i & 1 else "○", "red" if g.buttons >> i & 1 else "dim")
        if g.record_button is not None:
            what = "the trigger" if g.record_button == -1 else f"button {g.record_button}"
            t.append(f"   {what} starts/stops a take", "dim")
        t.append(f"\nIMU     accel {_vec(g.accel)} m/s²  gyro {_vec(g.gyro)} rad/s")
        t.append("\nstream  ")
        if not g.connected:
            t.append("disconnected: it reconnects on its own when plugged back in", "red")
        else:
            t.append(f"{g.rate_hz:5.1f} Hz", "green" if g.rate_hz >= 0.9 * g.nominal_hz else "yellow")
            t.append(f" / {g.nominal_hz:g}  lost {g.lost}  reconnects {g.reconnects}")
        if g.faults:
            t.append(f"  {g.faults}", "red")
        t.append("\nclock   ")
        if g.offset_s is None:
            t.append("not synced yet", "yellow")
        else:
            t.append(f"offset {g.offset_s:+.6f} s  drift {g.drift_ppm:+.1f} ppm  ({g.syncs} syncs)")
        self.update(t)


class LoopPanel(Static):
    def show(self, loop: dict) -> None:
        if not loop:
            self.update(Text("loop: not running", "dim"))
            return
        err = loop["period_error_ms"]
        rate, target = loop["achieved_rate_hz"], loop["target_rate_hz"]
        bus_errors = sum(loop["bus_errors"].values())
        text = Text()
        text.append("loop ")
        text.append(f"{rate:5.1f} Hz", "green" if rate >= 0.95 * target else "red")
        text.append(f" / {target:g}  period error p99 ")
        text.append(f"{err['p99']:.2f} ms", "green" if err["p99"] < 1.0 else "yellow")
        text.append(f"  max {err['max']:.1f} ms  overruns {loop['overruns']}  bus errors {bus_errors}  ")
        sched = loop.get("scheduling", "normal")
        text.append(sched, "green" if sched.startswith("SCHED_FIFO") else "yellow")  # rig/realtime.py
        self.update(text)


class TakePanel(Static):
    def show(self, snap: Snapshot) -> None:
        text = Text()
        ep = "—" if snap.episode is None else str(snap.episode)
        text.append(f"episode {ep}", "bold")
        text.append(f"   kept {snap.kept}   ")
        elapsed = _fmt_clock(snap.elapsed_s)
        if snap.target_s > 0:
            frac = min(1.0, snap.elapsed_s / snap.target_s)
            width = 20
            full = int(frac * width)
            text.append(f"{elapsed} / {_fmt_clock(snap.target_s)} ")
            text.append("█" * full, "red" if snap.state == State.RECORDING else "cyan")
            text.append("░" * (width - full), "dim")
        else:
            text.append(elapsed)
        text.append(f"\ntask: {snap.task}")
        if snap.last is not None:
            label = {True: "success", False: "failure", None: "unlabelled"}[snap.last.success]
            text.append(f"\nlast take: {snap.last.index}, {snap.last.duration_s:.1f} s, {label}", "dim")
        self.update(text)


class ImageView(Widget):
    """An image in half blocks, drawn line by line from cached strips: a new frame costs one
    repaint of this widget, never a layout pass of the screen."""

    DEFAULT_CSS = "ImageView { width: 1fr; height: 1fr; }"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.image: np.ndarray | None = None
        self._strips: list[Strip] = []
        self._strip_size = (0, 0)
        self.first_drawn_ns = 0
        self.frames_drawn = 0

    def set_image(self, image: np.ndarray | None) -> None:
        if image is None:
            return
        self.image = image
        self._strips = []  # built on the next paint, at the size the widget has then
        self.refresh()

    def render_line(self, y: int) -> Strip:
        w, h = self.size.width, self.size.height
        if self.image is None or w < 2 or h < 1:
            return Strip.blank(w)
        if not self._strips or self._strip_size != (w, h):
            self._build(w, h)
        return self._strips[y] if y < len(self._strips) else Strip.blank(w)

    def _build(self, w: int, h: int) -> None:
        style = self.rich_style  # computed once per frame, not per line
        blank = Strip.blank(w, style)
        lines = image_segments(self.image, w, h)
        strips = [blank] * ((h - len(lines)) // 2)  # centred in the widget
        for segs in lines:
            width = sum(len(s.text) for s in segs)
            left = (w - width) // 2
            strip = Strip([Segment(" " * left, style), *segs], left + width) if left else Strip(segs, width)
            strips.append(strip.extend_cell_length(w, style))
        strips += [blank] * (h - len(strips))
        self._strips, self._strip_size = strips, (w, h)
        self.frames_drawn += 1
        if not self.first_drawn_ns:
            self.first_drawn_ns = time.monotonic_ns()


class CameraTile(Vertical):
    """A camera's live preview in half blocks, with its capture rate and drops in the title."""

    DEFAULT_CSS = """
    CameraTile { border: round $primary; height: 1fr; min-height: 6; }
    CameraTile.fault { border: round red; }
    """

    def __init__(self, camera: str, **kw):
        super().__init__(**kw)
        self.camera = camera
        self.border_title = camera
        self._subtitle = ""

    def compose(self):
        yield ImageView()

    def show_frame(self, image: np.ndarray | None) -> None:
        self.query_one(ImageView).set_image(image)

    def show_stats(self, view: CameraView) -> None:
        subtitle = f"{view.rate_hz:4.1f}/{view.nominal_fps:g} fps · drops {view.drops}"
        if subtitle != self._subtitle:
            self._subtitle = self.border_subtitle = subtitle
        self.set_class(view.fault is not None, "fault")


class FrameView(ImageView):
    """The replay's frame; remembers when it first drew a real image (for the benchmark)."""


__all__ = ["ArmsPanel", "Banner", "CameraTile", "FrameView", "GripperPanel", "ImageView", "LoopPanel", "TakePanel"]

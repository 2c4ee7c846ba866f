"""The calibration screen (key `c` in the collector's app): arms, alignment check, motor setup.

A thin front over ``calibration/``: the guided arm procedure is ``ArmCalibrator`` (the same state
machine as `rig calibrate arm`); a background thread samples the arm at 20 Hz while the screen
redraws its live table at 5 Hz. Nothing here blocks the UI: opening ports, starting the simulated
world, motor setup and the alignment check run on worker threads.

Arm calibration and the check need the arms' ports for themselves: while the collector's rig is
running they are refused with a message saying so (stop the rig, then calibrate).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from drivers.errors import RigError

SAMPLE_HZ = 20.0
REFRESH_HZ = 5.0


class CalibrationScreen(Screen):
    BINDINGS = [
        Binding("n", "confirm", "confirm step"),
        Binding("b", "back", "back a step"),
        Binding("x", "abandon", "abandon"),
        Binding("a", "assign", "assign motor ID"),
        Binding("escape", "close", "close"),
    ]
    DEFAULT_CSS = """
    CalibrationScreen #cal-menu { width: 34; border: round $primary; }
    CalibrationScreen #cal-main { width: 1fr; }
    CalibrationScreen #cal-step { height: auto; border: round $primary; padding: 0 1; }
    CalibrationScreen #cal-table { height: auto; max-height: 16; }
    CalibrationScreen #cal-log { height: auto; border: round $secondary; padding: 0 1; }
    CalibrationScreen #cal-motors { height: auto; display: none; }
    CalibrationScreen #cal-motors.shown { display: block; }
    """

    def __init__(self, config: Any = None, rig_busy: Callable[[], bool] | None = None, directory: Any = None):
        super().__init__()
        if config is None:
            from rig.config import load_config

            config = load_config()
        self.config = config
        self.rig_busy = rig_busy  # the collector's rig holds the arms' ports while it runs
        self.directory = directory
        self.calibrator = None
        self.world = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mode = "menu"  # menu | arm | motors | check
        self.messages: list[str] = []
        self.next_id = 1
        self.saved = None  # the last StoredArm written

    # ---- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        options = [Option(f"arm  {a.name} ({self._status(a)})", id=f"arm:{a.name}")
                   for a in self.config.arms if not a.is_handheld]
        options += [Option("check  leader-follower alignment", id="check"),
                    Option("motors  give IDs, one motor at a time", id="motors")]
        with Horizontal():
            yield OptionList(*options, id="cal-menu")
            with Vertical(id="cal-main"):
                yield Static(self._intro(), id="cal-step")
                with Vertical(id="cal-motors"):
                    yield Input(placeholder="port, e.g. /dev/serial/by-id/usb-FTDI_...", id="motor-port")
                    yield Input(placeholder="first ID (default 1)", id="motor-id")
                yield DataTable(id="cal-table", show_cursor=False)
                yield Static("", id="cal-log")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#cal-table", DataTable)
        table.add_columns("joint", "ids", "ticks", "angle", "min", "max", "note")
        self.set_interval(1 / REFRESH_HZ, self.refresh_view)

    def _intro(self) -> str:
        return (f"Calibration of {self.config.name}. Pick an arm to calibrate (zero pose, positive direction, "
                "range, gripper), the alignment check, or motor setup. Files go to "
                f"{self._dir()}.")

    def _dir(self):
        from calibration.store import calibration_dir

        return self.directory or calibration_dir()

    def _status(self, arm) -> str:
        from calibration.store import arm_file

        if arm.calibration is not None:
            return "inline in config"
        return "file" if arm_file(arm.name, self.directory).exists() else "not calibrated"

    def note(self, text: str) -> None:
        self.messages = (self.messages + [text])[-6:]
        with contextlib.suppress(Exception):
            self.query_one("#cal-log", Static).update("\n".join(self.messages))

    def _rig_busy(self) -> bool:
        return self.rig_busy is not None and self.rig_busy()

    # ---- menu ----------------------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        key = event.option.id or ""
        self.query_one("#cal-motors").set_class(key == "motors", "shown")
        if key == "motors":
            self._stop_arm()
            self.mode = "motors"
            self.query_one("#cal-step", Static).update(
                "Motor setup: connect ONE motor to the adapter, type the port and the first ID, then press `a`. "
                "Each press gives the connected motor the next ID (baud 1000000, return delay 0).")
            return
        if self._rig_busy():
            self.note("! the rig is running and holds the arms' ports: stop it (quit the collector), then "
                     "calibrate with `rig calibrate` or reopen this screen")
            return
        if key == "check":
            self._stop_arm()
            self.mode = "check"
            self.query_one("#cal-step", Static).update("Alignment check: running ...")
            threading.Thread(target=self._run_check, daemon=True, name="cal-check").start()
        elif key.startswith("arm:"):
            self.start_arm(key[4:])

    # ---- arm -----------------------------------------------------------------------------------

    def start_arm(self, name: str, port: str | None = None) -> None:
        self._stop_arm()
        self.mode = "arm"
        self.query_one("#cal-step", Static).update(f"Opening {name} ...")
        threading.Thread(target=self._open_arm, args=(name, port), daemon=True, name="cal-open").start()

    def _open_arm(self, name: str, port: str | None) -> None:
        from calibration.procedure import ArmCalibrator

        try:
            cfg = self.config.arm(name)
            if port is None:
                from rig.calibrating import arm_ports

                ports, self.world = arm_ports(self.config, [name])
                port = ports[name]
            cal = ArmCalibrator(cfg, port, directory=self.directory).open()
        except RigError as exc:
            self.app.call_from_thread(self.note, f"! {exc}")
            return
        with self._lock:
            self.calibrator = cal
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True, name="cal-sample")
        self._thread.start()
        self.app.call_from_thread(self.note, f"{name}: {len(cal.servos)} servos found, torque off")

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                cal = self.calibrator
                if cal is None:
                    return
                try:
                    cal.sample()
                except RigError as exc:
                    self.app.call_from_thread(self.note, f"! read failed: {exc}")
            time.sleep(1 / SAMPLE_HZ)

    def _stop_arm(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            if self.calibrator is not None:
                self.calibrator.close()
            self.calibrator = None
        if self.world is not None:
            with contextlib.suppress(Exception):
                self.world.close()
            self.world = None

    def action_confirm(self) -> None:
        if self.mode != "arm" or self.calibrator is None:
            return
        with self._lock:
            cal = self.calibrator
            try:
                step = cal.confirm()
                if step.key == "done":
                    self.saved = cal.finish()
            except RigError as exc:
                self.note(f"! {exc}")
                return
        if self.saved is not None and cal.procedure.done:
            for ch in cal.changes:
                self.note(f"servo {ch.id}: Homing Offset {ch.old} -> {ch.new}")
            self.note(f"saved {self.saved.path}")
            self._stop_arm()
            self.mode = "menu"

    def action_back(self) -> None:
        if self.mode == "arm" and self.calibrator is not None:
            with self._lock:
                self.calibrator.procedure.back()

    def action_abandon(self) -> None:
        if self.mode == "arm":
            self._stop_arm()
            self.mode = "menu"
            self.note("calibration abandoned; nothing was written")

    # ---- motors --------------------------------------------------------------------------------

    def action_assign(self) -> None:
        if self.mode != "motors":
            return
        port = self.query_one("#motor-port", Input).value.strip()
        first = self.query_one("#motor-id", Input).value.strip()
        if not port:
            self.note("! type the adapter's port first")
            return
        if first and first.isdigit() and int(first) != getattr(self, "_first", None):
            self._first = self.next_id = int(first)
        new_id = self.next_id
        self.note(f"assigning ID {new_id} on {port} ...")
        threading.Thread(target=self._assign, args=(port, new_id), daemon=True, name="cal-motor").start()

    def _assign(self, port: str, new_id: int) -> None:
        from drivers.dynamixel.setup import assign

        try:
            servo = assign(port, new_id, 1_000_000)
        except RigError as exc:
            self.app.call_from_thread(self.note, f"! {exc}")
            return
        self.next_id = new_id + 1
        self.app.call_from_thread(
            self.note, f"ok: {servo.model_name} is now ID {servo.id} at {servo.baud} baud; connect the next motor "
                      f"(ID {self.next_id}) and press a")

    # ---- check ---------------------------------------------------------------------------------

    def _run_check(self) -> None:
        from rig.calibrating import sim_check

        try:
            if not all(a.is_sim for a in self.config.arms):
                raise RigError("on hardware, run `rig calibrate check` in a terminal: it keeps the followers limp "
                               "while you pose both arms alike")
            reports = sim_check(self.config)
        except RigError as exc:
            self.app.call_from_thread(self.note, f"! {exc}")
            return
        text = "\n\n".join(r.format() for r in reports)
        self.app.call_from_thread(self.query_one("#cal-step", Static).update, text)

    # ---- view ----------------------------------------------------------------------------------

    def refresh_view(self) -> None:
        if self.mode != "arm" or self.calibrator is None:
            return
        with self._lock:
            cal = self.calibrator
            if cal is None or cal.procedure is None:
                return
            proc = cal.procedure
            rows = proc.table()
            step = proc.step
            index, total = proc.index + 1, len(proc.steps) - 1
        self.query_one("#cal-step", Static).update(
            f"{cal.cfg.name} [{index}/{total}] {step.title}: {step.instruction}\n(n confirms, b goes back, x abandons)")
        table = self.query_one("#cal-table", DataTable)
        table.clear()

        def f(v, fmt="{:.1f}"):
            return "-" if v is None else fmt.format(v)
        for r in rows:
            table.add_row(r.name, r.ids, f(r.ticks, "{:d}"), f(r.angle_deg), f(r.min_deg), f(r.max_deg), r.note)

    def action_close(self) -> None:
        self._stop_arm()
        self.app.pop_screen()

    def on_unmount(self) -> None:
        self._stop_arm()

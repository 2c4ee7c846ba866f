"""The quick-train panel: a background trainer's progress, its figures and the episodes it flags.

`rig.train.background` is optional (it needs torch); it is imported only when the panel starts,
and any failure shows as one line instead of breaking the app.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from rig.trials import current_figures, figure_from_dict, lead_line

LEAD_S = 3.0  # the lead line (trials on the arms read from the dataset) is refreshed this often


def figures_text(st) -> Text:
    """Success first (the headline), then the success-vs-takes curve and its projection; loss and
    errors as a secondary line beside the "holding still" and "mean action" baselines."""
    out = Text()
    s = getattr(st, "success", None)
    if s:
        out.append(f"success {s['text']}", "bold")  # n and the 95 % interval: a figure is a measurement
        out.append(f"  {s['label']}", "dim")
        if getattr(st, "first_estimate_s", None) is not None:
            out.append(f", {st.first_estimate_s:.0f} s after the take", "dim")
        c = getattr(st, "confirmed", None)
        if c:
            out.append(f"\nconfirmed: {c['text']} {c['label']}")
        curve = getattr(st, "success_curve", None)
        if curve:
            out.append("\nsuccess vs takes: " + ", ".join(f"{p['takes']}: {p['text']}" for p in curve))
        if getattr(st, "success_projection", None):
            out.append(f"\n{st.success_projection}", "italic")
        hurt = {g: d for g, d in (getattr(st, "takes_that_hurt", None) or {}).items() if d}
        if hurt:
            out.append("\ntakes that hurt: " + "; ".join(f"{g} {', '.join(sorted(d, key=int))}" for g, d in hurt.items()))
        e = getattr(st, "errors", None)
        if e:
            out.append(f"\nerror {e['joint_error']:.2f} deg (holding still {e['hold_joint_error']:.2f}, mean action "
                       f"{e['mean_action_joint_error']:.2f})", "dim")
        return out
    if getattr(st, "success_projection", None):  # why success is not measured (no check, no success yet)
        out.append(f"{st.success_projection}\n", "dim")
    if st.val_error:
        out.append("val error: " + "  ".join(f"{k} {v:.3g}" for k, v in st.val_error.items()))
    if st.val_joint_error_deg is not None and st.mean_action_error_deg is not None:
        out.append(f"\narm {st.val_joint_error_deg:.2f} deg (mean action {st.mean_action_error_deg:.2f} deg)", "dim")
    if st.projection:
        out.append(f"\n{st.projection}", "italic")
    return out


class TrainPanel(Vertical):
    """Shows ``BackgroundTrainer.status()`` once a second. Selecting a flagged episode posts
    ``TrainPanel.OpenEpisode``."""

    DEFAULT_CSS = """
    TrainPanel { height: auto; max-height: 14; border: round $secondary; }
    TrainPanel ProgressBar { height: 1; }
    TrainPanel OptionList { height: auto; max-height: 5; border: none; }
    """

    class OpenEpisode(Message):
        def __init__(self, index: int):
            super().__init__()
            self.index = index

    def __init__(self, dataset_path: Path, task: str | None, enabled: bool, policy_file: Path | None = None, **kw):
        super().__init__(**kw)
        self.dataset_path = Path(dataset_path)
        self.policy_file = policy_file  # the policy `p` runs: its trials on the arms lead (None: none)
        self._status = None  # the trainer's last status: its estimates follow the arms' trials
        self.lead = ""  # the lead line shown
        self.train_task = task
        self.enabled = enabled
        self.trainer = None
        self.unavailable: str | None = None if enabled else "off (--no-train)"
        self._flagged: list[tuple[int, str]] = []
        self._started = False
        self.border_title = "quick-train"

    def compose(self) -> ComposeResult:
        yield Static("", id="train-lead")
        yield Static(Text("quick-train: starts when the rig is ready" if self.enabled else "quick-train: off", "dim"),
                     id="train-status")
        yield ProgressBar(total=1.0, show_eta=False, show_percentage=True, id="train-progress")
        yield Static("", id="train-figures")
        flagged = OptionList(id="train-flagged")
        flagged.can_focus = False  # focus stays off it (enter means keep) until `t` selects it
        yield flagged

    def on_mount(self) -> None:
        self.query_one(OptionList).display = False
        self.query_one(ProgressBar).display = False
        if not self.enabled:
            self._show_unavailable()
        self.refresh_lead()
        self.set_interval(LEAD_S, self.refresh_lead)

    def refresh_lead(self) -> None:
        """The best success signal the rig has, labelled with its kind: trials on the arms of the
        current policy where there are any, then the real-time and fast sim estimates."""
        st = self._status
        estimates = [figure_from_dict(getattr(st, "confirmed", None), "realtime"),
                     figure_from_dict(getattr(st, "success", None), "fastsim")]
        try:
            arms, best = current_figures(self.dataset_path, self.policy_file, estimates)
        except Exception as exc:  # a dataset being written or a policy being replaced: next time
            self.query_one("#train-lead", Static).update(Text(f"success: unreadable now ({exc})", "dim"))
            return
        self.lead = lead_line(best)
        line = Text(self.lead, "bold" if best is not None else "dim")
        if arms is not None and arms.trials and best is not arms:
            line.append(f"\ntrials on the arms: {arms.text()}")
        self.query_one("#train-lead", Static).update(line)

    def start(self) -> None:
        """Called once the rig is READY: importing torch while the arms are being set up would
        starve their bus threads of the interpreter."""
        if self.enabled and self.trainer is None and not self._started:
            self._started = True
            self._start()
            self.set_interval(1.0, self.refresh_status)

    @work(thread=True, exclusive=True, group="train-start")
    def _start(self) -> None:
        try:
            from rig.train.background import BackgroundTrainer  # torch: seconds to import
            trainer = BackgroundTrainer(self.dataset_path, task=self.train_task)
            trainer.start()
        except Exception as exc:  # ImportError, a missing torch, a bad dataset ...
            self.unavailable = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.app.call_from_thread(self._show_unavailable)
            return
        self.trainer = trainer

    def _show_unavailable(self) -> None:
        self.query_one("#train-status", Static).update(Text(f"quick-train unavailable: {self.unavailable}", "dim"))

    def notify_new_episode(self) -> None:
        if self.trainer is not None:
            try:
                self.trainer.notify_new_episode()
            except Exception as exc:
                self.unavailable = f"notify failed: {exc}"

    def refresh_status(self) -> None:
        if self.trainer is None:
            if self.unavailable:
                self._show_unavailable()
            return
        try:
            st = self.trainer.status()
        except Exception as exc:
            self.query_one("#train-status", Static).update(Text(f"quick-train status failed: {exc}", "red"))
            return
        self._status = st
        age = (time.monotonic_ns() - st.updated_ns) / 1e9 if st.updated_ns else None
        head = Text(f"{st.state}", "bold")
        head.append(f"  {st.episodes} episodes  {st.message}")
        if age is not None and age > 30:
            head.append(f"  (updated {age:.0f} s ago)", "dim")
        self.query_one("#train-status", Static).update(head)
        bar = self.query_one(ProgressBar)
        bar.display = True
        bar.update(progress=max(0.0, min(1.0, float(st.progress))))
        self.query_one("#train-figures", Static).update(figures_text(st))
        flagged = list(st.flagged or [])
        if flagged != self._flagged:
            self._flagged = flagged
            options = self.query_one(OptionList)
            options.clear_options()
            options.add_options([Option(f"episode {i}: {why}", id=str(i)) for i, why in flagged])
            options.display = bool(flagged)

    def focus_flagged(self) -> None:
        options = self.query_one(OptionList)
        if options.option_count:
            options.can_focus = True
            options.focus()

    def on_descendant_blur(self) -> None:
        self.query_one(OptionList).can_focus = False

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.OpenEpisode(int(event.option.id)))

    def stop(self) -> None:
        if self.trainer is not None:
            try:
                self.trainer.stop()
            finally:
                self.trainer = None

"""The dataset's episodes: duration, status, success label and quality flags; open a replay,
relabel or discard from here."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, Static

from recorder import Dataset
from rig.trials import Outcome, is_trial, record_outcome, trial_outcome
from rig.tui.quality import episode_quality
from rig.tui.widgets import Banner

COLUMNS = ("episode", "kind", "duration", "status", "success", "task", "flags")


def success_text(success: bool | None) -> Text:
    if success is None:
        return Text("—", "dim")
    return Text("success", "green") if success else Text("failure", "red")


def kind_text(attrs: dict) -> Text:
    """A take, a policy trial, or a corrective take (a trial the operator took over)."""
    if not is_trial(attrs):
        return Text("take")
    if attrs.get("corrective"):
        return Text("corrective", "bold yellow")
    return Text("trial", "cyan")


def judged_text(success: bool | None, attrs: dict) -> Text:
    """The success label; a trial judged skip says so (it counts in no success figure)."""
    if is_trial(attrs) and trial_outcome(attrs) == "skip":
        return Text("skip", "yellow")
    return success_text(success)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; y or enter confirms, n or escape declines."""

    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("enter", "answer(True)", "yes", show=False),
                Binding("n", "answer(False)", "no"), Binding("escape", "answer(False)", "no", show=False)]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Label { border: thick $error; padding: 1 2; background: $surface; }
    """

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Label(f"{self.question}  [b]y[/b] yes · [b]n[/b] no", id="question")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class EpisodesScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "replay"),
        Binding("s", "label(True)", "success"),
        Binding("f", "label(False)", "failure"),
        Binding("u", "label(None)", "unlabel"),
        Binding("k", "skip", "skip trial"),
        Binding("backspace", "discard", "discard"),
        Binding("escape", "back", "back"),
    ]

    def __init__(self, dataset: Dataset):
        super().__init__()
        self.dataset = dataset
        self.flags: dict[int, str] = {}

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield Static(f"episodes in {self.dataset.path}", id="episodes-title")
        yield DataTable(id="episodes", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for c in COLUMNS:
            table.add_column(c, key=c)
        self.reload()
        self._compute_flags()
        table.focus()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for e in self.dataset.episodes():
            flags = [*e.flags, *([self.flags[e.index]] if self.flags.get(e.index) else [])]
            attrs = self._attrs(e.index)
            table.add_row(str(e.index), kind_text(attrs), f"{e.duration_s:.1f} s",
                          Text(e.status, "dim" if e.status == "discarded" else ""), judged_text(e.success, attrs),
                          e.task, ", ".join(flags) or Text("ok", "green"), key=str(e.index))
        if table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))

    @work(thread=True, exclusive=True, group="episode-flags")
    def _compute_flags(self) -> None:
        """Quality flags need every episode's data: read them in the background, newest first."""
        for index in reversed(self.dataset.indices()):
            try:
                flags = ", ".join(episode_quality(self.dataset.episode(index)).flags())
            except Exception as exc:  # a broken episode is itself worth a flag
                flags = f"unreadable ({type(exc).__name__})"
            self.flags[index] = flags
            self.app.call_from_thread(self._set_flag, index)

    def _set_flag(self, index: int) -> None:
        table = self.query_one(DataTable)
        try:
            info = self.dataset.info(index)
        except Exception:
            return
        flags = [*info.flags, *([self.flags[index]] if self.flags.get(index) else [])]
        try:
            table.update_cell(str(index), "flags", ", ".join(flags) or Text("ok", "green"), update_width=True)
        except Exception:  # the row went away meanwhile (reload): nothing to update
            pass

    def selected(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.app.open_replay(int(event.row_key.value))

    def action_open(self) -> None:
        index = self.selected()
        if index is not None:
            self.app.open_replay(index)

    def _attrs(self, index: int) -> dict:
        try:
            return self.dataset.episode(index).attrs
        except Exception:  # an episode being written or damaged: shown as a take
            return {}

    def action_label(self, success: bool | None) -> None:
        index = self.selected()
        if index is not None:
            if is_trial(self._attrs(index)):  # a trial's judgement, by the operator (u: not judged)
                record_outcome(self.dataset, index, None if success is None else
                               Outcome("success" if success else "failure", "", "operator"))
            else:
                self.dataset.set_success(index, success)  # one small attribute write
            last = getattr(getattr(self.app, "collector", None), "last", None)
            if last is not None and last.index == index:
                last.success = success
            self.reload()

    def action_skip(self) -> None:
        index = self.selected()
        if index is not None and is_trial(self._attrs(index)):
            record_outcome(self.dataset, index, Outcome("skip", "", "operator"))
            last = getattr(getattr(self.app, "collector", None), "last", None)
            if last is not None and last.index == index:
                last.success = None
            self.reload()

    def action_discard(self) -> None:
        index = self.selected()
        if index is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.dataset.discard(index)
                self.reload()
        self.app.push_screen(ConfirmScreen(f"Discard episode {index}?"), done)

    def action_back(self) -> None:
        self.app.pop_screen()

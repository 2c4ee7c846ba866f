"""The collector's interface, defined once: the actions keys ask for and the view the app reads.

``Collector`` (rig/tui/controller.py) implements it in the rig's process. The engine
(rig/tui/engine.py) derives everything else from these two definitions: its dispatch of action
requests (``ACTIONS``), the app-side proxy ``CollectorProcess`` (one method per action, one
property per view field) and the view every reply carries (``CollectorView.of``). A new key's
action is added here and in the Collector, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from rig.recording import TakeResult
from rig.tui.controller import State


class Actions(Protocol):
    """What keys ask of the collector. Each returns at once: the step is queued on the collector's
    worker (a truthy value) or refused in this state (None)."""

    def toggle(self) -> Any:
        """space: start a take, or stop the one recording (a trial too)."""

    def keep(self) -> Any:
        """enter: the take under review stays; reset for the next."""

    def discard(self, index: int | None = None) -> Any:
        """backspace: mark an episode discarded (the last take by default)."""

    def rerecord(self) -> Any:
        """r: discard the take under review and record it again from the same start."""

    def label(self, success: bool | None, index: int | None = None) -> Any:
        """s / f: label a take (judge a trial) success or failure."""

    def skip(self, index: int | None = None) -> Any:
        """k: a trial that cannot count (a scene reset wrong, a person in the way): judged skip."""

    def replay_actions(self, index: int | None = None) -> Any:
        """a: the followers replay an episode's recorded actions."""

    def run_policy(self) -> Any:
        """p: the latest policy drives the followers as a recorded trial."""


ACTIONS: tuple[str, ...] = tuple(n for n, v in vars(Actions).items() if callable(v) and not n.startswith("_"))


@dataclass
class CollectorView:
    """The collector's small state, as the app reads it (sent with every reply of the engine)."""

    state: State
    message: str
    episode: int | None = None  # the take being recorded or reviewed
    last: TakeResult | None = None
    fault: str | None = None
    kept: int = 0
    t_stop_ns: int = 0  # monotonic ns of the last stop request (benchmarks)
    t_saved_ns: int = 0  # and of the take saved after it
    recording: bool = False
    teleop_running: bool = False
    replay_tick: int = 0
    trial: bool = False  # the take recorded or under review is a policy trial
    history: list[tuple[float, str, str]] = field(default_factory=list)
    shutdown_report: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # start-up remarks, handed over once

    @classmethod
    def of(cls, collector: Any, notices: bool = False) -> CollectorView:
        """The view of a Collector now; ``notices``: hand its notices over (and clear them)."""
        values = {f.name: getattr(collector, f.name) for f in fields(cls) if f.name not in ("history", "notices")}
        with collector._lock:  # the worker appends to the history under it
            values["history"] = list(collector.history)
        values["shutdown_report"] = dict(collector.shutdown_report)
        news: list[str] = []
        if notices and collector.notices:
            news, collector.notices[:] = list(collector.notices), []
        return cls(**values, notices=news)


VIEW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CollectorView))

__all__ = ["ACTIONS", "Actions", "CollectorView", "VIEW_FIELDS"]

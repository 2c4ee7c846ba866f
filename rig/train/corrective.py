"""Which ticks of which takes are labels: demonstrations, policy trials and corrective takes.

A policy trial (``trial = "policy"`` in the episode's metadata, written by rig/trials.py) is the
policy driving the followers: its actions are the policy's own, never a label. When the operator
took over by moving a leader, the take is *corrective* (DAgger-style): from ``takeover_tick`` on,
the operator drove, and those ticks are labels of exactly the states the policy gets itself into.

- a demonstration (no ``trial``): every tick is a label;
- a corrective take: the ticks from the takeover on;
- a trial nobody took over: none (left out of training).

No torch here: the trainer's episode selection calls :func:`label_starts` and :func:`from_tick`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from recorder import Dataset

TRIAL_KEY = "trial"  # "policy": a policy drove this take
CORRECTIVE_KEY = "corrective"  # True: the operator took over (DAgger-style correction)
TAKEOVER_TICK_KEY = "takeover_tick"  # the take's row (tick counted from its start) of the takeover
TAKEOVER_NS_KEY = "takeover_t_ns"  # that tick's deadline (monotonic ns): finds it on a resampled grid


def label_start(attrs: dict[str, Any]) -> int | None:
    """The first row whose action is a label: 0 for a demonstration, the takeover's row for a
    corrective take, None for a policy trial nobody took over."""
    if attrs.get(TRIAL_KEY) != "policy":
        return 0
    if attrs.get(CORRECTIVE_KEY) and attrs.get(TAKEOVER_TICK_KEY) is not None:
        return int(attrs[TAKEOVER_TICK_KEY])
    return None


def label_starts(dataset: Dataset, indices: Iterable[int]) -> dict[int, int | None]:
    """``label_start`` of each episode, read from its metadata (kept order)."""
    return {i: label_start(dataset.episode(i).attrs) for i in indices}


def label_row(e: Any, attrs_or_ns: dict[str, Any] | int | None) -> int:
    """The first row of an episode's tick grid (``EpisodeData`` or ``QuickEpisode``: its t_s,
    rate_hz and t0_ns) whose action is a label: the takeover's, else 0; ``e.ticks`` when none is.

    ``attrs_or_ns``: the episode's metadata (or the takeover deadline in ns). The trainer's tick
    grid repeats skipped ticks, so the takeover is found by its time on that grid, not its row."""
    t_ns = attrs_or_ns.get(TAKEOVER_NS_KEY) if isinstance(attrs_or_ns, dict) else attrs_or_ns
    if t_ns is None:
        return 0
    period_ns = 1e9 / e.rate_hz
    grid_ns = e.t0_ns + np.round(np.asarray(e.t_s, np.float64) * 1e9)
    return int(np.searchsorted(grid_ns, int(t_ns) - period_ns / 2))


def from_tick(e: Any, attrs_or_ns: dict[str, Any] | int | None) -> Any | None:
    """An ``EpisodeData`` cut to its labelled ticks: a corrective take from its takeover on (the
    state there is the policy's, the actions the operator's). None when nothing is left."""
    start = label_row(e, attrs_or_ns)
    if start == 0:
        return e
    if start >= e.ticks:
        return None
    grid_ns = e.t0_ns + np.round(np.asarray(e.t_s, np.float64) * 1e9)
    return replace(e, q=e.q[start:], dq=e.dq[start:], action=e.action[start:], t_s=e.t_s[start:] - e.t_s[start],
                   frame_of_tick={c: r[start:] for c, r in e.frame_of_tick.items()},
                   t0_ns=int(grid_ns[start]))


__all__ = ["CORRECTIVE_KEY", "TAKEOVER_NS_KEY", "TAKEOVER_TICK_KEY", "TRIAL_KEY", "from_tick", "label_row", "label_start",
           "label_starts"]

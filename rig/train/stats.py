"""Success figures with their uncertainty: every success rate the rig reports carries its trial
count, its kind and a 95 % Wilson score interval.

Why Wilson: it stays inside [0, 1] and keeps a useful width at 0/n and n/n, where the normal
approximation collapses to zero width (Kress-Gazit et al. 2024 recommend stating n and an
interval for every policy evaluation). 20 trials at 13/20 give 43-82 %: such a figure cannot
tell 65 % from 80 %, and the reports say so.

Kinds, best signal first (what quick-train's report and panel lead with):

- ``arms``: trials on the rig's followers, judged by the world (simulated rig) or the operator.
- ``realtime``: real-time trials through the emulated buses in the simulated world.
- ``fastsim``: the fast simulator's estimate (no buses, no real time).
- ``demo``: the scripted demonstrations through the same trials (a ceiling, not the policy).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054  # the normal quantile for a two-sided 95 % interval

KINDS = ("arms", "realtime", "fastsim", "demo")
KIND_LABELS = {
    "arms": "trials on the arms",
    "realtime": "real-time trials (simulated world, through the buses)",
    "fastsim": "fast sim estimate",
    "demo": "scripted demonstrations",
}

# An interval wider than this (upper - lower) cannot support a projection of takes needed.
MAX_PROJECTABLE_WIDTH = 0.30  # ±15 points: what 39 trials at 50 % give


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``successes`` of ``trials`` (both ends in [0, 1]).
    With no trials the interval is the whole range."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials; got {successes}/{trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    den = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def trials_for_halfwidth(halfwidth: float, p: float = 0.5, z: float = Z95) -> int:
    """How many trials make the interval at most ±``halfwidth`` wide at rate ``p`` (worst case
    p = 0.5): the smallest n with the Wilson half-width <= halfwidth."""
    if not 0 < halfwidth < 0.5:
        raise ValueError(f"halfwidth must be in (0, 0.5); got {halfwidth}")
    n = 1
    while True:
        lo, hi = wilson(round(p * n), n, z)
        if (hi - lo) / 2 <= halfwidth:
            return n
        n += 1


@dataclass(frozen=True)
class SuccessFigure:
    """One success rate: ``successes`` of ``trials`` of one ``kind`` (see KINDS)."""

    kind: str
    successes: int
    trials: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown success kind {self.kind!r}; one of {', '.join(KINDS)}")
        wilson(self.successes, self.trials)  # checks the counts

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.trials)

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def projectable(self) -> bool:
        """Narrow enough to project from (see MAX_PROJECTABLE_WIDTH)."""
        lo, hi = self.interval
        return self.trials > 0 and hi - lo <= MAX_PROJECTABLE_WIDTH

    def text(self) -> str:
        """'13/20 = 65 % (95 % CI 43-82 %, n=20)' — the one way a figure is written."""
        if not self.trials:
            return "no trials yet"
        lo, hi = self.interval
        return (f"{self.successes}/{self.trials} = {100 * self.successes / self.trials:.0f} % "
                f"(95 % CI {100 * lo:.0f}-{100 * hi:.0f} %, n={self.trials})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts (``n`` is ``trials``), rate, interval, label and text."""
        lo, hi = self.interval
        return {**asdict(self), "n": self.trials, "rate": self.rate, "ci95": [lo, hi], "label": self.label,
                "text": self.text()}


def best_figure(figures: list[SuccessFigure]) -> SuccessFigure | None:
    """The best success signal among ``figures`` that has trials: trials on the arms first, then
    real time, then the fast sim estimate (demonstrations are never the policy's figure)."""
    ranked = [f for f in figures if f.trials and f.kind != "demo"]
    ranked.sort(key=lambda f: KINDS.index(f.kind))
    return ranked[0] if ranked else None


__all__ = ["KINDS", "KIND_LABELS", "MAX_PROJECTABLE_WIDTH", "SuccessFigure", "best_figure",
           "trials_for_halfwidth", "wilson"]

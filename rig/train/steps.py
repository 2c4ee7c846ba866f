"""The one step loop both training recipes run (the visuomotor trainer and the quick policy).

A recipe brings what differs: its optimisation step and the state that step changes (a
:class:`Stepper`). The loop brings what they share: the step count (a seeded count, or as many
steps as a time budget allows, timed by a short probe whose changes are undone), the warm-up and
cosine learning-rate schedule, the ceiling in time, stopping when asked, the smoothed loss curve,
progress, and copies of the weights at given training seconds.

Determinism: with a fixed step count the recipe's seeded start and this loop give the same
weights on the same machine; a time budget picks the count from the probe and then runs that
many steps from the seeded start (the probe's changes, the global torch RNG's included, are
undone), so the count in the result reproduces the run exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rig.train import TrainError, require_torch

torch = require_torch()


class Stepper(Protocol):
    def step(self, lr: float, s: int) -> float:
        """One optimisation step at learning rate ``lr`` (``s``: its index); returns the loss."""

    def save(self) -> Any:
        """Everything a step changes (weights, optimiser, the recipe's own RNG)."""

    def restore(self, saved: Any) -> None:
        """Back to what :meth:`save` returned."""


@dataclass(frozen=True)
class StepPlan:
    """How long the loop runs and how it reports."""

    lr: float
    steps: int | None  # a fixed count (reproducible on any machine), or None: as many as budget_s allows
    budget_s: float
    max_steps: int
    min_steps: int = 10  # a time budget never gives fewer
    probe_steps: int = 8  # timing probe length (after one warm-up step): fewer misjudge a machine under load
    ceiling_s: float | None = None  # stop this long after the start, whatever the count (None: never)
    loss_decay: float = 0.9  # the loss curve is this exponential moving average of the step losses
    points: int = 50  # about this many points on the loss curve


@dataclass
class StepResult:
    steps: int  # steps done
    planned: int  # steps planned (the schedule's length)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (steps done, smoothed loss)
    stopped: bool = False  # should_stop ended it


def pick_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} asked for but torch sees no CUDA GPU; use --device cpu")
    return name


def seeded(seed: int) -> np.random.Generator:
    """Seed torch (initialisation, noise draws) and return the recipe's batch generator."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over the first 5 % of the steps, then a cosine down to 5 % of ``base``."""
    warm = max(1, total // 20)
    if step < warm:
        return base * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _rng_state() -> tuple:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(st: tuple) -> None:
    torch.set_rng_state(st[0])
    if st[1] is not None:
        torch.cuda.set_rng_state_all(st[1])


def planned_steps(stepper: Stepper, plan: StepPlan, t0: float) -> int:
    """The plan's count, or the count the time left allows, timed on the stepper and then undone."""
    if plan.steps is not None:
        return plan.steps
    saved, rng = stepper.save(), _rng_state()
    stepper.step(plan.lr, 0)  # warm-up: allocations, kernels
    tp = time.monotonic()
    for _ in range(plan.probe_steps):
        stepper.step(plan.lr, 0)
    per = (time.monotonic() - tp) / plan.probe_steps
    stepper.restore(saved)
    _set_rng_state(rng)
    left = plan.budget_s - (time.monotonic() - t0)
    return int(max(plan.min_steps, min(plan.max_steps, left / max(per, 1e-5))))


def run_steps(stepper: Stepper, plan: StepPlan, *, t0: float | None = None,
              progress: Callable[[float], None] | None = None, should_stop: Callable[[], bool] | None = None,
              deadline: float | None = None, marks_s: Sequence[float] = (),
              on_mark: Callable[[float, int], None] | None = None) -> StepResult:
    """Run the plan. ``t0``: when training started (time.monotonic; data preparation counts
    against the budget). ``deadline`` (time.monotonic) ends it early; ``should_stop`` (polled
    between steps) aborts with ``stopped``. ``on_mark(mark, steps done)`` is called once training
    has run ``mark`` seconds, for each of ``marks_s`` (before the next step)."""
    t0 = time.monotonic() if t0 is None else t0
    total = planned_steps(stepper, plan, t0)
    if plan.ceiling_s is not None:
        hard = t0 + plan.ceiling_s
        deadline = hard if deadline is None else min(deadline, hard)
    out = StepResult(0, total)
    marks = sorted(marks_s)
    every = max(1, total // plan.points)
    ema: float | None = None
    for s in range(total):
        if should_stop is not None and should_stop():
            out.stopped = True
            break
        if deadline is not None and time.monotonic() > deadline:
            break  # out of time: keep what was learned
        while marks and time.monotonic() - t0 >= marks[0]:
            m = marks.pop(0)
            if on_mark is not None:
                on_mark(m, s)
        loss = stepper.step(lr_at(s, total, plan.lr), s)
        ema = loss if ema is None else plan.loss_decay * ema + (1 - plan.loss_decay) * loss
        out.steps = s + 1
        if s % every == 0 or out.steps == total:
            out.losses.append((out.steps, round(ema, 5)))
            if progress is not None:
                progress(out.steps / total)
    return out


__all__ = ["StepPlan", "StepResult", "Stepper", "lr_at", "pick_device", "planned_steps", "run_steps", "seeded"]

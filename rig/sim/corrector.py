"""A scripted corrector: watches a policy trial on the simulated rig and takes over with the
leaders when the policy falls behind what the demonstrations do, as a person would.

"Falls behind" is the task's (``TaskSpec.stages`` and ``progress`` in rig/sim/tasks): a stage
(the cube lifted, at the handover, ...) not reached by the time the scripted demonstrations have
reached it, or fallen back from (a dropped object). Taking over is two moves of the world's
scripted operator, each planned from where the followers and the objects are now
(``ScriptedOperator(now=...)``): *release* (the leaders ease onto the followers' pose, both
grippers let go and back up, so whatever the policy held comes to rest), then *finish* (the rest
of the task, re-planned from there). The first leader motion is the loop's takeover
(rig/loop.py): the ticks from it on are recorded as source "takeover", and the take becomes
corrective (rig/trials.py ``mark_trial``), so training learns from those ticks only.

``python -m rig.sim.corrector --measure TASK`` prints when the demonstrations reach each event
(the numbers the task's stage deadlines are set from).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from .tasks import TaskSpec, get_task

WATCHING, RELEASING, FINISHING = "watching", "releasing", "finishing"


@dataclass
class Corrector:
    """``step(t_s)`` every few tenths of a second while a trial runs (``t_s``: since it began)."""

    world: Any  # rig.sim.launch.WorldHandle (or anything with its success / object_poses / take_over)
    spec: TaskSpec
    state: str = WATCHING
    reason: str | None = None  # why it took over
    took_over_s: float | None = None  # when (s from the trial's start)
    done_by_policy: bool = False  # the world saw the task done before anyone took over

    def step(self, t_s: float) -> str:
        """Watch, take over, or move on to finishing; returns the state."""
        if self.state == WATCHING:
            done = bool(self.world.success())
            self.done_by_policy = done
            reason = None if done else self.spec.behind(self.world.object_poses(), t_s)
            if reason is not None:
                self.reason, self.took_over_s = reason, t_s
                self.world.take_over("release")
                self.state = RELEASING
        elif self.state == RELEASING and self.world.operator_status()["done"]:
            self.world.take_over("finish")
            self.state = FINISHING
        return self.state

    @property
    def finished(self) -> bool:
        """The correction's plan has been played to its end."""
        return self.state == FINISHING and bool(self.world.operator_status()["done"])


def measure(task: str, seeds: range = range(8)) -> dict[str, tuple[float, float]]:
    """(earliest, latest) time of each event of the scripted demonstrations' plans over ``seeds``."""
    from .operator import plan_episode
    from .scene import SimScene

    scene = SimScene(task)
    seen: dict[str, list[float]] = {}
    for seed in seeds:
        plan = plan_episode(task, seed, scene)
        for t, text in [*plan.events, (plan.duration, "end of the plan")]:
            seen.setdefault(text, []).append(t)
    return {k: (min(v), max(v)) for k, v in seen.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rig.sim.corrector")
    p.add_argument("--measure", required=True, metavar="TASK", help="print the demonstrations' event times")
    args = p.parse_args(argv)
    spec = get_task(args.measure)
    for text, (lo, hi) in measure(spec.name).items():
        print(f"{text}: {lo:.1f}-{hi:.1f} s")
    print("stages: " + ", ".join(f"{s.name} by {s.deadline_s:g} s" for s in spec.stages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

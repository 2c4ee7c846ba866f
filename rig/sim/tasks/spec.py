"""What a simulated task is, as data: its objects, where they start, when it is done, how long a
trial lasts, how the scripted operator performs it, and what quick-train should do differently.

One module per task in this package defines ``TASK: TaskSpec`` (the module's name is the task's
name); the world, the operator, the trainers and the error messages read it from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.errors import RigError

if TYPE_CHECKING:  # the spec names them; it never imports them (they import the spec)
    from rig.sim.operator import ArmTrack, ScriptedOperator
    from rig.sim.scene import SimScene


class UnknownTask(RigError):
    pass


@dataclass(frozen=True, slots=True)
class ObjectPose:
    name: str  # the free joint's body
    pos: tuple[float, float, float]
    yaw: float = 0.0

    def qpos(self) -> np.ndarray:
        half = self.yaw / 2
        return np.array([*self.pos, math.cos(half), 0.0, 0.0, math.sin(half)])


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One movable object (a body with a free joint) and the range it starts in."""

    body: str  # the body's name in the model
    half_size: tuple[float, float, float]  # half extents of its bounding box (m, body frame)
    x: tuple[float, float]  # start range on the table (m, world frame; drawn uniformly)
    y: tuple[float, float]
    z: float  # the height of its origin when it rests on the table (m)


Positions = Mapping[str, Sequence[float]]  # each object's body name -> its position (m, world frame)


@dataclass(frozen=True, slots=True)
class Stage:
    """A point the scripted demonstrations reach by ``deadline_s`` (from the take's start): their
    slowest over seeds 0-7 (``python -m rig.sim.corrector --measure TASK``) plus a margin."""

    name: str  # what is done by then, in the rig's words ("the cube lifted")
    deadline_s: float


@dataclass(frozen=True)
class TaskSpec:
    name: str  # the module's name: what `--task` and a take's task field say
    summary: str  # one line for people: what the operator does
    scene: str  # the gym-aloha MJCF file the scene starts from (never copied)
    objects: tuple[ObjectSpec, ...]  # in the order start poses are drawn and objects are located
    success: Callable[[SimScene], bool]  # the state of the world says the task is done
    operate: Callable[[ScriptedOperator, ArmTrack, ArmTrack], None]  # the scripted operator's moves
    trial_s: float = 20.0  # one take / one trial (s): the scripted operator finishes well within it
    # Adds what the gym-aloha scene lacks (a ``mujoco.MjSpec`` edited in place); None: the file as is.
    build: Callable[[Any], None] | None = None
    # QuickConfig fields that differ from the defaults for this task (e.g. {"q_noise": 0.1}); the
    # command line's own flags win over them.
    recipe: Mapping[str, Any] = field(default_factory=dict)
    # Where a trial should be by when (the corrector takes over when it falls behind): the stages in
    # order, the last one the world's success check; ``progress`` says how many of the others the
    # object positions show reached (or passed: a stage's check holds after it, so a dropped
    # object counts as falling back). No stages: the corrector never takes over.
    stages: tuple[Stage, ...] = ()
    progress: Callable[[Positions], int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipe", MappingProxyType(dict(self.recipe)))

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    def start_poses(self, seed: int) -> list[ObjectPose]:
        """Where the objects start, drawn from the seed (x then y of each object, in order)."""
        rng = np.random.default_rng([seed, 0x5E])
        return [ObjectPose(o.body, (float(rng.uniform(*o.x)), float(rng.uniform(*o.y)), o.z))
                for o in self.objects]

    def behind(self, positions: Positions, t_s: float, done: bool = False) -> str | None:
        """Why a trial at ``t_s`` s with the objects at ``positions`` falls behind what the
        demonstrations do (one line), or None while it keeps up. ``done``: the world's success
        check holds (every stage reached)."""
        if done or not self.stages or self.progress is None:
            return None
        reached = self.stage_reached(positions)
        for i, stage in enumerate(self.stages):
            if stage.deadline_s <= t_s and i >= reached:
                return f"{stage.name}: not done at {t_s:.1f} s (the demonstrations are by {stage.deadline_s:g} s)"
        return None

    def stage_reached(self, positions: Positions) -> int:
        """The index of the first stage ``positions`` do not show reached (0 without ``progress``);
        the last stage is the success check, which positions never show."""
        return min(self.progress(positions), len(self.stages) - 1) if self.progress and self.stages else 0

    def quick_overrides(self) -> dict[str, Any]:
        """The QuickConfig fields this task sets: how many objects the locator finds, and the recipe."""
        return {"n_objects": self.n_objects, **self.recipe}

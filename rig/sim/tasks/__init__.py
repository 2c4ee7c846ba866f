"""The simulated tasks: one module each (its name is the task's name) defining ``TASK: TaskSpec``.

Adding a task is adding a module here (plus its tests and docs): the registry lists the package's
modules without importing them (the list is read where MuJoCo must not load, e.g. argument
parsing), and imports a task's module the first time it is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Iterable
from functools import cache
from typing import Any, TypeVar

from drivers.errors import RigError

from .spec import ObjectPose, ObjectSpec, TaskSpec, UnknownTask

__all__ = ["DEFAULT_TASK", "TASKS", "ObjectPose", "ObjectSpec", "TaskSpec", "UnknownTask", "apply_recipe",
           "get_task", "simulated_task", "task_names"]

DEFAULT_TASK = "transfer_cube"
_NOT_TASKS = {"spec"}
C = TypeVar("C")


def task_names() -> tuple[str, ...]:
    """Every task, the default first."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__)
                   if not m.name.startswith("_") and m.name not in _NOT_TASKS)
    return tuple(sorted(found, key=lambda n: n != DEFAULT_TASK))


TASKS = task_names()


@cache
def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UnknownTask(f"unknown sim task {name!r}; choose one of: {', '.join(TASKS)}")
    spec = importlib.import_module(f"{__name__}.{name}").TASK
    if spec.name != name:
        raise RigError(f"rig/sim/tasks/{name}.py names its task {spec.name!r}: a task is named after its module")
    return spec


def simulated_task(task: str | None, recorded: Iterable[str] = ()) -> str | None:
    """The simulated task of some takes: ``task`` when it names one, else the first of the takes'
    own task fields that does (None: no take has a success check)."""
    if task in TASKS:
        return task
    return next((t for t in recorded if t in TASKS), None)


def apply_recipe(config: C, task: str | None, **flags: Any) -> C:
    """``config`` (a quick-train config dataclass) with the task's overrides, then ``flags`` (the
    command line's), applied; an unknown task or none: the flags only."""
    spec = get_task(task) if task in TASKS else None
    overrides = {**(spec.quick_overrides() if spec else {}), **flags}
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise RigError(f"the {task} task's recipe sets {', '.join(unknown)}, which quick-train's config does not have; "
                       f"fix `recipe` in rig/sim/tasks/{task}.py")
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var]

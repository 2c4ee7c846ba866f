"""Quick-train: a small policy trained on the episodes as they arrive, turned into feedback.

- ``data``: Zarr episodes -> (down-scaled camera frames, joint state) at each tick -> next K actions.
- ``model``: a small CNN per camera plus an MLP head predicting an action chunk.
- ``steps``: the one step loop both recipes run (count or time budget, schedule, stop, loss curve).
- ``trainer``: seeded training with held-out *episodes* for validation, CPU or GPU.
- ``feedback``: per-joint error in physical units, per-episode scores and flags, learning curve.
- ``rollout``: closed-loop success rate in the simulated world.
- ``report``: the one report: success figures with n and 95 % intervals, the curve, the projection.
- ``background``: the same in a niced, single-threaded process beside the teleop loop.

torch is an optional extra (``pip install -e '.[train]'``); it is imported only when needed.
"""

from __future__ import annotations

from typing import Any

from drivers.errors import RigError


class TrainError(RigError):
    """Quick-train cannot run (missing torch, too few episodes, ...)."""


def require_torch() -> Any:
    """Import torch, or fail with the install hint."""
    try:
        import torch
    except ImportError:
        raise TrainError("quick-train needs PyTorch, which is not installed: run pip install -e '.[train]'") from None
    return torch


__all__ = ["TrainError", "require_torch"]

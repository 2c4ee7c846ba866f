"""The quick-trainer's latest policy, on disk beside the dataset, for the policy-on-arms key.

The background trainer runs in its own process and the rig in the engine's: the policy crosses
between them as a file in the trainer's save format (``TrainedPolicy.state()`` through
``torch.save``, as `rig train --save` writes). It is replaced atomically after each pass, so a
reader never sees half a file.

    data/rig.zarr  ->  data/rig.zarr.policy.pt
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rig.train import TrainError, require_torch

SUFFIX = ".policy.pt"


def latest_policy_path(dataset: str | os.PathLike[str]) -> Path:
    p = Path(dataset)
    return p.with_name(p.name + SUFFIX)


def save_latest(policy: Any, dataset: str | os.PathLike[str]) -> Path:
    """Write ``policy`` (a TrainedPolicy) as the dataset's latest policy; returns the path."""
    torch = require_torch()
    path = latest_policy_path(dataset)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(policy.state(), tmp)
    os.replace(tmp, path)
    return path


def load_latest(dataset: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, device: str = "cpu"):
    """The latest policy trained on ``dataset`` (or the file at ``path``), ready to predict."""
    torch = require_torch()
    from rig.train.trainer import TrainedPolicy

    file = Path(path) if path is not None else latest_policy_path(dataset)
    if not file.exists():
        raise TrainError(f"no trained policy at {file}: quick-train saves one after its first pass (2 kept takes), "
                         f"or train one with `rig train {dataset} --save {file}`")
    try:
        state = torch.load(file, map_location=device, weights_only=True)
        return TrainedPolicy.from_state(state, device=device)
    except Exception as exc:  # a file of another version or a damaged one: say which and what to do
        raise TrainError(f"the policy at {file} cannot be loaded ({type(exc).__name__}: {exc}); "
                         f"retrain it (`rig train {dataset} --save {file}`)") from None


__all__ = ["SUFFIX", "latest_policy_path", "load_latest", "save_latest"]

"""The quick-trainer's latest policy, on disk beside the dataset, for the policy-on-arms key.

The background trainer runs in its own process and the rig in the engine's: the policy crosses
between them as a policy file (rig/train/policy_file.py: the one format that `rig train --save`
writes too), replaced atomically after every pass whichever recipe it trained, so a reader never
sees half a file.

    data/rig.zarr  ->  data/rig.zarr.policy.pt
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rig.train import TrainError
from rig.train.policy_file import load_policy, save_policy

SUFFIX = ".policy.pt"


def latest_policy_path(dataset: str | os.PathLike[str]) -> Path:
    p = Path(dataset)
    return p.with_name(p.name + SUFFIX)


def save_latest(policy: Any, dataset: str | os.PathLike[str]) -> Path:
    """Write ``policy`` (any kind the policy file knows) as the dataset's latest policy; returns the path."""
    return save_policy(policy, latest_policy_path(dataset), dataset=dataset)


def load_latest(dataset: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, device: str = "cpu"):
    """The latest policy trained on ``dataset`` (or the file at ``path``), ready to predict."""
    file = Path(path) if path is not None else latest_policy_path(dataset)
    if not file.exists():
        raise TrainError(f"no trained policy at {file}: quick-train saves one after its first pass (2 kept takes), "
                         f"or train one with `rig train {dataset} --save {file}`")
    return load_policy(file, device=device, retrain=f"`rig train {dataset} --save {file}`")


__all__ = ["SUFFIX", "latest_policy_path", "load_latest", "save_latest"]

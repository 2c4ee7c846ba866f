"""One policy file format, one loader by kind.

What `rig train --save` and the app's quick-trainer write is what `rig collect --policy`, `p` in
the app and trials load: a ``torch.save``'d dict (loaded back with ``weights_only=True``: plain
containers and tensors, nothing executable)::

    {"format": "rig-policy", "version": 1, "kind": "quick" | "visuomotor" | "scripted",
     "meta": {task, cameras, image_hw, n, k, rate_hz, dataset, steps, episodes, created},
     "state": the kind's own state (``policy.state()``),
     "reference": the empty-scene frame its object locator compares against (quick, if any)}

``KINDS`` maps a kind to its loader (``state, device -> policy``); a new kind registers itself
with :func:`register_kind` and every reader gets it. A file of an earlier format (a bare
``policy.state()``) or any other file is refused with one line naming what it is and what to do.
Files are written atomically (a temporary beside it, then a rename), so a reader never sees half
of one, and :func:`policy_digest` names a file's exact bytes (trials record it).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rig.train import TrainError, require_torch

FORMAT = "rig-policy"
VERSION = 1
CONTROL_RATE_HZ = 50.0  # a chunk's actions are one per tick of the rig's loop

Loader = Callable[[dict, str], Any]


class PolicyFileError(TrainError):
    """A file that is not a policy this rig can load; the message names what it is."""


def _load_quick(state: dict, device: str) -> Any:
    from rig.train.quick import QuickPolicy

    return QuickPolicy.from_state(state)


def _load_visuomotor(state: dict, device: str) -> Any:
    from rig.train.trainer import TrainedPolicy

    return TrainedPolicy.from_state(state, device=device)


def _load_scripted(state: dict, device: str) -> Any:
    from rig.train.rollout import ScriptedPolicy

    return ScriptedPolicy(state["task"], k=int(state.get("k", 20)))


KINDS: dict[str, Loader] = {"quick": _load_quick, "visuomotor": _load_visuomotor, "scripted": _load_scripted}


def register_kind(kind: str, loader: Loader) -> None:
    """A new kind of policy: ``loader(state, device)`` builds it from what its ``state()`` gave."""
    KINDS[kind] = loader


def policy_payload(policy: Any, dataset: str | os.PathLike[str] | None = None) -> dict:
    """What a policy file holds (see the module's docstring)."""
    state = policy.state()
    kind = state.get("kind")
    if kind not in KINDS:
        raise PolicyFileError(f"a {type(policy).__name__} (state kind {kind!r}) has no policy file kind; known: "
                              f"{', '.join(sorted(KINDS))}")
    cfg = policy.cfg
    meta = {"task": str(getattr(policy, "task", "") or ""), "cameras": [str(c) for c in cfg.cameras],
            "image_hw": [int(v) for v in cfg.image_hw], "n": int(cfg.n), "k": int(cfg.k),
            "rate_hz": CONTROL_RATE_HZ, "dataset": None if dataset is None else str(dataset),
            "steps": int(getattr(policy, "steps", 0)),
            "episodes": [int(i) for i in getattr(policy, "episodes", [])],
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    out = {"format": FORMAT, "version": VERSION, "kind": kind, "meta": meta, "state": state}
    ref = _reference_state(getattr(policy, "reference", None))
    if ref is not None:
        out["reference"] = ref
    return out


def save_policy(policy: Any, path: str | os.PathLike[str], dataset: str | os.PathLike[str] | None = None) -> Path:
    """Write ``policy`` to ``path`` in the one format, atomically; returns the path."""
    torch = require_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = policy_payload(policy, dataset)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_policy_file(path: str | os.PathLike[str], retrain: str | None = None) -> dict:
    """The file's payload, checked: one line naming what the file is when it is not a policy
    this rig can load. ``retrain``: the command that makes a new one (said in that line)."""
    file = Path(path)
    fix = f"retrain it ({retrain})" if retrain else "retrain it with `rig train DATASET --save PATH`"
    if not file.exists():
        raise PolicyFileError(f"no policy file at {file}: train one with {retrain or '`rig train DATASET --save PATH`'}")
    if file.is_dir():
        raise PolicyFileError(f"{file} is a directory, not a policy file: give the file `rig train --save` wrote")
    if not zipfile.is_zipfile(file):  # every torch.save since torch 1.6 is a zip archive
        raise PolicyFileError(f"{file} is not a policy file (not a torch file at all): give the file "
                              "`rig train --save` wrote")
    torch = require_torch()
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torch file holding code or objects, or a damaged one
        raise PolicyFileError(f"{file} is a torch file but not a rig policy ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'}); {fix}") from None
    if not isinstance(payload, dict):
        raise PolicyFileError(f"{file} is a torch file holding a {type(payload).__name__}, not a rig policy; {fix}")
    if payload.get("format") != FORMAT:
        if "model" in payload and "norm" in payload:
            what = "a visuomotor policy in the format before rig-policy files"
        elif payload.get("kind") == "quick" and "net" in payload:
            what = "a quick policy in the format before rig-policy files"
        else:
            what = "a torch file but not a rig policy (no rig-policy header)"
        raise PolicyFileError(f"{file} is {what}; {fix}")
    version = payload.get("version")
    if version != VERSION:
        raise PolicyFileError(f"{file} is a rig-policy file of version {version}, and this rig reads version "
                              f"{VERSION}; {fix}, or update rig")
    kind = payload.get("kind")
    if kind not in KINDS:
        raise PolicyFileError(f"{file} holds a policy of kind {kind!r}, which this rig cannot run (it knows "
                              f"{', '.join(sorted(KINDS))}); {fix}, or update rig")
    return payload


def load_policy(path: str | os.PathLike[str], device: str = "cpu", retrain: str | None = None) -> Any:
    """The one loader: the policy in the file at ``path``, ready to predict."""
    payload = read_policy_file(path, retrain)
    try:
        policy = KINDS[payload["kind"]](payload["state"], device)
    except Exception as exc:  # a header that promises a kind its state does not hold
        raise PolicyFileError(f"{path} says it holds a {payload['kind']} policy but its state does not load "
                              f"({type(exc).__name__}: {exc}); retrain it") from None
    ref = payload.get("reference")
    if ref is not None and hasattr(policy, "reference"):
        policy.reference = _reference_from_state(ref)
    policy.file_meta = {**payload["meta"], "kind": payload["kind"]}  # what the header says: task, cameras, ...
    return policy


def policy_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file's bytes (hex): which policy exactly a trial ran."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _reference_state(ref: Any) -> dict | None:
    """The quick policy's empty-scene frame (a sim Reference or an array) as tensors."""
    if ref is None:
        return None
    torch = require_torch()
    if hasattr(ref, "frame"):
        return {"camera": str(ref.camera), "source": str(getattr(ref, "source", "")),
                "frame": torch.from_numpy(np.ascontiguousarray(ref.frame, np.uint8)),
                "arm_mask": torch.from_numpy(np.ascontiguousarray(ref.arm_mask, bool))}
    return {"frame": torch.from_numpy(np.ascontiguousarray(ref, np.uint8))}


def _reference_from_state(st: dict) -> Any:
    frame = st["frame"].numpy()
    if "arm_mask" not in st:
        return frame
    from rig.sim.reference import Reference

    return Reference(st["camera"], frame, st["arm_mask"].numpy(), st.get("source", ""))


__all__ = ["FORMAT", "KINDS", "PolicyFileError", "VERSION", "load_policy", "policy_digest",
           "policy_payload", "read_policy_file", "register_kind", "save_policy"]

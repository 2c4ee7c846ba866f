"""Streams computed from an episode after its take (e.g. the handheld gripper's ``pose``).

A derived stream is an ordinary stream (``streams/<name>/<field>`` + ``t_ns``, CRC-32C chunks,
readable by ``Episode.read_stream``) with ``attrs["derived"]`` saying what made it. Computing it
again replaces it whole: it is built beside the episode's streams under a hidden name and moved
into place, so a crash leaves either the old stream or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from recorder import layout
from recorder.errors import RecorderError
from recorder.integrity import ARRAY_CONFIG, checksum_codecs
from recorder.layout import T_NS, jsonable


def write_derived_stream(dataset: str | os.PathLike[str], index: int, name: str, t_ns: np.ndarray,
                         columns: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                         rate_hz: float | None = None) -> Path:
    """Write (or replace) stream ``name`` of episode ``index`` from whole columns."""
    ep = layout.episode_path(Path(dataset), index)
    if not (ep / "zarr.json").is_file():
        raise RecorderError(f"{dataset} has no episode {index}")
    t_ns = np.asarray(t_ns, np.int64)
    tmp = ep / f".derived-{name}-{os.getpid()}"
    final = ep / layout.STREAMS / name
    shutil.rmtree(tmp, ignore_errors=True)
    fields = {k: [list(np.asarray(v).shape[1:]), np.asarray(v).dtype.str] for k, v in columns.items()}
    grp = zarr.open_group(str(tmp), mode="w-", attributes=jsonable(
        {"rate_hz": float(rate_hz or 0.0), "fields": fields, "derived": dict(attrs)}))
    chunk = max(1, min(len(t_ns), 4096))
    for k, v in [*columns.items(), (T_NS, t_ns)]:
        v = np.asarray(v)
        arr = grp.create_array(k, shape=v.shape, chunks=(chunk, *v.shape[1:]), dtype=v.dtype,
                               compressors=checksum_codecs(True), config=ARRAY_CONFIG, fill_value=0)
        if len(v):
            arr[:] = v
    if final.exists():
        old = ep / f".derived-old-{name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        final.parent.mkdir(exist_ok=True)
        os.rename(tmp, final)
    return final


# ---- the handheld gripper's pose as end-effector state and action (for the exporters) -----------

POSE = "pose"  # the derived stream rig/pose/episode.py writes
GRIPPER = "gripper"  # the handheld gripper's stream (its jaw opening)
EE_NAMES = ["ee.x", "ee.y", "ee.z", "ee.qw", "ee.qx", "ee.qy", "ee.qz", "gripper.jaw"]
EE_RATE_HZ = 50.0  # the exporters' default row rate for a handheld episode


def end_effector(ep, rate_hz: float | None = None) -> dict[str, np.ndarray]:
    """The pose as end-effector state and action, for an exporter.

    state (n, 8) (``EE_NAMES``): the jaw's position (board frame, m), the gripper's orientation
    (w x y z, board frame) and the jaw opening (0 closed .. 1 open, from the gripper stream);
    action: the next row's state (where the hand went), as a teleoperated arm's action is its next
    commanded pose (UMI's convention). ``valid`` is False where either has no trusted pose (their
    values are then NaN: never invented). ``rate_hz`` resamples to that rate (the next sample).
    """
    s = ep.read_stream(POSE)
    g = ep.read_stream(GRIPPER)
    t = s[T_NS]
    if rate_hz and len(t) > 1:
        grid = np.arange(t[0], t[-1], int(1e9 / rate_hz))
        k = np.clip(np.searchsorted(t, grid), 0, len(t) - 1)
        s = {key: v[k] for key, v in s.items()}
        t = grid
    jaw = np.interp(t, g[T_NS], g["jaw"]) if len(g[T_NS]) else np.full(len(t), np.nan)
    state = np.column_stack([s["jaw_position"], s["quat"], jaw]) if len(t) else np.zeros((0, 8))
    ok = s["trusted"].astype(bool) & np.isfinite(state).all(axis=1) if len(t) else np.zeros(0, bool)
    state[~ok] = np.nan
    action = np.roll(state, -1, axis=0)
    valid = ok & np.roll(ok, -1)
    if len(valid):
        valid[-1] = False
        action[-1] = np.nan
    return {T_NS: t, "state": state, "action": action, "valid": valid}


def is_handheld(ep, stream: str) -> bool:
    """An exporter's tick stream is missing but the episode has a pose: export the pose instead."""
    return stream not in ep.streams and POSE in ep.streams


def pose_rows(ep, state: str, action: str, rate_hz: float | None = None) -> dict[str, np.ndarray]:
    """A handheld episode's end effector as rows an exporter reads like its tick stream, under the
    exporter's own field names for state and action, plus ``pose_valid`` (1: both trusted)."""
    ee = end_effector(ep, rate_hz or EE_RATE_HZ)
    return {T_NS: ee[T_NS], state: ee["state"], action: ee["action"], "pose_valid": ee["valid"].astype(np.uint8)}

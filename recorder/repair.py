"""What the arrays of an episode say about it (row counts, duration), and trimming a crashed one.

Used by the writer (to leave a failed episode consistent) and by the dataset (to list and
recover episodes), so it imports neither of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from recorder import layout
from recorder.errors import fs_error
from recorder.integrity import read_rows
from recorder.layout import T_NS, Status


def last_row(t: np.ndarray) -> int:
    """Rows up to the last time stamp: a live or crashed episode's arrays have spare rows past it."""
    nz = np.flatnonzero(t)
    return int(nz[-1]) + 1 if nz.size else 0


def counts_from_arrays(grp: zarr.Group, index: int = -1) -> tuple[dict[str, int], dict[str, int]]:
    streams: dict[str, int] = {}
    cameras: dict[str, int] = {}
    for kind, out in ((layout.STREAMS, streams), (layout.CAMERAS, cameras)):
        if kind in grp:
            for name, sub in grp[kind].groups():
                if T_NS not in sub:
                    out[name] = 0
                    continue
                t = read_rows(sub[T_NS], index, f"{kind}/{name}/{T_NS}", valid=0)
                out[name] = int(np.count_nonzero(t))
    return streams, cameras


def duration_from_arrays(grp: zarr.Group, index: int = -1) -> float:
    lo, hi = None, None
    for kind in (layout.STREAMS, layout.CAMERAS):
        if kind not in grp:
            continue
        for name, sub in grp[kind].groups():
            if T_NS not in sub or sub[T_NS].shape[0] == 0:
                continue
            t = read_rows(sub[T_NS], index, f"{kind}/{name}/{T_NS}", valid=0)
            t = t[t > 0]
            if t.size:
                lo = t.min() if lo is None else min(lo, t.min())
                hi = t.max() if hi is None else max(hi, t.max())
    return 0.0 if lo is None or hi is None else (int(hi) - int(lo)) / 1e9


def recover_episode_dir(path: Path, note: str | None = None, index: int = -1) -> dict[str, int]:
    """Trim every stream/camera of the episode at ``path`` to its last consistent row.

    The writer stores ``t_ns`` last in each flush, so a row is complete in every array once its
    ``t_ns`` is non-zero. Leftover ``*.partial`` temp files of an interrupted write are removed.
    """
    try:
        for tmp in path.rglob("*.partial"):
            tmp.unlink(missing_ok=True)
        grp = zarr.open_group(str(path), mode="r+")
        lengths: dict[str, int] = {}
        for kind in (layout.STREAMS, layout.CAMERAS):
            if kind not in grp:
                continue
            for name, sub in grp[kind].groups():
                arrays = dict(sub.arrays())
                if T_NS not in arrays:
                    continue
                n = min(a.shape[0] for a in arrays.values())
                n = last_row(read_rows(arrays[T_NS], index, f"{kind}/{name}/{T_NS}", 0, n, valid=0))
                for arr in arrays.values():
                    if arr.shape[0] != n:
                        arr.resize((n, *arr.shape[1:]))
                lengths[f"{kind}/{name}"] = n
        streams, cameras = counts_from_arrays(grp, index)
        attrs: dict[str, Any] = {
            "status": Status.RECOVERED.value,
            "counts": {"streams": streams, "cameras": cameras},
            "duration_s": duration_from_arrays(grp, index),
        }
        if note:
            attrs["note"] = note
        grp.update_attributes(attrs)
    except OSError as e:
        raise fs_error(e, f"recovering episode {index}", path) from None
    return lengths


def remove_episode_dir(path: Path) -> None:
    """Remove an episode that never got data (a start that failed); nothing recorded is lost."""
    shutil.rmtree(path, ignore_errors=True)

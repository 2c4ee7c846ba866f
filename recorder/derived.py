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

"""Checksums on every chunk, and damage named by episode, array and chunk.

Every array the writer makes ends its codec chain with zarr v3's ``crc32c`` codec: 4 bytes of
CRC-32C after each (compressed) chunk, checked by zarr on every read. The writer also stores
every chunk, even one that is all fill value (``write_empty_chunks``), so a chunk file that is
missing where the array has rows is damage too, never silent zeros. Arrays written before the
codec existed (no ``crc32c`` in their metadata) are read as before and called "unverified".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from recorder.errors import RecorderError

CHECKSUM = "crc32c"
# zarr leaves out chunks that hold only the fill value unless told otherwise; we store them all.
ARRAY_CONFIG: dict[str, Any] = {"write_empty_chunks": True}


def checksum_codecs(compress: bool = True) -> list:
    """The bytes-to-bytes codecs of a recorder array: zstd (numbers) then the CRC-32C trailer."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=0), Crc32cCodec()] if compress else [Crc32cCodec()]


@dataclass(frozen=True)
class Damage:
    """One damaged thing: ``array`` is its path inside the episode (``zarr.json`` for the episode)."""

    episode: int
    array: str
    chunk: int | None
    reason: str

    def __str__(self) -> str:
        where = self.array + ("" if self.chunk is None else f" chunk {self.chunk}")
        return f"episode {self.episode}: {where}: {self.reason}"


class DamagedEpisodeError(RecorderError):
    """An episode whose stored bytes fail their checksum, lack a chunk or cannot be parsed."""

    def __init__(self, damage: Damage) -> None:
        if damage.array == "zarr.json":  # the episode's own metadata: --discard cannot write to it
            fix = f"restore it from a copy or move its directory (episodes/{damage.episode:06d}) out of the dataset"
        else:
            fix = (f"run `rig verify DATASET` for every damaged chunk, then restore the episode from a copy or "
                   f"discard it with `rig episodes DATASET --discard {damage.episode}`")
        super().__init__(f"{damage}; {fix}")
        self.damage = damage


class DamagedDatasetError(RecorderError):
    """The dataset's own metadata (its root zarr.json) cannot be read."""


def has_checksum(arr: zarr.Array) -> bool:
    return any(c.to_dict().get("name") == CHECKSUM for c in arr.metadata.codecs)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "checksum" in text.lower():
        return "checksum mismatch (the bytes changed after they were written)"
    return f"unreadable ({type(exc).__name__}: {text[:120]})"


def _chunk_exists(arr: zarr.Array, chunk: int) -> bool:
    key = arr.metadata.encode_chunk_key((chunk,) + (0,) * (arr.ndim - 1))
    store = arr.store_path.store
    full = f"{arr.store_path.path}/{key}".lstrip("/")
    root = getattr(store, "root", None)
    if root is not None:  # LocalStore: one stat
        return os.path.exists(os.path.join(root, full))
    from zarr.core.sync import sync

    return bool(sync(store.exists(full)))


def _chunk_range(arr: zarr.Array, start: int, stop: int) -> range:
    c = int(arr.chunks[0])
    return range(start // c, math.ceil(stop / c)) if stop > start else range(0)


def check_rows(
    arr: zarr.Array, episode: int, name: str, start: int = 0, stop: int | None = None, *, valid: int | None = None,
    read: bool = True,
) -> list[Damage]:
    """Damage in rows [start, stop) of ``arr``: missing chunks (within the first ``valid`` rows,
    which should all be on disk) and, with ``read``, chunks that fail their checksum or decode."""
    n = int(arr.shape[0]) if arr.ndim else 0
    stop = n if stop is None else min(stop, n)
    out: list[Damage] = []
    if arr.ndim == 0 or stop <= start:
        return out
    c = int(arr.chunks[0])
    limit = n if valid is None else min(valid, n)
    checked = has_checksum(arr)
    missing = {k for k in _chunk_range(arr, start, min(stop, limit)) if checked and not _chunk_exists(arr, k)}
    out.extend(
        Damage(episode, name, k, "chunk file missing (it would read back as fill values)") for k in sorted(missing)
    )
    if read:
        try:
            arr[start:stop]  # one read decodes (and checksums) every chunk; chunk by chunk only on failure
        except Exception:
            for k in _chunk_range(arr, start, stop):
                if k in missing:
                    continue
                try:
                    arr[k * c : min((k + 1) * c, n)]
                except Exception as exc:  # any failure to decode stored bytes is damage
                    out.append(Damage(episode, name, k, _short(exc)))
    return out


def read_rows(
    arr: zarr.Array, episode: int, name: str, start: int | None = None, stop: int | None = None,
    valid: int | None = None,
) -> np.ndarray:
    """``arr[start:stop]`` with every chunk it covers present and passing its checksum, else
    DamagedEpisodeError naming the episode, the array and the first bad chunk."""
    n = int(arr.shape[0])
    s, e, _ = slice(start, stop).indices(n)
    if has_checksum(arr):
        c = int(arr.chunks[0])
        limit = n if valid is None else min(valid, n)
        for k in _chunk_range(arr, s, min(e, limit)):
            if not _chunk_exists(arr, k):
                raise DamagedEpisodeError(
                    Damage(episode, name, k, f"chunk file missing (rows {k * c}-{min((k + 1) * c, n) - 1})")
                )
    try:
        return arr[s:e]
    except Exception as exc:
        bad = check_rows(arr, episode, name, s, e, valid=valid)
        raise DamagedEpisodeError(bad[0] if bad else Damage(episode, name, None, _short(exc))) from None


def open_node(path: Path, episode: int, name: str, opener: Callable[..., Any], **kw: Any) -> Any:
    """Open a zarr group or array, turning unreadable metadata into a DamagedEpisodeError."""
    try:
        return opener(str(path), **kw)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        meta = f"{name}/zarr.json" if name else "zarr.json"
        raise DamagedEpisodeError(Damage(episode, meta, None, f"metadata unreadable ({type(exc).__name__})")) from None


def iter_arrays(episode_dir: Path) -> Iterator[str]:
    """Paths (inside the episode) of every array node, found on disk so one bad node hides no other."""
    for meta in sorted(episode_dir.rglob("zarr.json")):
        rel = meta.parent.relative_to(episode_dir).as_posix()
        if rel == "." or "/c/" in f"/{rel}/":
            continue
        try:
            node_type = json.loads(meta.read_bytes()).get("node_type")
        except (ValueError, UnicodeDecodeError, OSError):
            node_type = "array?"  # unreadable: reported when opened
        if node_type != "group":
            yield rel

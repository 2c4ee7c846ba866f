"""Dataset (a directory of episodes) and Episode (reading one back)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from recorder import layout
from recorder.align import Alignment, align_frames_to_ticks
from recorder.codec import decode_jpeg
from recorder.errors import EpisodeNotFoundError, RecorderError
from recorder.layout import T_NS, Status, jsonable
from recorder.writer import _ACTIVE, EpisodeWriter, WriterOptions, _boot_id


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    path: Path
    status: str
    success: bool | None
    task: str
    operator: str
    start_wall: str
    duration_s: float
    stream_counts: dict[str, int]
    camera_counts: dict[str, int]
    dropped: dict[str, int] = field(default_factory=dict)
    note: str | None = None

    @property
    def flags(self) -> list[str]:
        out = []
        if self.status == Status.RECORDING.value:
            out.append("incomplete")
        if any(self.dropped.values()):
            out.append("dropped:" + ",".join(f"{k}={v}" for k, v in self.dropped.items() if v))
        if self.note:
            out.append("note")
        return out


def _open_group(path: Path, mode: str = "r") -> zarr.Group:
    return zarr.open_group(str(path), mode=mode)


def _counts_from_arrays(grp: zarr.Group) -> tuple[dict[str, int], dict[str, int]]:
    streams: dict[str, int] = {}
    cameras: dict[str, int] = {}
    for kind, out in ((layout.STREAMS, streams), (layout.CAMERAS, cameras)):
        if kind in grp:
            for name, sub in grp[kind].groups():
                # rows with a time stamp: arrays of a live or crashed episode have spare rows
                out[name] = int(np.count_nonzero(sub[T_NS][:])) if T_NS in sub else 0
    return streams, cameras


def _info_from_group(index: int, path: Path, grp: zarr.Group) -> EpisodeInfo:
    a = dict(grp.attrs)
    counts = a.get("counts")
    if counts:
        streams, cameras = counts.get("streams", {}), counts.get("cameras", {})
    else:  # still recording or crashed: the arrays tell
        streams, cameras = _counts_from_arrays(grp)
    dropped: dict[str, int] = {}
    ws = a.get("writer_stats") or {}
    for kind in ("streams", "cameras"):
        for name, s in (ws.get(kind) or {}).items():
            dropped[name] = int(s.get("dropped", 0))
    duration = a.get("duration_s")
    if duration is None:
        duration = _duration_from_arrays(grp)
    return EpisodeInfo(
        index=index,
        path=path,
        status=a.get("status", Status.RECORDING.value),
        success=a.get("success"),
        task=a.get("task", ""),
        operator=a.get("operator", ""),
        start_wall=a.get("start_wall", ""),
        duration_s=float(duration),
        stream_counts={k: int(v) for k, v in streams.items()},
        camera_counts={k: int(v) for k, v in cameras.items()},
        dropped=dropped,
        note=a.get("note"),
    )


def _duration_from_arrays(grp: zarr.Group) -> float:
    lo, hi = None, None
    for kind in (layout.STREAMS, layout.CAMERAS):
        if kind not in grp:
            continue
        for _, sub in grp[kind].groups():
            if T_NS not in sub or sub[T_NS].shape[0] == 0:
                continue
            t = sub[T_NS][:]
            t = t[t > 0]
            if t.size:
                lo = t.min() if lo is None else min(lo, t.min())
                hi = t.max() if hi is None else max(hi, t.max())
    return 0.0 if lo is None else (int(hi) - int(lo)) / 1e9


def _writer_alive(attrs: Mapping[str, Any], path: Path) -> bool:
    if str(path) in _ACTIVE:
        return True
    w = attrs.get("writer") or {}
    pid = w.get("pid")
    if not pid or w.get("host") != socket.gethostname() or w.get("boot_id", "") != _boot_id():
        return False
    if pid == os.getpid():
        return False  # our own process holds no writer for it (checked above)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_episode_dir(path: Path, note: str | None = None) -> dict[str, int]:
    """Trim every stream/camera of the episode at ``path`` to its last consistent row.

    The writer stores ``t_ns`` last in each flush, so a row is complete in every array once its
    ``t_ns`` is non-zero. Leftover ``*.partial`` temp files of an interrupted write are removed.
    """
    for tmp in path.rglob("*.partial"):
        tmp.unlink(missing_ok=True)
    grp = _open_group(path, mode="r+")
    lengths: dict[str, int] = {}
    for kind in (layout.STREAMS, layout.CAMERAS):
        if kind not in grp:
            continue
        for name, sub in grp[kind].groups():
            arrays = dict(sub.arrays())
            if T_NS not in arrays:
                continue
            n = min(a.shape[0] for a in arrays.values())
            t = arrays[T_NS][:n]
            nz = np.flatnonzero(t)
            n = int(nz[-1]) + 1 if nz.size else 0
            for arr in arrays.values():
                if arr.shape[0] != n:
                    arr.resize((n, *arr.shape[1:]))
            lengths[f"{kind}/{name}"] = n
    streams, cameras = _counts_from_arrays(grp)
    attrs: dict[str, Any] = {
        "status": Status.RECOVERED.value,
        "counts": {"streams": streams, "cameras": cameras},
        "duration_s": _duration_from_arrays(grp),
    }
    if note:
        attrs["note"] = note
    grp.update_attributes(attrs)
    return lengths


class Episode:
    """Read access to one recorded episode."""

    def __init__(self, path: Path, index: int) -> None:
        self.path = path
        self.index = index
        self.group = _open_group(path)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def info(self) -> EpisodeInfo:
        return _info_from_group(self.index, self.path, self.group)

    @property
    def streams(self) -> list[str]:
        return (
            sorted(n for n, _ in self.group[layout.STREAMS].groups()) if layout.STREAMS in self.group else []
        )

    @property
    def cameras(self) -> list[str]:
        return (
            sorted(n for n, _ in self.group[layout.CAMERAS].groups()) if layout.CAMERAS in self.group else []
        )

    def _sub(self, kind: str, name: str) -> zarr.Group:
        try:
            return self.group[f"{kind}/{name}"]
        except KeyError:
            have = self.streams if kind == layout.STREAMS else self.cameras
            raise RecorderError(f"episode {self.index} has no {kind[:-1]} {name!r}; it has {have}") from None

    def read_stream(
        self, name: str, start: int | None = None, stop: int | None = None
    ) -> dict[str, np.ndarray]:
        """Every field of stream ``name`` (plus ``t_ns``) as numpy arrays along time."""
        sub = self._sub(layout.STREAMS, name)
        out = {k: arr[start:stop] for k, arr in sub.arrays()}
        if self.group.attrs.get("status") == Status.RECORDING.value:
            # live or crashed (not yet recovered): arrays have spare rows past the last time stamp
            n = int(np.count_nonzero(out[T_NS]))
            out = {k: v[:n] for k, v in out.items()}
        return out

    def frame_times(self, cam: str) -> dict[str, np.ndarray]:
        sub = self._sub(layout.CAMERAS, cam)
        return {k: sub[k][:] for k in (T_NS, layout.T_DEVICE_NS, layout.INDEX)}

    def _video(self, cam: str) -> bool:
        """True when the camera was compacted to video (recorder/compact.py reads that form)."""
        return layout.FRAMES not in self._sub(layout.CAMERAS, cam)

    def num_frames(self, cam: str) -> int:
        sub = self._sub(layout.CAMERAS, cam)
        return int(sub[layout.FRAMES if layout.FRAMES in sub else T_NS].shape[0])

    def read_jpeg(self, cam: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        if self._video(cam):
            from recorder.compact import camera_jpeg

            return camera_jpeg(self.path, cam, start, stop)
        return list(self._sub(layout.CAMERAS, cam)[layout.FRAMES][start:stop])

    def read_frames(self, cam: str, start: int = 0, stop: int | None = None, threads: int = 2) -> np.ndarray:
        """Decoded RGB frames ``[start, stop)`` as (N, H, W, 3) uint8 (JPEG or compacted video)."""
        if self._video(cam):
            from recorder.compact import camera_frames

            return camera_frames(self.path, cam, start, stop)
        blobs = self.read_jpeg(cam, start, stop)
        if not blobs:
            return np.zeros((0, 0, 0, 3), np.uint8)
        if len(blobs) == 1 or threads <= 1:
            return np.stack([decode_jpeg(b) for b in blobs])
        with ThreadPoolExecutor(threads) as pool:
            return np.stack(list(pool.map(decode_jpeg, blobs)))

    def read_frame(self, cam: str, i: int) -> np.ndarray:
        if self._video(cam):
            return self.read_frames(cam, i, i + 1)[0]
        # a slice, not arr[i]: zarr returns a 0-d object array for a scalar index
        return decode_jpeg(self._sub(layout.CAMERAS, cam)[layout.FRAMES][i : i + 1][0])

    def camera_latency_ns(self, cam: str) -> int:
        """The camera latency measured by calibration and stored with the episode (0 if none)."""
        return int((self.attrs.get("camera_latency_ns") or {}).get(cam, 0))

    def align(self, cam: str, stream: str, latency_ns: int | None = None) -> Alignment:
        ticks = self._sub(layout.STREAMS, stream)[T_NS][:]
        if latency_ns is None:
            latency_ns = self.camera_latency_ns(cam)
        return align_frames_to_ticks(ticks, self._sub(layout.CAMERAS, cam)[T_NS][:], latency_ns)


class Dataset:
    """A directory holding episodes; see ``recorder.layout`` for what lies inside."""

    def __init__(self, path: str | os.PathLike[str], create: bool = False) -> None:
        self.path = Path(path)
        marker = self.path / "zarr.json"
        if not marker.exists():
            if not create:
                raise RecorderError(
                    f"{self.path} is not a rig dataset (no zarr.json); record into it first or check the path"
                )
            root = zarr.open_group(str(self.path), mode="a")
            root.attrs["rig_dataset"] = {"format": layout.FORMAT_NAME, "version": layout.FORMAT_VERSION}
            root.require_group(layout.EPISODES)
        else:
            root = zarr.open_group(str(self.path), mode="r")
            meta = root.attrs.get("rig_dataset")
            if not meta or meta.get("format") != layout.FORMAT_NAME:
                raise RecorderError(
                    f"{self.path} is a zarr store but not a rig dataset (no rig_dataset attrs)"
                )
            if int(meta.get("version", 0)) > layout.FORMAT_VERSION:
                raise RecorderError(
                    f"{self.path} uses dataset format version {meta['version']}; this rig reads up to "
                    f"{layout.FORMAT_VERSION}. Upgrade rig."
                )

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Dataset:
        return cls(path, create=True)

    # ---- writing -----------------------------------------------------------------------------
    def new_episode(
        self,
        task: str = "",
        operator: str = "",
        config: Mapping[str, Any] | Any = None,
        calibration: Mapping[str, Any] | Any = None,
        intrinsics: Mapping[str, Any] | Any = None,
        extra: Mapping[str, Any] | None = None,
        options: WriterOptions | None = None,
        on_error: Any = None,
    ) -> EpisodeWriter:
        """Make the next episode group (status ``recording``) and its writer (not yet started)."""
        from recorder.writer import _software_version

        index = (max(self.indices()) + 1) if self.indices() else 0
        path = layout.episode_path(self.path, index)
        try:
            grp = zarr.open_group(str(path), mode="w-")
        except Exception as e:  # another recorder made the same episode a moment ago
            raise RecorderError(
                f"could not create episode {index} in {self.path} ({e}); is another recorder writing to this "
                f"dataset? Record one session per dataset at a time."
            ) from e
        grp.update_attributes(
            jsonable(
                {
                    "status": Status.RECORDING.value,
                    "success": None,
                    "task": task,
                    "operator": operator,
                    "config": config or {},
                    "calibration": calibration or {},
                    "camera_intrinsics": intrinsics or {},
                    "software_version": _software_version(),
                    "format_version": layout.FORMAT_VERSION,
                    **(dict(extra) if extra else {}),
                }
            )
        )
        return EpisodeWriter(path, index, grp, options or WriterOptions(), on_error=on_error)

    # ---- reading -----------------------------------------------------------------------------
    def indices(self) -> list[int]:
        base = self.path / layout.EPISODES
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "zarr.json").exists())

    def _path(self, index: int) -> Path:
        path = layout.episode_path(self.path, index)
        if not (path / "zarr.json").exists():
            raise EpisodeNotFoundError(f"episode {index} is not in {self.path}; it holds {self.indices()}")
        return path

    def episode(self, index: int) -> Episode:
        return Episode(self._path(index), index)

    def info(self, index: int) -> EpisodeInfo:
        path = self._path(index)
        return _info_from_group(index, path, _open_group(path))

    def episodes(self) -> list[EpisodeInfo]:
        return [self.info(i) for i in self.indices()]

    def find_incomplete(self) -> list[EpisodeInfo]:
        """Episodes still marked ``recording`` whose writer is gone (crash, kill, power cut)."""
        out = []
        for i in self.indices():
            path = self._path(i)
            grp = _open_group(path)
            if grp.attrs.get("status") == Status.RECORDING.value and not _writer_alive(grp.attrs, path):
                out.append(_info_from_group(i, path, grp))
        return out

    # ---- relabelling -------------------------------------------------------------------------
    def recover(self, index: int) -> EpisodeInfo:
        """Trim a crashed episode to its last consistent row and mark it ``recovered``."""
        path = self._path(index)
        grp = _open_group(path)
        if grp.attrs.get("status") == Status.RECORDING.value and _writer_alive(grp.attrs, path):
            raise RecorderError(f"episode {index} is still being recorded by a live process; stop it first")
        recover_episode_dir(path)
        return self.info(index)

    def discard(self, index: int, delete: bool = False) -> None:
        """Mark episode ``index`` discarded (kept on disk), or remove its files with ``delete=True``."""
        path = self._path(index)
        if delete:
            shutil.rmtree(path)
        else:
            self.set_status(index, Status.DISCARDED)

    def set_status(self, index: int, status: Status | str) -> None:
        try:
            value = Status(status).value
        except ValueError:
            raise RecorderError(f"status {status!r} is not one of {layout.STATUSES}") from None
        _open_group(self._path(index), mode="r+").attrs["status"] = value

    def set_success(self, index: int, success: bool | None) -> None:
        if success not in (True, False, None):
            raise RecorderError(f"success must be True, False or None, not {success!r}")
        _open_group(self._path(index), mode="r+").attrs["success"] = success

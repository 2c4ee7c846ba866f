"""Dataset (a directory of episodes) and Episode (reading one back, every chunk verified)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from recorder import layout, lock
from recorder.align import Alignment, align_frames_to_ticks
from recorder.codec import decode_jpeg
from recorder.errors import EpisodeNotFoundError, RecorderError, fs_error
from recorder.identity import identity, software_version, writer_alive
from recorder.integrity import (
    CHECKSUM,
    Damage,
    DamagedDatasetError,
    DamagedEpisodeError,
    check_rows,
    iter_arrays,
    open_node,
    read_rows,
)
from recorder.layout import T_NS, Status, jsonable
from recorder.repair import counts_from_arrays, duration_from_arrays, last_row, recover_episode_dir
from recorder.writer import EpisodeWriter, WriterOptions


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
    checksum: str | None = None  # "crc32c" for episodes written with checksums; None: unverified

    @property
    def flags(self) -> list[str]:
        out = []
        if self.status == Status.RECORDING.value:
            out.append("incomplete")
        if any(self.dropped.values()):
            out.append("dropped:" + ",".join(f"{k}={v}" for k, v in self.dropped.items() if v))
        if self.note:
            out.append("note")
        if not self.checksum:
            out.append("unverified")
        return out


def _open_group(path: Path, index: int, mode: str = "r") -> zarr.Group:
    return open_node(path, index, "", zarr.open_group, mode=mode)


def _info_from_group(index: int, path: Path, grp: zarr.Group) -> EpisodeInfo:
    a = dict(grp.attrs)
    counts = a.get("counts")
    if counts:
        streams, cameras = counts.get("streams", {}), counts.get("cameras", {})
    else:  # still recording or crashed: the arrays tell
        streams, cameras = counts_from_arrays(grp, index)
    dropped: dict[str, int] = {}
    ws = a.get("writer_stats") or {}
    for kind in ("streams", "cameras"):
        for name, s in (ws.get(kind) or {}).items():
            dropped[name] = int(s.get("dropped", 0))
    duration = a.get("duration_s")
    if duration is None:
        duration = duration_from_arrays(grp, index)
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
        checksum=a.get("checksum"),
    )


def verify_episode_dir(path: Path, index: int, deep: bool = True) -> list[Damage]:
    """Every damaged thing in the episode at ``path``: unreadable metadata, missing chunks and
    (``deep``: every chunk; otherwise all but the camera frames) chunks failing their checksum."""
    out: list[Damage] = []
    for meta in sorted(path.rglob("zarr.json")):
        rel = meta.relative_to(path).as_posix()
        if "/c/" in f"/{rel}":
            continue
        try:
            json.loads(meta.read_bytes())
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            out.append(Damage(index, rel, None, f"metadata unreadable ({type(exc).__name__})"))
    if any(d.array == "zarr.json" for d in out):
        return out
    status = json.loads((path / "zarr.json").read_bytes()).get("attributes", {}).get("status")
    valid: dict[str, int | None] = {}
    for rel in iter_arrays(path):
        if any(d.array == f"{rel}/zarr.json" for d in out):
            continue
        try:
            arr = zarr.open_array(str(path / rel), mode="r")
        except Exception as exc:
            out.append(Damage(index, f"{rel}/zarr.json", None, f"metadata unreadable ({type(exc).__name__})"))
            continue
        parent = rel.rsplit("/", 1)[0]
        rows: int | None = None
        if status == Status.RECORDING.value:  # spare rows past the last stamp have no chunks yet
            if parent not in valid:
                try:
                    t = zarr.open_array(str(path / parent / T_NS), mode="r")[:]
                    valid[parent] = last_row(t)
                except Exception:
                    valid[parent] = 0
            rows = valid[parent]
        read = deep or not rel.endswith(f"/{layout.FRAMES}")
        out.extend(check_rows(arr, index, rel, valid=rows, read=read))
    return out


class Episode:
    """Read access to one recorded episode; every read checks what it reads."""

    def __init__(self, path: Path, index: int) -> None:
        self.path = path
        self.index = index
        self.group = _open_group(path, index)
        self._valid: dict[str, int | None] = {}

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def info(self) -> EpisodeInfo:
        return _info_from_group(self.index, self.path, self.group)

    def _children(self, rel: str) -> list[str]:
        """Nodes under ``rel``, listed on disk so a damaged one is named rather than hiding the rest."""
        base = self.path / rel
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "zarr.json").is_file())

    def _members(self, kind: str) -> list[str]:
        return self._children(kind)

    @property
    def streams(self) -> list[str]:
        return self._members(layout.STREAMS)

    @property
    def cameras(self) -> list[str]:
        return self._members(layout.CAMERAS)

    def _node(self, rel: str) -> Any:
        try:
            return self.group[rel]
        except KeyError:
            raise
        except Exception as exc:  # the node's zarr.json does not parse
            raise DamagedEpisodeError(
                Damage(self.index, f"{rel}/zarr.json", None, f"metadata unreadable ({type(exc).__name__})")
            ) from None

    def _sub(self, kind: str, name: str) -> zarr.Group:
        try:
            return self._node(f"{kind}/{name}")
        except KeyError:
            have = self.streams if kind == layout.STREAMS else self.cameras
            raise RecorderError(f"episode {self.index} has no {kind[:-1]} {name!r}; it has {have}") from None

    def _valid_rows(self, kind: str, name: str, sub: zarr.Group) -> int | None:
        """Rows that must be on disk: all of them, except in a live or crashed episode."""
        key = f"{kind}/{name}"
        if key not in self._valid:
            if self.group.attrs.get("status") == Status.RECORDING.value and T_NS in sub:
                self._valid[key] = last_row(read_rows(sub[T_NS], self.index, f"{key}/{T_NS}", valid=0))
            else:
                self._valid[key] = None
        return self._valid[key]

    def _array(self, kind: str, name: str, fld: str) -> tuple[zarr.Array, str, int | None]:
        sub = self._sub(kind, name)
        rel = f"{kind}/{name}/{fld}"
        valid = self._valid_rows(kind, name, sub)
        try:
            arr = self._node(rel)
        except KeyError:
            raise RecorderError(f"episode {self.index} has no array {rel!r}") from None
        return arr, rel, valid

    def _read(self, kind: str, name: str, fld: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        arr, rel, valid = self._array(kind, name, fld)
        return read_rows(arr, self.index, rel, start, stop, valid=valid)

    def read_stream(
        self, name: str, start: int | None = None, stop: int | None = None
    ) -> dict[str, np.ndarray]:
        """Every field of stream ``name`` (plus ``t_ns``) as numpy arrays along time."""
        self._sub(layout.STREAMS, name)  # names the stream when it is missing
        fields = [k for k in self._children(f"{layout.STREAMS}/{name}") if k != T_NS] + [T_NS]
        out = {k: self._read(layout.STREAMS, name, k, start, stop) for k in fields}
        if self.group.attrs.get("status") == Status.RECORDING.value:
            # live or crashed (not yet recovered): arrays have spare rows past the last time stamp
            n = int(np.count_nonzero(out[T_NS]))
            out = {k: v[:n] for k, v in out.items()}
        return out

    def frame_times(self, cam: str) -> dict[str, np.ndarray]:
        return {k: self._read(layout.CAMERAS, cam, k) for k in (T_NS, layout.T_DEVICE_NS, layout.INDEX)}

    def _video(self, cam: str) -> bool:
        """True when the camera was compacted to video (recorder/compact.py reads that form)."""
        return layout.FRAMES not in self._sub(layout.CAMERAS, cam)

    def num_frames(self, cam: str) -> int:
        name = T_NS if self._video(cam) else layout.FRAMES  # a compacted camera keeps its stamps
        return int(self._array(layout.CAMERAS, cam, name)[0].shape[0])

    def read_jpeg(self, cam: str, start: int = 0, stop: int | None = None) -> list[bytes]:
        if self._video(cam):
            from recorder.frames import camera_jpeg

            return camera_jpeg(self.path, cam, start, stop)
        return list(self._read(layout.CAMERAS, cam, layout.FRAMES, start, stop))

    def read_frames(self, cam: str, start: int = 0, stop: int | None = None, threads: int = 2) -> np.ndarray:
        """Decoded RGB frames ``[start, stop)`` as (N, H, W, 3) uint8 (JPEG or compacted video)."""
        if self._video(cam):
            from recorder.frames import camera_frames

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
        return decode_jpeg(self._read(layout.CAMERAS, cam, layout.FRAMES, i, i + 1)[0])

    def camera_latency_ns(self, cam: str) -> int:
        """The camera latency measured by calibration and stored with the episode (0 if none)."""
        return int((self.attrs.get("camera_latency_ns") or {}).get(cam, 0))

    def align(self, cam: str, stream: str, latency_ns: int | None = None) -> Alignment:
        ticks = self._read(layout.STREAMS, stream, T_NS)
        if latency_ns is None:
            latency_ns = self.camera_latency_ns(cam)
        return align_frames_to_ticks(ticks, self._read(layout.CAMERAS, cam, T_NS), latency_ns)

    def verify(self, deep: bool = True) -> list[Damage]:
        """Every damaged chunk or metadata file of this episode (empty: all good)."""
        return verify_episode_dir(self.path, self.index, deep)


class Dataset:
    """A directory holding episodes; see ``recorder.layout`` for what lies inside.

    Reading needs nothing but the files. Recording (``new_episode``) takes the dataset's writer
    lock (``recorder.lock``) for the rest of the process or until ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str], create: bool = False) -> None:
        self.path = Path(path)
        self.lock_note: str | None = None  # set when new_episode took over a dead recorder's lock
        self._new_lock = threading.Lock()
        if self.path.exists() and not self.path.is_dir():
            raise RecorderError(f"{self.path} is a file, not a dataset directory; pass a directory for the dataset")
        marker = self.path / "zarr.json"
        if not marker.exists():
            if not create:
                raise RecorderError(
                    f"{self.path} is not a rig dataset (no zarr.json); record into it first or check the path"
                )
            try:
                root = zarr.open_group(str(self.path), mode="a")
                root.attrs["rig_dataset"] = {"format": layout.FORMAT_NAME, "version": layout.FORMAT_VERSION}
                root.require_group(layout.EPISODES)
            except OSError as e:
                raise fs_error(e, "creating the dataset", self.path) from None
            return
        try:
            meta = json.loads(marker.read_bytes()).get("attributes", {}).get("rig_dataset")
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise DamagedDatasetError(
                f"{marker} is not valid zarr metadata ({type(exc).__name__}); the dataset's root is damaged "
                f"(its episodes are intact): restore that file from a copy, or write it again with "
                f"`rig verify {self.path} --repair-root`"
            ) from None
        except OSError as e:
            raise fs_error(e, "reading the dataset", marker) from None
        if not meta or meta.get("format") != layout.FORMAT_NAME:
            raise RecorderError(f"{self.path} is a zarr store but not a rig dataset (no rig_dataset attrs)")
        if int(meta.get("version", 0)) > layout.FORMAT_VERSION:
            raise RecorderError(
                f"{self.path} uses dataset format version {meta['version']}; this rig reads up to "
                f"{layout.FORMAT_VERSION}. Upgrade rig."
            )

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Dataset:
        return cls(path, create=True)

    @staticmethod
    def repair_root(path: str | os.PathLike[str]) -> None:
        """Write a damaged root zarr.json again (it holds only the format marker)."""
        root = Path(path)
        if not (root / layout.EPISODES).is_dir():
            raise RecorderError(f"{root} has no {layout.EPISODES}/ directory; it does not look like a rig dataset")
        doc = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {"rig_dataset": {"format": layout.FORMAT_NAME, "version": layout.FORMAT_VERSION}},
        }
        try:
            tmp = root / "zarr.json.repair"
            tmp.write_text(json.dumps(doc))
            tmp.replace(root / "zarr.json")
        except OSError as e:
            raise fs_error(e, "repairing the dataset root", root) from None

    def close(self) -> None:
        """Give up the writer lock (it also goes when the process ends)."""
        lock.release(self.path)

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
        contractor: str | None = None,
        device: str | None = None,
    ) -> EpisodeWriter:
        """Make the next episode group (status ``recording``) and its writer (not yet started).

        Takes the writer lock first, so a second recorder on this dataset is refused with the
        holder's pid and host. The group is built under a hidden name and renamed into place, so
        a full or read-only disk leaves no half-made (phantom ``recording``) episode behind.
        ``contractor`` and ``device`` say who recorded it on what (the rig's identity; None: unset).
        """
        note = lock.acquire(self.path)
        if note:
            self.lock_note = note
        with self._new_lock:
            index = (max(self.indices()) + 1) if self.indices() else 0
            path = layout.episode_path(self.path, index)
            tmp = path.parent / f".new-{layout.episode_name(index)}-{os.getpid()}"
            attrs = jsonable(
                {
                    "status": Status.RECORDING.value,
                    "success": None,
                    "task": task,
                    "operator": operator,
                    "contractor": contractor,
                    "device": device,
                    "config": config or {},
                    "calibration": calibration or {},
                    "camera_intrinsics": intrinsics or {},
                    "software_version": software_version(),
                    "format_version": layout.FORMAT_VERSION,
                    "checksum": CHECKSUM,
                    "writer": identity(),
                    **(dict(extra) if extra else {}),
                }
            )
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                zarr.open_group(str(tmp), mode="w-", attributes=attrs)
                os.rename(tmp, path)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if path.exists() and e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise RecorderError(
                        f"episode {index} already exists in {self.path}; another process wrote it without the "
                        f"dataset lock. Record one session per dataset at a time."
                    ) from None
                raise fs_error(e, f"creating episode {index}", self.path) from None
            grp = zarr.open_group(str(path), mode="r+")
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

    def _writable_path(self, index: int, doing: str) -> Path:
        """The episode's directory, refusing one that a symlink leads out of the dataset."""
        path = self._path(index)
        real, root = path.resolve(), self.path.resolve()
        if not real.is_relative_to(root):
            raise RecorderError(
                f"episode {index} of {self.path} is a link to {real}, outside the dataset; refusing to change it "
                f"({doing}). Copy it into the dataset or remove the link."
            )
        return path

    def episode(self, index: int) -> Episode:
        return Episode(self._path(index), index)

    def info(self, index: int) -> EpisodeInfo:
        path = self._path(index)
        return _info_from_group(index, path, _open_group(path, index))

    def episodes(self) -> list[EpisodeInfo]:
        return [self.info(i) for i in self.indices()]

    def scan(self) -> tuple[list[EpisodeInfo], list[Damage]]:
        """Every episode whose metadata reads, and the damage of those that do not."""
        infos, damage = [], []
        for i in self.indices():
            try:
                infos.append(self.info(i))
            except DamagedEpisodeError as e:
                damage.append(e.damage)
        return infos, damage

    def verify(self, index: int, deep: bool = True) -> list[Damage]:
        """Damage in episode ``index``: unreadable metadata, missing chunks, checksum failures
        (``deep=False`` skips reading the camera frames, the bulk of the bytes)."""
        return verify_episode_dir(self._path(index), index, deep)

    def find_incomplete(self) -> list[EpisodeInfo]:
        """Episodes still marked ``recording`` whose writer is gone (crash, kill, power cut)."""
        out = []
        for i in self.indices():
            path = self._path(i)
            try:
                grp = _open_group(path, i)
                if grp.attrs.get("status") == Status.RECORDING.value and not writer_alive(grp.attrs, path):
                    out.append(_info_from_group(i, path, grp))
            except DamagedEpisodeError:
                continue  # named by `rig episodes` and `rig verify`; not a cut-off take
        return out

    # ---- relabelling -------------------------------------------------------------------------
    def recover(self, index: int) -> EpisodeInfo:
        """Trim a crashed episode to its last consistent row and mark it ``recovered``."""
        path = self._writable_path(index, "--recover")
        grp = _open_group(path, index)
        status = grp.attrs.get("status", Status.RECORDING.value)
        if status in (Status.COMPLETE.value, Status.DISCARDED.value):
            raise RecorderError(
                f"episode {index} is {status}, not cut off; --recover is only for episodes left 'recording' by a "
                f"crash (nothing was changed)"
            )
        if status == Status.RECORDING.value and writer_alive(grp.attrs, path):
            raise RecorderError(f"episode {index} is still being recorded by a live process; stop it first")
        recover_episode_dir(path, index=index)
        return self.info(index)

    def discard(self, index: int, delete: bool = False) -> None:
        """Mark episode ``index`` discarded (kept on disk), or remove its files with ``delete=True``."""
        path = self._writable_path(index, "--discard")
        if delete:
            try:
                shutil.rmtree(path)
            except OSError as e:
                raise fs_error(e, f"deleting episode {index}", path) from None
        else:
            self.set_status(index, Status.DISCARDED)

    def _set_attr(self, index: int, key: str, value: Any, doing: str) -> None:
        path = self._writable_path(index, doing)
        try:
            _open_group(path, index, mode="r+").attrs[key] = value
        except OSError as e:
            raise fs_error(e, f"{doing} of episode {index}", path) from None

    def annotate(self, index: int, attrs: Mapping[str, Any]) -> None:
        """Add facts found after an episode closed (e.g. a policy trial's takeover) to its metadata.
        The fields the recorder owns (status, success, counts ...) have their own setters."""
        owned = set(attrs) & {"status", "success", "counts", "duration_s", "stop_monotonic_ns", "config"}
        if owned:
            raise RecorderError(f"annotate() cannot change {sorted(owned)}; use set_status/set_success")
        for key, value in jsonable(dict(attrs)).items():
            self._set_attr(index, key, value, f"annotating {key}")

    def set_status(self, index: int, status: Status | str) -> None:
        try:
            value = Status(status).value
        except ValueError:
            raise RecorderError(f"status {status!r} is not one of {layout.STATUSES}") from None
        self._set_attr(index, "status", value, f"marking {value}")

    def set_success(self, index: int, success: bool | None) -> None:
        if success not in (True, False, None):
            raise RecorderError(f"success must be True, False or None, not {success!r}")
        self._set_attr(index, "success", success, "labelling success")

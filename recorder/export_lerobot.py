"""Export episodes to a LeRobotDataset v3.0 (what LeRobot 0.4.x loads), appending to an earlier export.

    OUT/meta/info.json                              codebase_version "v3.0", fps, features, totals, paths
    OUT/meta/tasks.parquet                          task (index) -> task_index
    OUT/meta/episodes/chunk-000/file-000.parquet    one row per episode: length, indices, files, stats,
                                                    and the rig's own columns under rig/...
    OUT/meta/stats.json                             per feature min/max/mean/std/count/quantiles
    OUT/data/chunk-XXX/file-XXX.parquet             one row per exported tick
    OUT/videos/<key>/chunk-XXX/file-XXX.mp4         AV1 (else H.264), several episodes per file

One row per control tick (or, with ``fps`` below the tick rate, per tick of a grid at that rate:
each row takes the latest tick at or before it). Each camera contributes the latest frame captured
at or before the row (``recorder.align``, the camera's latency subtracted), exactly what the ALOHA
export stores. LeRobot's ``timestamp`` is ``frame_index / fps`` because its loader finds video
frames by it; what the rig measured is kept beside it:

    rig.t_ns, rig.<field>                 the tick's host time and every other field of the stream
    rig.<cam>.row / .index / .t_ns / .t_device_ns / .skew_ns
                                          which recorded frame the row shows, the driver's frame
                                          counter (gaps = drops), its host and device stamps and
                                          the alignment skew (-1: no frame yet at that tick)
    episodes table rig/...                source episode, status, success, quality flags, drops,
                                          missed ticks, per-camera skew, the episode's attributes

Append: each run writes new data and video files and then rewrites the small meta files (each to a
temp name, then renamed; info.json last). Episodes already in OUT (matched by their rig start time
and index) are skipped. A run that fails (full disk) removes what it wrote, leaving OUT as it was,
so running it again completes it. A bad episode (no ticks, a damaged frame chunk) is reported and
skipped; the others are exported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recorder import layout
from recorder.align import align_frames_to_ticks
from recorder.codec import decode_jpeg
from recorder.dataset import Dataset, Episode, EpisodeInfo
from recorder.derived import EE_NAMES, EE_RATE_HZ, is_handheld, pose_rows
from recorder.errors import DiskFullError, RecorderError
from recorder.export_common import (
    check_out_dir,
    clean_leftovers,
    is_disk_full,
    skipping,
    wanted,
    write_then_rename,
)
from recorder.export_hdf5 import AlohaMapping
from recorder.layout import T_NS, Status, jsonable
from recorder.video import VideoOptions, VideoWriter, pick_codec

try:  # the checking pass decodes at 1/8 scale with it
    import simplejpeg as _sj
except ImportError:  # pragma: no cover - depends on the environment
    _sj = None

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
TASKS_PATH = "meta/tasks.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STAT_KEYS = ("min", "max", "mean", "std", "count", *(f"q{int(q * 100):02d}" for q in QUANTILES))
PARTIAL = ".partial"
# Stream fields that become LeRobot's named features; every other field is kept as rig.<field>.
STANDARD = {"state": "observation.state", "action": "action", "velocity": "observation.velocity",
            "effort": "observation.effort"}


def camera_key(cam: str) -> str:
    return f"observation.images.{cam}"


@dataclass(frozen=True)
class LeRobotExportOptions:
    # the stream and fields, named as for the ALOHA export: qpos -> observation.state, action,
    # qvel -> observation.velocity, effort -> observation.effort
    fields: AlohaMapping = AlohaMapping()
    cameras: Sequence[str] | None = None  # None: every camera of the first exported episode
    fps: int | None = None  # None: the stream's tick rate (one row per tick, every value kept)
    include_recovered: bool = False
    include_failed: bool = False
    robot_type: str | None = None  # None: the rig's name from the episode
    video: VideoOptions = field(default_factory=VideoOptions)
    data_files_size_in_mb: int = 100
    video_files_size_in_mb: int = 200
    chunks_size: int = CHUNKS_SIZE

    @property
    def stream(self) -> str:
        return self.fields.stream

    @property
    def state(self) -> str:
        return self.fields.qpos

    @property
    def action(self) -> str:
        return self.fields.action

    @property
    def velocity(self) -> str:
        return self.fields.qvel

    @property
    def effort(self) -> str:
        return self.fields.effort


@dataclass
class ExportReport:
    out: Path
    exported: list[int] = field(default_factory=list)  # rig episode indices written this run
    already: list[int] = field(default_factory=list)  # rig episodes found in OUT from earlier runs
    skipped: list[str] = field(default_factory=list)  # one line per bad episode
    frames: int = 0
    recorded_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.skipped


class ExportProblem(RecorderError):
    """One episode cannot be exported; the others go on."""


# ---- reading an episode into rows ------------------------------------------------------------


def joint_names(attrs: dict[str, Any], n: int) -> list[str]:
    """``<arm>.<joint>`` for every follower joint then its gripper, from the config stored in the
    episode (the order the rig builds its state vector in); ``value i`` when they do not add up."""
    names: list[str] = []
    for arm in (attrs.get("config") or {}).get("arms") or []:
        if arm.get("role") != "follower":
            continue
        joints = [j for j in arm.get("joints") or [] if isinstance(j, dict)]
        names += [f"{arm.get('name')}.{j.get('name')}" for j in joints if not j.get("gripper")]
        names += [f"{arm.get('name')}.{j.get('name')}" for j in joints if j.get("gripper")]
    return names if len(names) == n else [f"value {i}" for i in range(n)]


@dataclass
class _Camera:
    name: str
    rows: np.ndarray  # per exported row: row of the camera arrays (-1 before the first frame)
    shown: np.ndarray  # rows with -1 replaced by the first frame (what the video shows)
    t_ns: np.ndarray
    t_device_ns: np.ndarray
    index: np.ndarray
    skew_ns: np.ndarray
    shape: tuple[int, int, int]
    summary: dict[str, Any]
    recorded: int
    gaps: int
    cache: _BlobCache


@dataclass
class _Plan:
    info: EpisodeInfo
    ep: Episode
    n: int
    columns: dict[str, np.ndarray]  # data columns (numeric), without the LeRobot bookkeeping ones
    cameras: list[_Camera]
    names: list[str]
    duration_s: float
    n_ticks: int


def _plan_episode(ep: Episode, info: EpisodeInfo, opts: LeRobotExportOptions, fps: int | None,
                  cameras: Sequence[str] | None, row_times: bool = False) -> _Plan:
    where = f"episode {info.index}"
    handheld = is_handheld(ep, opts.stream)  # the handheld gripper: its pose is the end-effector state
    if opts.stream not in ep.streams and not handheld:
        raise ExportProblem(f"{where} has no stream {opts.stream!r} (it has {ep.streams}); skipped")
    try:
        data = pose_rows(ep, opts.state, opts.action, fps) if handheld else ep.read_stream(opts.stream)
    except Exception as e:
        raise ExportProblem(f"{where}: stream {opts.stream!r} is damaged ({type(e).__name__}: {e}); skipped") from e
    ticks = np.asarray(data.pop(T_NS), np.int64)
    if ticks.size == 0:
        raise ExportProblem(f"{where} has zero ticks in stream {opts.stream!r}; skipped (nothing to export)")
    for role in ("state", "action"):
        if getattr(opts, role) not in data:
            raise ExportProblem(f"{where}: stream {opts.stream!r} has no field {getattr(opts, role)!r} for "
                                f"{STANDARD[role]} (it has {sorted(data)}); skipped")
    rate = fps or _stream_rate(ep, opts.stream) or 50.0
    if fps and not handheld and abs(_stream_rate(ep, opts.stream) - fps) > 1e-6:
        # a grid at the export rate; each row takes the latest tick at or before it
        grid = ticks[0] + np.round(np.arange(int((ticks[-1] - ticks[0]) * fps // 1_000_000_000) + 1)
                                   * (1e9 / fps)).astype(np.int64)
        pick = align_frames_to_ticks(grid, ticks).indices
        row_t = grid
    else:
        pick = np.arange(ticks.size)
        row_t = ticks
    n = int(row_t.size)
    columns: dict[str, np.ndarray] = {}
    for role, key in STANDARD.items():
        name = getattr(opts, role)
        if name in data:
            columns[key] = np.asarray(data[name][pick], np.float32).reshape(n, -1)
    columns["rig.t_ns"] = ticks[pick]
    if row_times:  # an export at its own rate: the row's time beside the tick it took
        columns["rig.row_t_ns"] = row_t
    used = {getattr(opts, r) for r in STANDARD}
    for name in sorted(data):
        if name not in used:
            columns[f"rig.{name}"] = np.asarray(data[name])[pick]
    cams = []
    for cam in (ep.cameras if cameras is None else cameras):
        cams.append(_plan_camera(ep, info, cam, row_t))
    state_dim = columns["observation.state"].shape[1]
    names = EE_NAMES if handheld else joint_names(ep.attrs, state_dim)
    return _Plan(info, ep, n, columns, cams, names, n / rate, int(ticks.size))


def _stream_rate(ep: Episode, stream: str) -> float:
    if is_handheld(ep, stream):
        return EE_RATE_HZ
    return float(ep.group[f"{layout.STREAMS}/{stream}"].attrs.get("rate_hz", 0) or 0)


def _plan_camera(ep: Episode, info: EpisodeInfo, cam: str, row_t: np.ndarray) -> _Camera:
    where = f"episode {info.index} camera {cam!r}"
    if cam not in ep.cameras:
        raise ExportProblem(f"episode {info.index} has no camera {cam!r} (it has {ep.cameras}); skipped")
    try:
        times = ep.frame_times(cam)
    except Exception as e:
        raise ExportProblem(f"{where}: frame times are damaged ({type(e).__name__}: {e}); skipped") from e
    t = np.asarray(times[T_NS], np.int64)
    valid = int(np.count_nonzero(t))  # a crashed episode not yet recovered has spare rows
    t = t[:valid]
    if valid == 0:
        raise ExportProblem(f"{where} has no frames; skipped (export with --cameras to leave it out)")
    al = align_frames_to_ticks(row_t, t, ep.camera_latency_ns(cam))
    rows = al.indices
    shown = np.where(rows < 0, int(np.argmin(t)), rows)
    # Every frame the export shows is read and decoded now, so a damaged chunk fails this episode
    # before anything of it is written.
    first = None
    cache = _BlobCache()
    for i, shape in _decoded(ep, cam, shown, decode=_checked_shape, cache=cache):
        if first is None:
            first = shape
        elif shape != first:
            raise ExportProblem(f"{where}: frame {i} is {shape}, earlier frames {first}; skipped")
    assert first is not None
    cache.ready = True
    if len(first) != 3 or first[2] != 3:
        raise ExportProblem(f"{where}: frames of shape {first} are not RGB; skipped")
    index = np.asarray(times[layout.INDEX][:valid], np.int64)
    gaps = int(np.clip(np.diff(index) - 1, 0, None).sum()) if index.size > 1 else 0
    take = np.where(rows < 0, 0, rows)
    def pick(a: np.ndarray) -> np.ndarray:
        return np.where(rows < 0, -1, a[take])
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in al.summary().items()}
    return _Camera(cam, rows, shown, pick(t), pick(np.asarray(times[layout.T_DEVICE_NS][:valid], np.int64)),
                   pick(index), al.skew_ns, (int(first[0]), int(first[1]), 3), summary, valid, gaps, cache)


def _checked_shape(blob: bytes) -> tuple[int, ...]:
    """The frame's (H, W, 3) after decoding all of its data: at 1/8 scale where simplejpeg is
    there (every entropy-coded byte is still read, so damage shows; ~half the CPU)."""
    if _sj is None:
        return decode_jpeg(blob).shape
    h, w, _, _ = _sj.decode_jpeg_header(blob)
    _sj.decode_jpeg(blob, min_height=1, min_width=1)
    return (h, w, 3)


@dataclass
class _BlobCache:
    """The JPEG blobs the checking pass read, kept (up to ``budget`` bytes) so that the encoding
    pass does not read them from disk again."""

    budget: int = 128 * 1024 * 1024
    blobs: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    over: bool = False
    ready: bool = False

    def keep(self, row: int, blob: bytes) -> None:
        if self.over:
            return
        self.size += len(blob)
        if self.size > self.budget:
            self.over = True
            self.blobs.clear()
        else:
            self.blobs[row] = blob


def _decoded(ep: Episode, cam: str, rows: np.ndarray, chunk: int = 64,
             decode: Callable[[bytes], Any] = decode_jpeg, cache: _BlobCache | None = None,
             ) -> Iterator[tuple[int, Any]]:
    """(row, decode(frame)) for each entry of ``rows``: blobs are read ``chunk`` at a time (or
    taken from a ready ``cache``, else kept in it) and a frame shown on consecutive rows is
    decoded once."""
    where = f"episode {ep.index} camera {cam!r}"
    use = cache is not None and cache.ready and not cache.over
    lo = hi = 0
    blobs: list[bytes] = []
    last_r, last_img = None, None
    for r in rows.tolist():
        if r != last_r:
            blob = cache.blobs.get(r) if use else None  # type: ignore[union-attr]
            if blob is None:
                if not lo <= r < hi:
                    try:
                        blobs = ep.read_jpeg(cam, r, r + chunk)
                    except Exception as e:
                        raise ExportProblem(f"{where}: frames {r}-{r + chunk - 1} are damaged "
                                            f"({type(e).__name__}: {e}); skipped") from e
                    lo, hi = r, r + len(blobs)
                    if r >= hi:
                        raise ExportProblem(f"{where}: frame {r} is missing; skipped")
                blob = blobs[r - lo]
                if cache is not None and not use:
                    cache.keep(r, blob)
            try:
                last_img = decode(blob)
            except Exception as e:
                raise ExportProblem(f"{where}: frame {r} is damaged ({type(e).__name__}: {e}); skipped") from e
            last_r = r
        yield r, last_img  # type: ignore[misc]


# ---- statistics ------------------------------------------------------------------------------


def _stats(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    v = v.reshape(v.shape[0], -1)
    if np.isnan(v).any():  # a handheld pose's untrusted rows (NaN): statistics of the trusted ones
        v = v[~np.isnan(v).any(axis=1)]
        if not len(v):
            return {k: np.zeros(1 if k == "count" else v.shape[1]) for k in STAT_KEYS}
    out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": np.array([v.shape[0]])}
    for q, k in zip(QUANTILES, STAT_KEYS[5:]):
        out[k] = np.quantile(v, q, axis=0)
    return out


class _ImageStats:
    """Per-channel statistics of a camera's frames in [0, 1], as LeRobot keeps them (shape 3,1,1),
    from every 8th pixel of up to ~50 frames per episode."""

    def __init__(self, n_rows: int) -> None:
        self.every = max(1, n_rows // 50)
        self.samples: list[np.ndarray] = []

    def add(self, i: int, img: np.ndarray) -> None:
        if i % self.every == 0:
            self.samples.append(img[::8, ::8].reshape(-1, 3).astype(np.float32) / 255.0)

    def result(self) -> dict[str, Any]:
        s = _stats(np.concatenate(self.samples)) if self.samples else None
        if s is None:
            return {}
        out = {k: v.reshape(3, 1, 1) for k, v in s.items() if k != "count"}
        out["count"] = np.array([len(self.samples)])
        return out


def _aggregate(per_episode: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset statistics from per-episode ones: exact min/max/mean/std, count-weighted quantiles."""
    counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in per_episode])
    w = counts / counts.sum()
    shape = np.asarray(per_episode[0]["mean"]).shape
    mean = sum(wi * np.asarray(s["mean"], np.float64) for wi, s in zip(w, per_episode))
    var = sum(wi * (np.asarray(s["std"], np.float64) ** 2 + (np.asarray(s["mean"], np.float64) - mean) ** 2)
              for wi, s in zip(w, per_episode))
    out = {
        "min": np.min([np.asarray(s["min"]) for s in per_episode], axis=0),
        "max": np.max([np.asarray(s["max"]) for s in per_episode], axis=0),
        "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())]),
    }
    for k in STAT_KEYS[5:]:
        if all(k in s for s in per_episode):
            out[k] = sum(wi * np.asarray(s[k], np.float64) for wi, s in zip(w, per_episode)).reshape(shape)
    return out


# ---- files -----------------------------------------------------------------------------------


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a core dependency
        raise RecorderError("the LeRobot export needs pyarrow: pip install 'pyarrow>=21,<27'") from e
    return pa, pq


def _write_table(path: Path, table) -> None:
    _, pq = _pa()
    # an OSError is worded by export_lerobot (disk full: OUT is left as it was)
    write_then_rename(path, lambda p: pq.write_table(table, p), raw_os_errors=True)


def _write_json(path: Path, obj: Any) -> None:
    def w(p: Path) -> None:
        with open(p, "w") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
    write_then_rename(path, w, raw_os_errors=True)


def _arrow_type(dtype: np.dtype, shape: tuple[int, ...]):
    pa, _ = _pa()
    t = pa.from_numpy_dtype(np.dtype(dtype))
    return t if shape in ((), (1,)) else pa.list_(t, int(np.prod(shape)))


def _feature(dtype: np.dtype, shape: tuple[int, ...], names: list[str] | None = None) -> dict[str, Any]:
    return {"dtype": str(np.dtype(dtype)), "shape": list(shape) if shape else [1], "names": names}


def _column(values: np.ndarray, dtype: np.dtype):
    pa, _ = _pa()
    v = np.ascontiguousarray(values, dtype=dtype)
    if v.ndim == 1:
        return pa.array(v)
    flat = pa.array(v.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(v.shape[1:])))


def _tasks_table(tasks: list[str]):
    """The table pandas reads back with the task strings as its index (what LeRobot expects)."""
    pa, _ = _pa()
    meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(meta).encode()})
    return pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())},
                    schema=schema)


@dataclass
class _State:
    """What OUT holds: loaded from an earlier export, extended by this run."""

    info: dict[str, Any] | None
    episodes: list[dict[str, Any]]
    tasks: list[str]

    @property
    def keys(self) -> set[tuple[str, int]]:
        return {(str(e.get("rig/start_wall")), int(e.get("rig/episode", -1))) for e in self.episodes}


def _load_out(out: Path) -> _State:
    """Check that OUT is empty, missing, or an earlier LeRobot export of this rig."""
    if out.exists() and not out.is_dir():
        raise RecorderError(f"{out} is a file, not a directory; choose a new directory for the LeRobot export")
    if not out.exists() or not any(out.iterdir()):
        return _State(None, [], [])
    info_path = out / INFO_PATH
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("codebase_version") != CODEBASE_VERSION or "rig" not in info:
        raise RecorderError(
            f"{out} holds something else (not a LeRobot v3.0 export made by rig); export into an empty or new "
            f"directory, or into an earlier `rig export --format lerobot` output to append")
    _, pq = _pa()
    try:
        episodes = pq.read_table(out / EPISODES_PATH).to_pylist() if (out / EPISODES_PATH).exists() else []
        tasks = pq.read_table(out / TASKS_PATH).column("task").to_pylist() if (out / TASKS_PATH).exists() else []
    except Exception as e:
        raise RecorderError(f"{out}: its LeRobot metadata cannot be read ({e}); export into a new directory") from e
    # info.json is written last: rows past its total are from a run cut off while committing
    return _State(info, episodes[: int(info.get("total_episodes", 0))], tasks)


def _clean_leftovers(out: Path, state: _State) -> None:
    """Remove files an interrupted run left: temp files, and data/video files no episode points to."""
    clean_leftovers(out)
    if state.info is None:
        return
    referenced = set()
    for e in state.episodes:
        referenced.add(DATA_PATH.format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"]))
        for key in _video_keys(state.info):
            referenced.add(VIDEO_PATH.format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                             file_index=e[f"videos/{key}/file_index"]))
    for sub in ("data", "videos"):
        for p in list((out / sub).rglob("*")) if (out / sub).exists() else []:
            if p.is_file() and str(p.relative_to(out)) not in referenced:
                p.unlink()


def _video_keys(info: dict[str, Any]) -> list[str]:
    return [k for k, f in info["features"].items() if f.get("dtype") == "video"]


def _next_file(paths: list[tuple[int, int]], chunks_size: int) -> tuple[int, int]:
    if not paths:
        return 0, 0
    c, f = max(paths)
    return (c + 1, 0) if f + 1 >= chunks_size else (c, f + 1)


class _Files:
    """The data file and one video file per camera that this run appends episodes to."""

    def __init__(self, out: Path, state: _State, opts: LeRobotExportOptions, fps: int) -> None:
        self.out, self.opts, self.fps = out, opts, fps
        self.created: list[Path] = []
        self.data_writer = None
        self.data_path: Path | None = None
        self.data_index = _next_file([(e["data/chunk_index"], e["data/file_index"]) for e in state.episodes],
                                     opts.chunks_size)
        self.videos: dict[str, VideoWriter] = {}
        self.video_index: dict[str, tuple[int, int]] = {}
        if state.info is not None:
            for key in _video_keys(state.info):
                self.video_index[key] = _next_file(
                    [(e[f"videos/{key}/chunk_index"], e[f"videos/{key}/file_index"]) for e in state.episodes],
                    opts.chunks_size)

    def data(self, schema) -> tuple[Any, tuple[int, int]]:
        _, pq = _pa()
        if self.data_writer is not None and self.data_path is not None:
            size = self.data_path.with_name(self.data_path.name + PARTIAL).stat().st_size
            if size >= self.opts.data_files_size_in_mb * 1e6:
                self._close_data()
                self.data_index = _next_file([self.data_index], self.opts.chunks_size)
        if self.data_writer is None:
            c, f = self.data_index
            self.data_path = self.out / DATA_PATH.format(chunk_index=c, file_index=f)
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            self.data_writer = pq.ParquetWriter(str(self.data_path) + PARTIAL, schema)
        return self.data_writer, self.data_index

    def _close_data(self) -> None:
        if self.data_writer is not None and self.data_path is not None:
            self.data_writer.close()
            os.replace(str(self.data_path) + PARTIAL, self.data_path)
            self.created.append(self.data_path)
            self.data_writer = None

    def video(self, key: str, shape: tuple[int, int, int]) -> tuple[VideoWriter, tuple[int, int]]:
        w = self.videos.get(key)
        if w is not None and w.bytes_so_far >= self.opts.video_files_size_in_mb * 1e6:
            self.created.append(w.close())
            del self.videos[key]
            self.video_index[key] = _next_file([self.video_index[key]], self.opts.chunks_size)
            w = None
        if w is None:
            c, f = self.video_index.setdefault(key, (0, 0))
            path = self.out / VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f)
            w = self.videos[key] = VideoWriter(path, self.fps, shape[1], shape[0], self.opts.video)
        return w, self.video_index[key]

    def close(self) -> None:
        self._close_data()
        for key in list(self.videos):
            self.created.append(self.videos.pop(key).close())

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.data_writer is not None:
                self.data_writer.close()
        if self.data_path is not None:
            Path(str(self.data_path) + PARTIAL).unlink(missing_ok=True)
        for w in self.videos.values():
            w.abort()
        for p in self.created:
            p.unlink(missing_ok=True)


# ---- the export ------------------------------------------------------------------------------


def export_lerobot(
    dataset: Dataset | str | Path,
    out: str | Path,
    options: LeRobotExportOptions | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export every kept, complete episode of ``dataset`` not yet in ``out``; see the module doc.
    ``log`` gets one line per bad episode, ``progress`` one per exported episode."""
    opts = options or LeRobotExportOptions()
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    out = Path(out)
    state = _load_out(out)
    check_out_dir(out, "the LeRobot export")
    _clean_leftovers(out, state)
    report = ExportReport(out)

    def skip(line: str) -> None:
        report.skipped.append(line)
        log(f"rig: {line}")

    keep = {Status.COMPLETE.value} | ({Status.RECOVERED.value} if opts.include_recovered else set())
    todo: list[EpisodeInfo] = []
    for info in ds.episodes():
        if not wanted(info, keep, opts.include_failed):
            continue
        if (info.start_wall, info.index) in state.keys:
            report.already.append(info.index)
            continue
        todo.append(info)
    if not todo:
        return report

    fps = int(state.info["fps"]) if state.info else opts.fps
    cams: list[str] | None = None
    if state.info is not None:
        cams = [k[len("observation.images."):] for k in _video_keys(state.info)]
    elif opts.cameras is not None:
        cams = list(opts.cameras)
    if state.info is not None and (keys := _video_keys(state.info)):
        # an append keeps the codec the export was made with
        codec_name = state.info["features"][keys[0]].get("info", {}).get("video.codec", opts.video.codec)
        opts = dataclasses.replace(opts, video=dataclasses.replace(opts.video, codec=codec_name))
    codec = pick_codec(opts.video.codec)
    row_times = "rig.row_t_ns" in state.info["features"] if state.info else opts.fps is not None
    files: _Files | None = None
    new_rows: list[dict[str, Any]] = []
    features = state.info["features"] if state.info else None
    n_frames = int(state.info["total_frames"]) if state.info else 0
    tasks = list(state.tasks)
    ep_index = len(state.episodes)
    first_attrs: dict[str, Any] = {}
    current = todo[0].index
    try:
        for info in todo:
            current = info.index
            plan = None
            with skipping(info.index, skip, ExportProblem, unreadable=True):  # a bad episode: one line
                ep = ds.episode(info.index)
                plan = _plan_episode(ep, info, opts, fps, cams, row_times)
            if plan is None:
                continue
            if fps is None:
                fps = int(round(_stream_rate(ep, opts.stream))) or 50
            if cams is None:
                cams = [c.name for c in plan.cameras]
            ep_features = _features(plan, fps, codec)
            if features is None:
                features = ep_features
                first_attrs = ep.attrs
            elif (problem := _mismatch(features, ep_features)) is not None:
                skip(f"episode {info.index} does not match the export ({problem}); skipped")
                continue
            if files is None:
                files = _Files(out, state, opts, fps)
            if info.task not in tasks:
                tasks.append(info.task)
            row = _write_episode(files, plan, features, ep_index, n_frames, tasks.index(info.task), fps)
            new_rows.append(row)
            n_frames += plan.n
            ep_index += 1
            report.exported.append(info.index)
            report.frames += plan.n
            if progress is not None:
                progress(f"episode {info.index} -> LeRobot episode {ep_index - 1}: {plan.n} rows, "
                         f"{len(plan.cameras)} camera(s)")
            report.recorded_s += plan.duration_s
        if files is not None:
            files.close()
        if not new_rows:
            return report
        assert features is not None and fps is not None
        _commit(out, state, new_rows, tasks, features, fps, opts, first_attrs, ds)
    except BaseException as e:
        if files is not None:
            files.abort()
        if isinstance(e, OSError | RecorderError) and is_disk_full(e):
            raise DiskFullError(
                f"disk full while exporting episode {current} to {out}: nothing from this run was kept and {out} is as it was "
                f"before; free space and run the same command again") from e
        if isinstance(e, OSError):
            raise RecorderError(f"cannot write the export in {out} ({e}); nothing from this run was kept") from e
        raise
    return report


def _features(plan: _Plan, fps: int, codec: str) -> dict[str, Any]:
    feats: dict[str, Any] = {}
    for cam in plan.cameras:
        h, w, c = cam.shape
        feats[camera_key(cam.name)] = {
            "dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": "av1" if codec == "libsvtav1" else "h264",
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": c, "has_audio": False},
        }
    for key, v in plan.columns.items():
        names = plan.names if key in STANDARD.values() else None
        feats[key] = _feature(v.dtype, tuple(v.shape[1:]), names)
    for cam in plan.cameras:
        for what in ("row", "index", "t_ns", "t_device_ns", "skew_ns"):
            feats[f"rig.{cam.name}.{what}"] = _feature(np.dtype(np.int64), ())
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        feats[key] = _feature(np.dtype(np.float32 if key == "timestamp" else np.int64), ())
    return feats


def _mismatch(have: dict[str, Any], new: dict[str, Any]) -> str | None:
    if set(have) != set(new):
        return f"features differ: {sorted(set(have) ^ set(new))}"
    for k, f in have.items():
        if list(f["shape"]) != list(new[k]["shape"]) or f["dtype"] != new[k]["dtype"]:
            return f"{k} is {new[k]['dtype']}{list(new[k]['shape'])}, the export holds {f['dtype']}{list(f['shape'])}"
    return None


def _write_episode(files: _Files, plan: _Plan, features: dict[str, Any], ep_index: int, from_index: int,
                   task_index: int, fps: int) -> dict[str, Any]:
    pa, _ = _pa()
    n = plan.n
    cols: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    for key, v in plan.columns.items():
        cols[key] = _column(v, np.dtype(features[key]["dtype"]))
        stats[key] = _stats(v)
    for cam in plan.cameras:
        for what, arr in (("row", cam.rows), ("index", cam.index), ("t_ns", cam.t_ns),
                          ("t_device_ns", cam.t_device_ns), ("skew_ns", cam.skew_ns)):
            cols[f"rig.{cam.name}.{what}"] = _column(arr, np.dtype(np.int64))
            stats[f"rig.{cam.name}.{what}"] = _stats(arr)
    frame_index = np.arange(n, dtype=np.int64)
    book: dict[str, np.ndarray] = {
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(n, ep_index, np.int64),
        "index": from_index + frame_index,
        "task_index": np.full(n, task_index, np.int64),
    }
    for key, v in book.items():
        cols[key] = _column(v, v.dtype)
        stats[key] = _stats(v)
    order = [k for k in features if k in cols]
    table = pa.table({k: cols[k] for k in order})
    row: dict[str, Any] = {
        "episode_index": ep_index, "tasks": [plan.info.task], "length": n,
        "dataset_from_index": from_index, "dataset_to_index": from_index + n,
    }
    # videos first: if one fails, nothing of the episode is in the data file yet
    for cam in plan.cameras:
        key = camera_key(cam.name)
        writer, (c, f) = files.video(key, cam.shape)
        img_stats = _ImageStats(n)
        start = writer.frames
        for i, (_, img) in enumerate(_decoded(plan.ep, cam.name, cam.shown, cache=cam.cache)):
            writer.write(img)
            img_stats.add(i, img)
        stats[key] = img_stats.result()
        cam.cache.blobs.clear()
        row[f"videos/{key}/chunk_index"] = c
        row[f"videos/{key}/file_index"] = f
        row[f"videos/{key}/from_timestamp"] = start / fps
        row[f"videos/{key}/to_timestamp"] = writer.frames / fps
    writer_, (c, f) = files.data(table.schema)
    writer_.write_table(table)
    row["data/chunk_index"], row["data/file_index"] = c, f
    row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
    for key, s in stats.items():
        for k, v in s.items():
            row[f"stats/{key}/{k}"] = np.asarray(v, np.float64).reshape(-1).tolist()
    row.update(_rig_columns(plan))
    return row


def _rig_columns(plan: _Plan) -> dict[str, Any]:
    info, attrs = plan.info, plan.ep.attrs
    missed = plan.columns.get("rig.missed")
    out: dict[str, Any] = {
        "rig/episode": info.index,
        "rig/start_wall": info.start_wall,
        "rig/status": info.status,
        "rig/success": info.success,
        "rig/operator": info.operator,
        "rig/duration_s": float(info.duration_s),
        "rig/flags": list(info.flags),
        "rig/note": info.note or "",
        "rig/dropped": json.dumps(info.dropped),
        "rig/missed_ticks": int(np.asarray(missed).sum()) if missed is not None else 0,
        "rig/ticks": plan.n_ticks,
        "rig/attrs": json.dumps(jsonable(attrs)),
    }
    for cam in plan.cameras:
        out[f"rig/{cam.name}/frames_recorded"] = cam.recorded
        out[f"rig/{cam.name}/index_gaps"] = cam.gaps
        out[f"rig/{cam.name}/alignment"] = json.dumps(cam.summary)
    return out


def _commit(out: Path, state: _State, new_rows: list[dict[str, Any]], tasks: list[str], features: dict[str, Any],
            fps: int, opts: LeRobotExportOptions, first_attrs: dict[str, Any], ds: Dataset) -> None:
    pa, _ = _pa()
    rows = state.episodes + new_rows
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    stats_keys = [k for k in features if any(f"stats/{k}/mean" in r for r in rows)]
    stats = {}
    for k in stats_keys:
        per = [{s: r[f"stats/{k}/{s}"] for s in STAT_KEYS if f"stats/{k}/{s}" in r} for r in rows
               if f"stats/{k}/mean" in r]
        agg = _aggregate(per)
        shape = (3, 1, 1) if features[k]["dtype"] == "video" else (-1,)
        stats[k] = {s: np.asarray(v).reshape(shape if s != "count" else (-1,)).tolist() for s, v in agg.items()}
    total = int(rows[-1]["dataset_to_index"])
    info: dict[str, Any] = dict(state.info) if state.info else {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": opts.robot_type or str(first_attrs.get("rig") or "rig"),
        "chunks_size": opts.chunks_size,
        "data_files_size_in_mb": opts.data_files_size_in_mb,
        "video_files_size_in_mb": opts.video_files_size_in_mb,
        "fps": int(fps),
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if _video_keys({"features": features}) else None,
        "features": features,
    }
    info.update({"total_episodes": len(rows), "total_frames": total, "total_tasks": len(tasks),
                 "splits": {"train": f"0:{len(rows)}"}})
    rig = dict(info.get("rig") or {})
    rig.update({
        "format": "rig-lerobot-export", "version": 1, "source": str(ds.path.resolve()),
        "stream": opts.stream, "fields": {r: getattr(opts, r) for r in STANDARD},
        "alignment": "each row: the latest tick and the latest frame (camera latency subtracted) at or before it",
    })
    rig["exports"] = [*rig.get("exports", []), {"episodes": [r["rig/episode"] for r in new_rows]}]
    info["rig"] = rig
    _write_table(out / TASKS_PATH, _tasks_table(tasks))
    _write_table(out / EPISODES_PATH, table)
    _write_json(out / STATS_PATH, stats)
    _write_json(out / INFO_PATH, info)  # last: an export is what info.json says it is

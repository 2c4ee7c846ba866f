"""Import a LeRobotDataset v3.0 into a rig dataset, so inspect, replay and quick-train work on it.

Each LeRobot episode becomes one rig episode (status ``complete``) with a ``joints`` stream and
one camera per video feature, written through the recorder's own EpisodeWriter:

    observation.state -> follower_q     action -> action
    observation.velocity -> follower_dq observation.effort -> follower_current
    rig.<field> (an export made by rig) -> <field>      (leader_q, tick, t_deadline_ns, ...)

Times: ``rig.t_ns`` where the export kept it, else ``timestamp`` on a fresh monotonic base.
Frames: an export made by rig says which recorded frame each row shows (``rig.<cam>.row``), so
each recorded frame is stored once with its own host/device stamps and driver index; otherwise
every row's decoded frame is stored at the row's time. A rig -> LeRobot -> rig round trip keeps
every joint value and time stamp, and the frames within the video codec's (and JPEG's) loss.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from drivers.cameras.frame import Frame
from recorder.codec import encode_jpeg
from recorder.dataset import Dataset
from recorder.errors import RecorderError
from recorder.video import iter_frames
from recorder.writer import WriterOptions

FIELD_OF = {"observation.state": "follower_q", "action": "action", "observation.velocity": "follower_dq",
            "observation.effort": "follower_current"}
# Import feeds the writer as fast as it can: let its queues hold a whole episode (nothing dropped).
IMPORT_OPTIONS = WriterOptions(max_pending_s=1e7)


@dataclass
class ImportReport:
    source: Path
    dataset: Path
    episodes: list[int] = field(default_factory=list)  # rig episode indices made
    skipped: list[str] = field(default_factory=list)
    frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.skipped


@dataclass
class CameraTrack:
    """One camera of an episode to import: frames with their stamps, in capture order."""

    name: str
    fps: float
    frames: Iterable[tuple[int, int, int, np.ndarray]]  # (driver index, t_host_ns, t_device_ns, rgb)


def write_episode(
    ds: Dataset, task: str, rate_hz: float, t_ns: np.ndarray, fields: Mapping[str, np.ndarray],
    cameras: Iterable[CameraTrack] = (), success: bool | None = None, extra: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """Write one imported episode through EpisodeWriter; returns (episode index, frames written)."""
    t_ns = np.asarray(t_ns, np.int64)
    if t_ns.size == 0:
        raise RecorderError("an episode with no rows cannot be imported")
    keep = dict(attrs or {})
    w = ds.new_episode(task=task, operator=str(keep.get("operator", "")), config=keep.get("config"),
                       calibration=keep.get("calibration"), intrinsics=keep.get("camera_intrinsics"),
                       extra={k: v for k, v in {**keep, **(extra or {})}.items()
                              if k not in _WRITER_OWNED}, options=IMPORT_OPTIONS)
    spec = {k: (tuple(np.asarray(v).shape[1:]), np.asarray(v).dtype) for k, v in fields.items()}
    w.add_stream("joints", spec, rate_hz=rate_hz)
    cams = list(cameras)
    for cam in cams:
        w.add_camera(cam.name, fps=cam.fps)
    w.start()
    n_frames = 0
    try:
        cols = {k: np.asarray(v) for k, v in fields.items()}
        for i in range(t_ns.size):
            w.append("joints", int(t_ns[i]), **{k: v[i] for k, v in cols.items()})
        for cam in cams:
            for index, t_host, t_dev, rgb in cam.frames:
                blob = np.frombuffer(encode_jpeg(rgb), np.uint8)
                w.add_frame(Frame(cam.name, int(index), int(t_host), blob, "jpeg",
                                  None if t_dev < 0 else int(t_dev)))
                n_frames += 1
    except BaseException:
        w.stop(status="discarded", note="import failed partway")
        raise
    w.stop(success=success)
    # the writer measured how long the import took; the episode lasted what it recorded
    span = float(keep.get("duration_s") or (int(t_ns[-1]) - int(t_ns[0])) / 1e9 + 1.0 / rate_hz)
    zarr.open_group(str(w.path), mode="r+").attrs["duration_s"] = span
    return w.index, n_frames


# EpisodeWriter sets these itself; an imported episode's own values are kept under imported_from.
_WRITER_OWNED = {"status", "success", "start_wall", "start_monotonic_ns", "stop_monotonic_ns", "duration_s",
                 "counts", "writer_stats", "writer", "jpeg_backend", "software_version", "format_version",
                 "task", "operator", "config", "calibration", "camera_intrinsics", "note"}


def _pa():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a core dependency
        raise RecorderError("importing LeRobot datasets needs pyarrow: pip install 'pyarrow>=21,<27'") from e
    return pq


def is_lerobot(path: Path) -> bool:
    return (path / "meta" / "info.json").is_file()


def import_lerobot(source: str | Path, dataset: str | Path, log: Callable[[str], None] = print) -> ImportReport:
    pq = _pa()
    src = Path(source)
    try:
        info = json.loads((src / "meta" / "info.json").read_text())
    except (OSError, ValueError) as e:
        raise RecorderError(f"{src} is not a LeRobot dataset (meta/info.json unreadable: {e})") from e
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise RecorderError(f"{src} is a LeRobot {version or 'unknown-version'} dataset; rig imports v3.0 "
                            f"(convert it with LeRobot's convert_dataset_v21_to_v30 first)")
    fps = float(info["fps"])
    features: dict[str, Any] = info["features"]
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    if not features.get("observation.state") or not features.get("action"):
        raise RecorderError(f"{src} has no observation.state or action feature; nothing for the rig's joints")
    try:
        episodes = pq.read_table(src / "meta" / "episodes").to_pylist()
    except Exception as e:
        raise RecorderError(f"{src}: meta/episodes cannot be read ({e})") from e
    episodes.sort(key=lambda e: e["episode_index"])
    ds = Dataset(dataset, create=True)
    report = ImportReport(src, ds.path)
    data_cache: dict[str, Any] = {}
    for ep in episodes:
        where = f"LeRobot episode {ep['episode_index']}"
        try:
            rel = info["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
            if rel not in data_cache:
                data_cache.clear()  # episodes are in file order: one file in memory at a time
                data_cache[rel] = pq.read_table(src / rel)
            table = data_cache[rel]
            idx = np.asarray(table.column("episode_index"))
            rows = table.filter(idx == ep["episode_index"])
            index, n = _import_one(ds, src, info, ep, rows, fps, video_keys)
            report.episodes.append(index)
            report.frames += n
        except Exception as e:
            msg = f"{where} cannot be imported ({type(e).__name__}: {e}); skipped"
            report.skipped.append(msg)
            log(f"rig: {msg}")
    return report


def _column(rows, name: str) -> np.ndarray:
    """A column as numpy: (N,) for scalars, (N, D) for fixed- or variable-size lists of one length."""
    import pyarrow as pa

    col = rows.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return np.asarray(col.flatten()).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return np.stack([np.asarray(v) for v in col.to_pylist()])
    return np.asarray(col)


def _import_one(ds: Dataset, src: Path, info: dict[str, Any], ep: dict[str, Any], rows, fps: float,
                video_keys: list[str]) -> tuple[int, int]:
    n = rows.num_rows
    if n == 0:
        raise RecorderError("it has no rows")
    names = set(rows.column_names)
    order = np.argsort(np.asarray(rows.column("frame_index")), kind="stable")
    rows = rows.take(order)
    fields: dict[str, np.ndarray] = {}
    for key, fname in FIELD_OF.items():
        if key in names:
            fields[fname] = _column(rows, key).astype(np.float32).reshape(n, -1)
    for key in sorted(names):
        if key.startswith("rig.") and key.count(".") == 1 and key not in ("rig.t_ns", "rig.row_t_ns"):
            fields[key[4:]] = _column(rows, key)
    if "rig.t_ns" in names:
        t_ns = _column(rows, "rig.t_ns").astype(np.int64)
    else:
        ts = _column(rows, "timestamp").astype(np.float64)
        t_ns = time.monotonic_ns() + np.round(ts * 1e9).astype(np.int64)
    attrs: dict[str, Any] = {}
    if ep.get("rig/attrs"):
        attrs = json.loads(ep["rig/attrs"])
    cams = []
    for key in video_keys:
        cam = key.removeprefix("observation.images.")
        rel = info["video_path"].format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                        file_index=ep[f"videos/{key}/file_index"])
        start = int(round(float(ep[f"videos/{key}/from_timestamp"]) * fps))
        cams.append(CameraTrack(cam, _camera_fps(attrs, cam, fps),
                                _camera_frames(src / rel, start, n, rows, cam, names, t_ns)))
    task = (ep.get("tasks") or [""])[0]
    success = ep.get("rig/success") if "rig/success" in ep else None
    extra = {"imported_from": {"format": "lerobot", "source": str(src.resolve()),
                               "episode_index": int(ep["episode_index"]),
                               "rig_episode": ep.get("rig/episode"), "start_wall": ep.get("rig/start_wall")}}
    return write_episode(ds, task, _rate(attrs, fps), t_ns, fields, cams, success, extra, attrs)


def _rate(attrs: Mapping[str, Any], fps: float) -> float:
    rate = (attrs.get("config") or {}).get("rate_hz")
    return float(rate) if isinstance(rate, int | float) and rate > 0 else fps


def _camera_fps(attrs: Mapping[str, Any], cam: str, fps: float) -> float:
    for c in (attrs.get("config") or {}).get("cameras") or []:
        if isinstance(c, dict) and c.get("name") == cam and isinstance(c.get("fps"), int | float):
            return float(c["fps"])
    return fps


def _camera_frames(path: Path, start: int, n: int, rows, cam: str, names: set[str],
                   t_ns: np.ndarray) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Decoded frames of one episode, streamed from the video: each recorded frame once where
    the export says which one a row shows (rig exports), else one frame per row at its time."""
    if f"rig.{cam}.row" in names:
        rec_row = _column(rows, f"rig.{cam}.row")
        index = _column(rows, f"rig.{cam}.index")
        host = _column(rows, f"rig.{cam}.t_ns")
        dev = _column(rows, f"rig.{cam}.t_device_ns")
    else:
        rec_row = np.arange(n)
        index, host, dev = np.arange(n), t_ns, np.full(n, -1)
    seen: set[int] = set()
    got = 0
    for i, img in iter_frames(path, start, start + n):
        got += 1
        k = i - start
        r = int(rec_row[k])
        if r < 0 or r in seen:  # before the first frame (it shows the first one), or shown again
            continue
        seen.add(r)
        yield int(index[k]), int(host[k]), int(dev[k]), img
    if got != n:
        raise RecorderError(f"{path} holds {got} of this episode's {n} frames")

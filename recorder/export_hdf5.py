"""Export episodes to the ACT/ALOHA HDF5 layout (one ``episode_<i>.hdf5`` per episode).

    attrs['sim']                      bool
    /observations/qpos                (T, D) float   <- follower_q
    /observations/qvel                (T, D) float   <- follower_dq
    /observations/effort              (T, D) float   <- follower_current
    /observations/images/<cam>        (T, H, W, 3) uint8, the frame aligned to each tick
    /action                           (T, D) float   <- action

T is the number of control ticks; each tick gets the latest frame captured at or before it.

Episodes are exported one by one: an empty, damaged or unmappable one is skipped with a line and
the export goes on. Each file is written under a temp name and renamed (recorder.export_common);
the disk's free space is checked against the file's size first, because HDF5 fed a full disk
fails its close and then crashes the process when the broken file object is freed (segfault).
A rerun keeps the files that match what they would be now and writes only what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recorder.align import align_frames_to_ticks
from recorder.codec import decode_jpeg
from recorder.dataset import Dataset, Episode
from recorder.derived import EE_NAMES, is_handheld, pose_rows
from recorder.errors import DiskFullError, RecorderError
from recorder.export_common import (
    ExportReport,
    check_free_space,
    check_out_dir,
    clean_leftovers,
    wanted,
    write_then_rename,
)
from recorder.layout import T_NS, Status


@dataclass(frozen=True)
class AlohaMapping:
    """Which stream and fields fill ALOHA's keys (defaults: the ALOHA follower arms)."""

    stream: str = "joints"
    qpos: str = "follower_q"
    qvel: str = "follower_dq"
    effort: str = "follower_current"
    action: str = "action"


_BROKEN: list[Any] = []  # HDF5 files whose close failed: never freed (freeing one segfaults)


def hdf5_left_broken() -> bool:
    """True when an HDF5 file failed mid-write (a disk filled by someone else during the export):
    the HDF5 library then crashes at interpreter exit, so the CLI leaves with ``os._exit``."""
    return bool(_BROKEN)


@dataclass
class _Plan:
    """Everything one episode's file holds, read (and checksum-verified) before writing starts."""

    index: int
    task: str
    arrays: dict[str, np.ndarray]  # qpos, qvel, effort, action: (T, D) float64
    cams: dict[str, tuple[list[bytes], np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)
    names: list[str] | None = None  # qpos/action columns, where they are not the follower joints
    pose_valid: np.ndarray | None = None  # handheld: 1 where the pose at the row and the next is trusted

    def nbytes(self) -> int:
        n = sum(a.nbytes for a in self.arrays.values())
        for _, idx, first, _ in self.cams.values():
            n += idx.size * first.nbytes + idx.size * 64  # frames plus a chunk-index entry each
        return n + 64 * 1024


def _plan(ep: Episode, mapping: AlohaMapping, cameras: Sequence[str] | None,
          latency_ns: Mapping[str, int] | None) -> _Plan:
    handheld = is_handheld(ep, mapping.stream)  # the handheld gripper: its pose is the end-effector qpos
    data = pose_rows(ep, mapping.qpos, mapping.action) if handheld else ep.read_stream(mapping.stream)
    t = data[T_NS]
    T = int(t.size)
    if T == 0:
        raise RecorderError(
            f"episode {ep.index} has no rows in stream {mapping.stream!r} (a take cut off at its start); "
            f"nothing to export"
        )
    for key in ("qpos", "action"):
        if getattr(mapping, key) not in data:
            raise RecorderError(
                f"episode {ep.index} stream {mapping.stream!r} has no field {getattr(mapping, key)!r} for "
                f"ALOHA's {key}; it has {sorted(data)}. Pass a mapping that names the right field."
            )
    qpos = np.asarray(data[mapping.qpos], np.float64).reshape(T, -1)
    plan = _Plan(ep.index, str(ep.attrs.get("task", "")), {"qpos": qpos})
    if handheld:
        plan.names, plan.pose_valid = EE_NAMES, data["pose_valid"]

    def field_or_zeros(name: str) -> np.ndarray:
        if name in data:
            return np.asarray(data[name], np.float64).reshape(T, -1)
        plan.filled.append(name)
        return np.zeros_like(qpos)

    plan.arrays["qvel"] = field_or_zeros(mapping.qvel)
    plan.arrays["effort"] = field_or_zeros(mapping.effort)
    plan.arrays["action"] = np.asarray(data[mapping.action], np.float64).reshape(T, -1)
    for cam in list(cameras) if cameras is not None else ep.cameras:
        blobs = ep.read_jpeg(cam)  # every frame read and checked before a byte is written
        if not blobs:
            raise RecorderError(f"episode {ep.index} camera {cam!r} has no frames; export without it (cameras=...)")
        lat = (latency_ns or {}).get(cam, ep.camera_latency_ns(cam))  # default: what calibration measured
        al = align_frames_to_ticks(t, ep.frame_times(cam)[T_NS], lat)
        idx = np.where(al.indices < 0, 0, al.indices)  # before the first frame: hold the first frame
        plan.cams[cam] = (blobs, idx, decode_jpeg(blobs[int(idx[0])]), al.ticks_without_frame)
    return plan


def _write(plan: _Plan, path: Path, sim: bool, compression: str | None, key: str) -> None:
    import h5py

    root = h5py.File(path, "w")
    try:
        root.attrs["sim"] = bool(sim)
        root.attrs["rig_episode"] = plan.index
        root.attrs["rig_task"] = plan.task
        root.attrs["rig_export_key"] = key
        obs = root.create_group("observations")
        for name in ("qpos", "qvel", "effort"):
            obs.create_dataset(name, data=plan.arrays[name])
        root.create_dataset("action", data=plan.arrays["action"])
        images = obs.create_group("images")
        for cam, (blobs, idx, first, missing) in plan.cams.items():
            h, w = first.shape[:2]
            ds = images.create_dataset(
                cam, shape=(idx.size, h, w, 3), dtype=np.uint8, chunks=(1, h, w, 3), compression=compression
            )
            # Decode each used frame once: consecutive ticks mostly reuse the same frame.
            cache: dict[int, np.ndarray] = {int(idx[0]): first}
            for i, fi in enumerate(idx.tolist()):
                img = cache.get(fi)
                if img is None:
                    img = decode_jpeg(blobs[fi])
                    cache = {fi: img}
                ds[i] = img
            ds.attrs["ticks_without_frame"] = missing
        if plan.filled:
            root.attrs["rig_zero_filled"] = plan.filled
        if plan.names is not None:
            root.attrs["rig_qpos_names"] = plan.names
        if plan.pose_valid is not None:
            root.create_dataset("rig_pose_valid", data=plan.pose_valid)
        root.close()
    except OSError:
        try:
            root.close()
        except OSError:
            _BROKEN.append((root, locals().get("ds")))  # HDF5 cannot close it; freeing it would crash
        raise


def _export_key(ep: Episode, mapping: AlohaMapping, cams: Sequence[str] | None, sim: bool) -> str:
    a = ep.attrs
    return json.dumps({"status": a.get("status"), "stop": a.get("stop_monotonic_ns"), "counts": a.get("counts"),
                       "mapping": asdict(mapping), "cameras": list(cams) if cams is not None else None,
                       "sim": bool(sim)}, sort_keys=True)


def _is_done(path: Path, index: int, key: str) -> bool:
    """A file from an earlier run that holds exactly this export of this episode."""
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs.get("rig_episode", -1)) == index and f.attrs.get("rig_export_key") == key
    except (OSError, ValueError):
        return False


def export_episode(
    ep: Episode,
    out_path: str | Path,
    mapping: AlohaMapping = AlohaMapping(),
    cameras: Sequence[str] | None = None,
    sim: bool = False,
    latency_ns: Mapping[str, int] | None = None,
    compression: str | None = None,
) -> Path:
    out_path = Path(out_path)
    plan = _plan(ep, mapping, cameras, latency_ns)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(out_path.parent, plan.nbytes(), f"episode {ep.index} ({out_path.name})")
    key = _export_key(ep, mapping, cameras, sim)
    try:
        return write_then_rename(out_path, lambda tmp: _write(plan, tmp, sim, compression, key))
    except DiskFullError as e:
        raise DiskFullError(f"{e} (episode {ep.index}, {out_path.name})") from None


def export_dataset(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    mapping: AlohaMapping = AlohaMapping(),
    cameras: Sequence[str] | None = None,
    include_recovered: bool = False,
    include_failed: bool = False,
    sim: bool = False,
    latency_ns: Mapping[str, int] | None = None,
    say: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export every kept (``complete``) episode as ``episode_0.hdf5``, ``episode_1.hdf5``… (ACT wants them numbered
    without holes); the rig episode index is in each file's ``rig_episode`` attribute. Episodes
    recovered after a crash go too with ``include_recovered``, failed ones with ``include_failed``
    (the same choice as the LeRobot export's).

    Skipped episodes (empty, damaged, missing a field) get one line each in ``report.skipped``
    (and through ``say``) and take no number; a full or read-only output disk stops the export
    with DiskFullError / ReadOnlyDatasetError, leaving only finished files.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    out = Path(out_dir)
    keep = {Status.COMPLETE.value} | ({Status.RECOVERED.value} if include_recovered else set())
    report = ExportReport(say=say)
    check_out_dir(out, "the ALOHA HDF5 export")
    clean_leftovers(out)
    infos, damage = ds.scan()
    for d in damage:
        report.skip(str(d))
    for info in infos:
        if not wanted(info, keep, include_failed):
            continue
        with report.episode(info.index):
            path = out / f"episode_{len(report.paths)}.hdf5"
            ep = ds.episode(info.index)
            if _is_done(path, info.index, _export_key(ep, mapping, cameras, sim)):
                report.add(path, written=False)
                continue
            report.add(export_episode(ep, path, mapping, cameras, sim, latency_ns), written=True)
    return report

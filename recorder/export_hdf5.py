"""Export episodes to the ACT/ALOHA HDF5 layout (one ``episode_<i>.hdf5`` per episode).

    attrs['sim']                      bool
    /observations/qpos                (T, D) float   <- follower_q
    /observations/qvel                (T, D) float   <- follower_dq
    /observations/effort              (T, D) float   <- follower_current
    /observations/images/<cam>        (T, H, W, 3) uint8, the frame aligned to each tick
    /action                           (T, D) float   <- action

T is the number of control ticks; each tick gets the latest frame captured at or before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recorder.align import align_frames_to_ticks
from recorder.codec import decode_jpeg
from recorder.dataset import Dataset, Episode
from recorder.errors import RecorderError
from recorder.layout import T_NS, Status


@dataclass(frozen=True)
class AlohaMapping:
    """Which stream and fields fill ALOHA's keys (defaults: the ALOHA follower arms)."""

    stream: str = "joints"
    qpos: str = "follower_q"
    qvel: str = "follower_dq"
    effort: str = "follower_current"
    action: str = "action"


def export_episode(
    ep: Episode,
    out_path: str | Path,
    mapping: AlohaMapping = AlohaMapping(),
    cameras: Sequence[str] | None = None,
    sim: bool = False,
    latency_ns: Mapping[str, int] | None = None,
    compression: str | None = None,
) -> Path:
    import h5py

    out_path = Path(out_path)
    data = ep.read_stream(mapping.stream)
    t = data[T_NS]
    T = int(t.size)
    if T == 0:
        raise RecorderError(f"episode {ep.index} has no rows in stream {mapping.stream!r}; nothing to export")
    for key in ("qpos", "action"):
        if getattr(mapping, key) not in data:
            raise RecorderError(
                f"episode {ep.index} stream {mapping.stream!r} has no field {getattr(mapping, key)!r} for "
                f"ALOHA's {key}; it has {sorted(data)}. Pass a mapping that names the right field."
            )
    qpos = np.asarray(data[mapping.qpos], np.float64).reshape(T, -1)
    cams = list(cameras) if cameras is not None else ep.cameras
    filled: list[str] = []

    def field_or_zeros(name: str) -> np.ndarray:
        if name in data:
            return np.asarray(data[name], np.float64).reshape(T, -1)
        filled.append(name)
        return np.zeros_like(qpos)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".hdf5.partial")
    with h5py.File(tmp, "w") as root:
        root.attrs["sim"] = bool(sim)
        root.attrs["rig_episode"] = ep.index
        root.attrs["rig_task"] = str(ep.attrs.get("task", ""))
        obs = root.create_group("observations")
        obs.create_dataset("qpos", data=qpos)
        obs.create_dataset("qvel", data=field_or_zeros(mapping.qvel))
        obs.create_dataset("effort", data=field_or_zeros(mapping.effort))
        root.create_dataset("action", data=np.asarray(data[mapping.action], np.float64).reshape(T, -1))
        images = obs.create_group("images")
        for cam in cams:
            lat = (latency_ns or {}).get(cam, ep.camera_latency_ns(cam))  # default: what calibration measured
            _export_camera(ep, cam, t, images, lat, compression)
        if filled:
            root.attrs["rig_zero_filled"] = filled
    tmp.replace(out_path)
    return out_path


def _export_camera(ep: Episode, cam: str, ticks: np.ndarray, images, latency_ns: int, compression) -> None:
    n = ep.num_frames(cam)
    if n == 0:
        raise RecorderError(
            f"episode {ep.index} camera {cam!r} has no frames; export without it (cameras=...)"
        )
    al = align_frames_to_ticks(ticks, ep.frame_times(cam)[T_NS], latency_ns)
    idx = np.where(al.indices < 0, 0, al.indices)  # before the first frame: hold the first frame
    first = ep.read_frame(cam, int(idx[0]))
    h, w = first.shape[:2]
    ds = images.create_dataset(
        cam, shape=(ticks.size, h, w, 3), dtype=np.uint8, chunks=(1, h, w, 3), compression=compression
    )
    # Decode each used frame once: consecutive ticks mostly reuse the same frame.
    blob_cache: dict[int, np.ndarray] = {int(idx[0]): first}
    for i, fi in enumerate(idx.tolist()):
        img = blob_cache.get(fi)
        if img is None:
            img = decode_jpeg(ep.read_jpeg(cam, fi, fi + 1)[0])
            blob_cache = {fi: img}
        ds[i] = img
    ds.attrs["ticks_without_frame"] = al.ticks_without_frame


def export_dataset(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    mapping: AlohaMapping = AlohaMapping(),
    cameras: Sequence[str] | None = None,
    statuses: Iterable[str] = (Status.COMPLETE.value, Status.RECOVERED.value),
    include_failed: bool = False,
    sim: bool = False,
    latency_ns: Mapping[str, int] | None = None,
) -> list[Path]:
    """Export every kept episode as ``episode_0.hdf5``, ``episode_1.hdf5``… (ACT wants them numbered
    without holes); the rig episode index is in each file's ``rig_episode`` attribute."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    keep = set(statuses)
    out: list[Path] = []
    for info in ds.episodes():
        if info.status not in keep or (info.success is False and not include_failed):
            continue
        path = Path(out_dir) / f"episode_{len(out)}.hdf5"
        out.append(export_episode(ds.episode(info.index), path, mapping, cameras, sim, latency_ns))
    return out

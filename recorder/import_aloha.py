"""Import a folder of ACT/ALOHA HDF5 episodes (``episode_<i>.hdf5``) into a rig dataset.

    /observations/qpos -> follower_q     /observations/qvel -> follower_dq
    /observations/effort -> follower_current     /action -> action
    /observations/images/<cam> -> camera <cam>: raw (T, H, W, 3), or ALOHA 2's padded JPEG bytes
                                   with attrs['compress'] and /compress_len (n_cam, T)

ALOHA writes no time stamps: tick i is stamped i / fps (50 Hz, ALOHA's DT = 0.02 s, unless told),
and each frame carries its tick's stamp. With 14 values, joint names follow ALOHA's order (per arm
6 joints then the gripper).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recorder.codec import decode_jpeg
from recorder.dataset import Dataset
from recorder.errors import RecorderError
from recorder.import_lerobot import CameraTrack, ImportReport, write_episode

ALOHA_FPS = 50.0
ALOHA_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
_NUMBER = re.compile(r"(\d+)")


def aloha_config(n_values: int) -> dict[str, Any] | None:
    """A config snapshot naming ALOHA's 14 values (left arm, right arm), so exports and replay
    show joint names; None for other widths."""
    if n_values != 14:
        return None
    arms = []
    for side in ("left", "right"):
        joints = [{"name": j} for j in ALOHA_JOINTS] + [{"name": "gripper", "gripper": True}]
        arms.append({"name": side, "role": "follower", "joints": joints})
    return {"name": "aloha", "rate_hz": ALOHA_FPS, "arms": arms}


def is_aloha_folder(path: Path) -> bool:
    return path.is_dir() and any(path.glob("episode_*.hdf5"))


def _episode_files(folder: Path) -> list[Path]:
    def number(p: Path) -> int:
        m = _NUMBER.search(p.stem)
        return int(m.group(1)) if m else -1

    return sorted(folder.glob("episode_*.hdf5"), key=number)


def import_aloha(source: str | Path, dataset: str | Path, fps: float = ALOHA_FPS, task: str | None = None,
                 log: Callable[[str], None] = print) -> ImportReport:
    import h5py

    src = Path(source)
    files = _episode_files(src)
    if not files:
        raise RecorderError(f"{src} holds no episode_*.hdf5 files; is it an ALOHA/ACT dataset folder?")
    ds = Dataset(dataset, create=True)
    report = ImportReport(src, ds.path)
    for path in files:
        try:
            with h5py.File(path, "r") as root:
                index, n = _import_one(ds, root, path, fps, task)
            report.episodes.append(index)
            report.frames += n
        except Exception as e:
            msg = f"{path.name} cannot be imported ({type(e).__name__}: {e}); skipped"
            report.skipped.append(msg)
            log(f"rig: {msg}")
    return report


def _import_one(ds: Dataset, root, path: Path, fps: float, task: str | None) -> tuple[int, int]:
    if "observations/qpos" not in root or "action" not in root:
        raise RecorderError("it has no /observations/qpos or /action")
    qpos = np.asarray(root["observations/qpos"][()], np.float32)
    T = qpos.shape[0]
    if T == 0:
        raise RecorderError("it has zero ticks")
    qpos = qpos.reshape(T, -1)
    fields = {"follower_q": qpos, "action": np.asarray(root["action"][()], np.float32).reshape(T, -1)}
    for key, name in (("observations/qvel", "follower_dq"), ("observations/effort", "follower_current")):
        if key in root:
            fields[name] = np.asarray(root[key][()], np.float32).reshape(T, -1)
    base = time.monotonic_ns()
    t_ns = base + np.round(np.arange(T) * (1e9 / fps)).astype(np.int64)
    compressed = bool(root.attrs.get("compress", False))
    cams = []
    images = root.get("observations/images", {})
    names = list(images)
    lengths = np.asarray(root["compress_len"][()]) if compressed and "compress_len" in root else None
    for k, cam in enumerate(names):
        cams.append(CameraTrack(cam, fps, _frames(images[cam], t_ns, compressed,
                                                  None if lengths is None else lengths[k])))
    name = task if task is not None else str(root.attrs.get("rig_task", "") or path.parent.name)
    extra = {"imported_from": {"format": "aloha-hdf5", "source": str(path.resolve()),
                               "sim": bool(root.attrs.get("sim", False))}}
    attrs = {"config": aloha_config(qpos.shape[1])} if qpos.shape[1] == 14 else {}
    return write_episode(ds, name, fps, t_ns, fields, cams, None, extra, attrs)


def _frames(dset, t_ns: np.ndarray, compressed: bool, lengths) -> Iterator[tuple[int, int, int, np.ndarray]]:
    for i in range(dset.shape[0]):
        if compressed:
            raw = np.asarray(dset[i], np.uint8)
            n = int(lengths[i]) if lengths is not None else raw.size
            # ALOHA encodes with OpenCV (BGR): flip back to the array it recorded
            img = decode_jpeg(raw[:n].tobytes())[..., ::-1]
        else:
            img = np.asarray(dset[i], np.uint8)
        yield i, int(t_ns[i]), -1, np.ascontiguousarray(img)

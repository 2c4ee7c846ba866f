"""Run with .venv-lerobot's python (bench_export.py does): LeRobot's own writer (lerobot-dataset
0.4.4, LeRobotDataset.create/add_frame/save_episode, PNG then AV1 at save_episode, image writer
threads as lerobot-record sets them) at real-time pace on the frames bench_export.py saved, and
LeRobot's loader reading a rig export at random (what a training loop does).

    python lerobot_writer.py write FRAMES.npy ROOT SECONDS N_CAMS FPS   -> one JSON line
    python lerobot_writer.py read EXPORT_ROOT N_SAMPLES                  -> one JSON line
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write(frames_path: str, root: str, seconds: float, n_cams: int, fps: int) -> dict:
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    frames = np.load(frames_path)
    h, w = frames.shape[1:3]
    features = {f"observation.images.cam{c}": {"dtype": "video", "shape": (h, w, 3),
                                                "names": ["height", "width", "channels"]} for c in range(n_cams)}
    features["observation.state"] = {"dtype": "float32", "shape": (14,), "names": None}
    features["action"] = {"dtype": "float32", "shape": (14,), "names": None}
    ds = LeRobotDataset.create("bench/writer", fps=fps, features=features, root=root,
                               image_writer_threads=4 * n_cams)  # lerobot-record: 4 threads per camera
    n = int(seconds * fps)
    late = 0
    cpu0 = cpu_s()
    t0 = time.monotonic()
    for k in range(n):
        due = t0 + k / fps
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 1 / fps:
            late += 1
        q = np.full(14, k, np.float32)
        frame = {f"observation.images.cam{c}": frames[(k + 7 * c) % len(frames)] for c in range(n_cams)}
        ds.add_frame({**frame, "observation.state": q, "action": q, "task": "bench"})
    t_stop = time.monotonic()
    ds.save_episode()
    ds.finalize()
    stop_s = time.monotonic() - t_stop
    cpu = cpu_s() - cpu0
    kept = 0
    import av

    for mp4 in Path(root, "videos").rglob("*.mp4"):
        with av.open(str(mp4)) as c:
            kept += sum(1 for _ in c.decode(video=0))
    return {"sent": n * n_cams, "kept": kept, "late_ticks": late, "ticks": n, "cpu_s": cpu,
            "stop_to_readable_s": stop_s, "bytes": dir_bytes(Path(root) / "videos") + dir_bytes(Path(root) / "data")}


def read(root: str, samples: int) -> dict:
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("rig/export", root=root)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ds), samples)
    ds[int(idx[0])]  # warm up: open files
    t = time.perf_counter()
    for i in idx:
        ds[int(i)]
    wall = time.perf_counter() - t
    cams = len(ds.meta.video_keys)
    return {"samples": samples, "cams": cams, "samples_per_s": samples / wall, "frames_per_s": samples * cams / wall}


if __name__ == "__main__":
    if sys.argv[1] == "write":
        out = write(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        out = read(sys.argv[2], int(sys.argv[3]))
    print(json.dumps(out))

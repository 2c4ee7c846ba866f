"""`rig record` on the simulated rig, then inspect and export what it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import zarr

from recorder import Dataset

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_sim_episodes_are_complete_and_synchronized(sim_dataset):
    ds = Dataset(sim_dataset)
    infos = ds.episodes()
    assert [i.status for i in infos] == ["complete"] * 4
    assert all(i.success in (True, False) for i in infos)  # the sim labels each take
    for info in infos:
        ep = ds.episode(info.index)
        j = ep.read_stream("joints")
        assert j["leader_q"].shape[1] == 14 and len(j["t_ns"]) > 100
        assert np.all(np.diff(j["t_ns"]) > 0)
        for cam in ("top", "left_wrist", "right_wrist"):
            t = ep.frame_times(cam)["t_ns"]
            assert len(t) > 20 and np.all(np.diff(t) > 0)
            a = ep.align(cam, "joints")
            # 15 fps frames: the median tick's frame about a period old. Ticks before a camera's
            # first frame have none; a loaded machine starts the render process later, so count
            # them against the take, not against a number of ticks
            assert a.ticks_without_frame < len(j["t_ns"]) // 4 and a.p50_ms < 150, a
        g = zarr.open_group(str(ep.path), mode="r")
        assert g.attrs["config"]["name"] == "sim-aloha" and "seed" in g.attrs
    seeds = [zarr.open_group(str(ds.episode(i.index).path), mode="r").attrs["seed"] for i in infos]
    assert seeds == [0, 1, 2, 3]


def test_inspect_and_export_the_recorded_dataset(sim_dataset, tmp_path):
    out = subprocess.run([sys.executable, "-m", "rig", "inspect", str(sim_dataset), "0"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "top" in out.stdout and "skew to ticks ms" in out.stdout and "stream joints" in out.stdout
    dest = tmp_path / "hdf5"
    out = subprocess.run([sys.executable, "-m", "rig", "export", str(sim_dataset), str(dest), "--format",
                          "aloha-hdf5", "--include-failed", "--sim"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    files = sorted(dest.glob("episode_*.hdf5"))
    assert len(files) == 4
    with h5py.File(files[0], "r") as root:  # the way ACT's loader reads it
        assert bool(root.attrs["sim"]) is True
        qpos = root["/observations/qpos"][()]
        action = root["/action"][()]
        assert qpos.shape[1] == 14 and action.shape == qpos.shape
        img = root["/observations/images/top"][()]
        assert img.shape[0] == qpos.shape[0] and img.shape[-1] == 3 and img.dtype == np.uint8

"""Export carries a handheld episode's pose as the end-effector state and action (issue 18):
`rig export --format lerobot` and `--format aloha-hdf5`, read back with pyarrow and h5py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mujoco") is None:  # not imported here: the home renders in `rig pose --sim-home`
    pytest.skip("needs mujoco (pip install -e .[sim])", allow_module_level=True)
pytest.importorskip("cv2")
h5py = pytest.importorskip("h5py")
pq = pytest.importorskip("pyarrow.parquet")

from recorder import Dataset  # noqa: E402
from recorder.derived import EE_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rig", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def handheld(tmp_path_factory):
    """A 5 s take of the simulated home, recorded as an episode, with its pose computed."""
    ds = tmp_path_factory.mktemp("hand") / "hand.zarr"
    # recorded and its pose computed by `rig pose --sim-home` (renders in its own process)
    res = subprocess.run([sys.executable, "-m", "rig", "pose", str(ds), "--sim-home", "5", "--seed", "2", "--imu", "world"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT),
                              "MUJOCO_GL": os.environ.get("RIG_RENDER_GL", "egl")})
    assert res.returncode == 0, res.stdout + res.stderr
    idx = Dataset(ds).indices()[0]
    return ds, idx


def _expected(ds: Path, idx: int, rows_t: np.ndarray) -> np.ndarray:
    """The pose stream's jaw position and orientation at the next pose sample at or after each row."""
    p = Dataset(ds).episode(idx).read_stream("pose")
    k = np.clip(np.searchsorted(p["t_ns"], rows_t), 0, len(p["t_ns"]) - 1)
    out = np.column_stack([p["jaw_position"][k], p["quat"][k]])
    out[~p["trusted"][k].astype(bool)] = np.nan
    return out


def _check_state_action(state: np.ndarray, action: np.ndarray, valid: np.ndarray, expected: np.ndarray) -> None:
    assert state.shape[1] == 8 and action.shape == state.shape
    ok = valid.astype(bool)
    assert ok.mean() > 0.5  # most of the take has a trusted pose
    np.testing.assert_allclose(state[ok, :7], expected[ok], atol=1e-5)  # state = the pose at the row
    np.testing.assert_allclose(action[:-1][ok[:-1]], state[1:][ok[:-1]], atol=1e-6)  # action = the next row's
    assert np.isnan(state[~np.isfinite(expected).all(axis=1)]).all(axis=1).all()  # untrusted: NaN, not invented
    assert ((state[ok, 7] >= 0) & (state[ok, 7] <= 1)).all()  # the jaw opening
    assert np.allclose(np.linalg.norm(state[ok, 3:7], axis=1), 1, atol=1e-5)


def test_lerobot_export_writes_the_pose_as_state_and_action(handheld, tmp_path):
    ds, idx = handheld
    out = tmp_path / "lr"
    res = rig("export", str(ds), "--format", "lerobot", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    table = pq.read_table(next(out.glob("data/*/*.parquet")))
    state = np.stack(table["observation.state"].to_numpy(zero_copy_only=False)).astype(np.float64)
    action = np.stack(table["action"].to_numpy(zero_copy_only=False)).astype(np.float64)
    valid = table["rig.pose_valid"].to_numpy()
    t = table["rig.t_ns"].to_numpy()
    assert np.allclose(np.diff(t), 20_000_000, atol=1)  # 50 rows a second
    _check_state_action(state, action, valid, _expected(ds, idx, t).astype(np.float32))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["fps"] == 50
    for key in ("observation.state", "action"):
        assert info["features"][key]["names"] == EE_NAMES and info["features"][key]["shape"] == [8]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.isfinite(stats["observation.state"]["mean"]).all()  # over the trusted rows


def test_aloha_hdf5_export_writes_the_pose_as_qpos_and_action(handheld, tmp_path):
    ds, idx = handheld
    out = tmp_path / "h5"
    res = rig("export", str(ds), "--format", "aloha-hdf5", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    with h5py.File(out / f"episode_{idx}.hdf5", "r") as f:
        qpos, action, valid = f["observations/qpos"][:], f["action"][:], f["rig_pose_valid"][:]
        assert list(f.attrs["rig_qpos_names"]) == EE_NAMES
        assert f["observations/images/wrist"].shape[0] == len(qpos)
    ee = Dataset(ds).episode(idx).read_stream("pose")["t_ns"]
    t = ee[0] + np.arange(len(qpos)) * 20_000_000
    _check_state_action(qpos, action, valid, _expected(ds, idx, t))

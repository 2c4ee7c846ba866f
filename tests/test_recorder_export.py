"""ACT/ALOHA HDF5 export read back the way ACT's loader reads it; the CLI commands; recovery prompt."""

from __future__ import annotations

import argparse
import json
import time

import h5py
import numpy as np
import pytest

from drivers.cameras.frame import Frame
from recorder import Dataset, RecorderError
from recorder.export_hdf5 import AlohaMapping, export_dataset, export_episode
from recorder.recovery import check_incomplete
from rig.commands import episodes as episodes_cmd
from rig.commands import export as export_cmd
from rig.commands import inspect as inspect_cmd

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")
MS = 1_000_000
ALOHA_FIELDS = {
    "leader_q": ((14,), "f4"),
    "follower_q": ((14,), "f4"),
    "follower_dq": ((14,), "f4"),
    "follower_current": ((14,), "f4"),
    "action": ((14,), "f4"),
    "tick": ((), "i8"),
}
CAMS = ("cam_high", "cam_left_wrist")


def flat(value: int) -> np.ndarray:
    return np.full((24, 32, 3), value, np.uint8)


def record(ds: Dataset, n_ticks: int = 50, success: bool | None = True) -> None:
    """Ticks every 20 ms; frames every 40 ms, 5 ms after the tick, grey level = 4 * frame index."""
    ep = ds.new_episode(task="transfer cube")
    ep.add_stream("joints", ALOHA_FIELDS, rate_hz=50)
    for c in CAMS:
        ep.add_camera(c, fps=25)
    ep.start()
    base = time.monotonic_ns()
    for i in range(n_ticks):
        q = np.arange(14, dtype=np.float32) * 0.01 + i
        ep.append(
            "joints",
            base + i * 20 * MS,
            leader_q=q,
            follower_q=q + 0.5,
            follower_dq=np.full(14, 0.25),
            follower_current=np.full(14, -3.0),
            action=q,
            tick=i,
        )
    for k in range(n_ticks // 2):
        for c in CAMS:
            ep.add_frame(Frame(c, k, base + k * 40 * MS + 5 * MS, flat(4 * k)))
    ep.stop(success=success)


def test_export_reads_back_like_act(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    record(ds)
    record(ds, success=False)  # failed takes are left out by default
    record(ds, n_ticks=30)
    out = tmp_path / "aloha"
    paths = export_dataset(ds, out).paths
    assert [p.name for p in paths] == ["episode_0.hdf5", "episode_1.hdf5"]
    with h5py.File(out / "episode_1.hdf5", "r") as root:  # exactly ACT's loader calls
        is_sim = root.attrs["sim"]
        qpos = root["/observations/qpos"][()]
        qvel = root["/observations/qvel"][()]
        effort = root["/observations/effort"][()]
        action = root["/action"][()]
        image_dict = {cam: root[f"/observations/images/{cam}"][()] for cam in CAMS}
        assert root.attrs["rig_episode"] == 2
    assert not is_sim
    assert qpos.shape == (30, 14) and action.shape == (30, 14)
    np.testing.assert_allclose(qpos[:, 0], np.arange(30) + 0.5)
    np.testing.assert_allclose(action[7], np.arange(14) * 0.01 + 7, rtol=1e-6)
    np.testing.assert_allclose(qvel, 0.25)
    np.testing.assert_allclose(effort, -3.0)
    for cam in CAMS:
        img = image_dict[cam]
        assert img.shape == (30, 24, 32, 3) and img.dtype == np.uint8
        # tick i at 20i ms sees frame k = (20i - 5) // 40 (tick 0 precedes frame 0: holds frame 0)
        expected = [4 * max(0, (20 * i - 5) // 40) for i in range(30)]
        np.testing.assert_allclose(img[:, 0, 0, 0], expected, atol=2)


def test_export_mapping_is_configurable_and_names_missing_fields(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    record(ds, n_ticks=10)
    path = export_episode(
        ds.episode(0),
        tmp_path / "e.hdf5",
        AlohaMapping(qpos="leader_q", qvel="none"),
        cameras=["cam_high"],
        sim=True,
    )
    with h5py.File(path, "r") as root:
        assert root.attrs["sim"]
        np.testing.assert_allclose(root["/observations/qpos"][()][:, 0], np.arange(10))
        assert not root["/observations/qvel"][()].any()
        assert list(root["/observations/images"]) == ["cam_high"]
        assert list(root.attrs["rig_zero_filled"]) == ["none"]
    with pytest.raises(RecorderError, match="no field 'joint_pos'"):
        export_episode(ds.episode(0), tmp_path / "f.hdf5", AlohaMapping(qpos="joint_pos"))


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig")
    sub = parser.add_subparsers(dest="command")
    for mod in (episodes_cmd, inspect_cmd, export_cmd):
        mod.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_episodes_inspect_export(tmp_path, capsys):
    ds_path = tmp_path / "ds"
    ds = Dataset.create(ds_path)
    record(ds, n_ticks=20)
    record(ds, n_ticks=20, success=None)
    assert _cli(["episodes", str(ds_path), "--success", "1", "no", "--discard", "0"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "index",
        "status",
        "success",
        "duration_s",
        "frames:cam_high",
        "frames:cam_left_wrist",
        "flags",
    ]
    assert table[1].split()[:3] == ["0", "discarded", "yes"] and table[1].split()[4:6] == ["10", "10"]
    assert table[2].split()[:3] == ["1", "complete", "no"]
    assert _cli(["episodes", str(ds_path), "--json"]) == 0
    assert [e["status"] for e in json.loads(capsys.readouterr().out)] == ["discarded", "complete"]

    assert _cli(["inspect", str(ds_path), "1", "--latency", "cam_high=5"]) == 0
    text = capsys.readouterr().out
    assert "episode 1: status=complete" in text and "camera cam_high: 10 frames" in text
    with pytest.raises(RecorderError, match="CAM=MILLISECONDS"):
        _cli(["inspect", str(ds_path), "--latency", "oops"])

    assert (
        _cli(["export", str(ds_path), str(tmp_path / "out"), "--format", "aloha-hdf5", "--include-failed"])
        == 0
    )
    assert "exported 1 episode(s)" in capsys.readouterr().out
    assert (tmp_path / "out" / "episode_0.hdf5").exists()


def test_hdf5_export_takes_recovered_episodes_only_with_recovered(tmp_path, capsys):
    """As the LeRobot export: kept takes by default, recovered ones too with --recovered."""
    ds = Dataset.create(tmp_path / "ds")
    record(ds, n_ticks=20)
    record(ds, n_ticks=20)
    ds.set_status(1, "recovered")
    assert _cli(["export", str(tmp_path / "ds"), str(tmp_path / "kept")]) == 0
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["episode_0.hdf5"]
    assert _cli(["export", str(tmp_path / "ds"), str(tmp_path / "both"), "--recovered"]) == 0
    with h5py.File(tmp_path / "both" / "episode_1.hdf5", "r") as root:
        assert root.attrs["rig_episode"] == 1


def test_recovery_prompt(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    for _ in range(3):
        ep = ds.new_episode()
        ep.add_stream("joints", {"q": ((2,), "f4")})
        ep.start()
        for i in range(10):
            ep.append("joints", i + 1, q=[i, i])
        ep._stop_evt.set()  # stand-in for a crash: the writer ends without stop()
        ep._thread.join()
        from recorder.identity import active_writers

        active_writers.pop(str(ep.path))
    said: list[str] = []
    assert check_incomplete(tmp_path / "ds", out=said.append) == {0: "left", 1: "left", 2: "left"}
    assert "--recover 0" in said[0]
    answers = iter(["x", "r", "d", ""])
    result = check_incomplete(tmp_path / "ds", interactive=True, ask=lambda _: next(answers), out=said.append)
    assert result == {0: "recovered", 1: "discarded", 2: "left"}
    assert [i.status for i in ds.episodes()] == ["recovered", "discarded", "recording"]
    assert ds.info(0).stream_counts == {"joints": 10}
    assert check_incomplete(tmp_path / "missing") == {}

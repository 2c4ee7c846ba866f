"""Proof by the real loader: LeRobot's own LeRobotDataset (lerobot-dataset 0.4.4, torchcodec) loads
`rig export --format lerobot` output, every action and state value and a sample of decoded frames
match the rig dataset, and the lerobot-doctor validator reports no failure.

LeRobot needs a torch the project's environment must not get, so both run in .venv-lerobot/,
which .ci/run builds with tests/lerobot_venv.sh before the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recorder import Dataset
from recorder.export_lerobot import export_lerobot
from recorder.video import psnr
from rig.cli import main as rig_main
from tests.lerobot_data import CAMS, record, rig_frames, scene

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("RIG_LEROBOT_VENV", ROOT / ".venv-lerobot"))
PYTHON = VENV / "bin" / "python"
pytestmark = [
    pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes"),
    pytest.mark.skipif(not PYTHON.exists(), reason="LeRobot's loader venv is absent: bash tests/lerobot_venv.sh"),
]


def venv_run(args: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the venv's own packages only
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def test_lerobot_loads_the_export_and_doctor_finds_no_failure(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    record(ds, 120)
    record(ds, 40, success=False)  # not exported
    record(ds, 110, drop_every=6, task="fold towel")
    out = tmp_path / "lr"
    export_lerobot(ds, out, log=lambda _: None)
    record(ds, 105, task="stack cups")
    export_lerobot(ds, out, log=lambda _: None)  # appended: a second data and video file
    spans = {0: (0, 120), 2: (120, 230), 3: (230, 335)}
    sample = [0, 1, 57, 119, 120, 171, 229, 230, 300, 334]
    r = venv_run([str(PYTHON), str(ROOT / "tests/lerobot/load_with_lerobot.py"), str(out),
                  str(tmp_path / "got.npz"), "--frames", ",".join(map(str, sample))], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "got.npz")
    summary = json.loads(str(got["summary"]))
    assert summary["len"] == 335 and summary["num_episodes"] == 3 and summary["fps"] == 50
    assert summary["episode_lengths"] == [120, 110, 105]
    assert summary["tasks"] == ["transfer cube", "fold towel", "stack cups"]
    assert {"observation.state", "action", "observation.images.cam_high"} <= set(summary["stats_keys"])
    assert got["index"].tolist() == list(range(335))
    for rig_index, (lo, hi) in spans.items():
        j = ds.episode(rig_index).read_stream("joints")
        # every value, as LeRobot hands it to a training loop
        assert np.array_equal(got["observation.state"][lo:hi], j["follower_q"])
        assert np.array_equal(got["action"][lo:hi], j["action"])
        assert got["episode_index"][lo:hi].tolist() == [list(spans).index(rig_index)] * (hi - lo)
        np.testing.assert_allclose(got["timestamp"][lo:hi], np.arange(hi - lo) / 50, atol=1e-5)
    for cam in CAMS:
        frames = got[f"frames/observation.images.{cam}"]
        assert frames.shape == (len(sample), 48, 64, 3)
        for k, i in enumerate(sample):
            rig_index, (lo, _) = next((e, s) for e, s in spans.items() if s[0] <= i < s[1])
            al = ds.episode(rig_index).align(cam, "joints").indices
            want = rig_frames(ds, rig_index, cam, np.array([max(int(al[i - lo]), 0)]))[0]
            assert psnr(frames[k], want) > 30, (cam, i)

    doctor = VENV / "bin" / "lerobot-doctor"
    r = venv_run([str(doctor), "check", str(out), "--json"], tmp_path)
    report = json.loads(r.stdout)
    failures = [(c["name"], m["message"]) for c in report["checks"] for m in c["messages"] if m["severity"] == "FAIL"]
    assert failures == [] and report["overall_severity"] in ("PASS", "WARN"), failures
    assert report["total_episodes"] == 3 and report["total_frames"] == 335


def test_a_dataset_written_by_lerobot_imports(tmp_path):
    """LeRobot's own writer (lerobot-dataset 0.4.4) makes a dataset; `rig import` reads it back."""
    frames = np.stack([scene(i) for i in range(30)])
    np.save(tmp_path / "frames.npy", frames)
    root = tmp_path / "written"
    r = venv_run([str(PYTHON), str(ROOT / "benchmarks/lerobot_writer.py"), "write", str(tmp_path / "frames.npy"),
                  str(root), "1", "2", "30"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    written = json.loads(r.stdout.strip().splitlines()[-1])
    assert written["kept"] == 60
    back = tmp_path / "back"
    assert rig_main(["import", str(root), str(back)]) == 0
    ep = Dataset(back).episode(0)
    j = ep.read_stream("joints")
    # the writer stores state = action = the frame number in all 14 values
    assert np.array_equal(j["follower_q"], np.repeat(np.arange(30, dtype=np.float32)[:, None], 14, 1))
    assert np.array_equal(j["action"], j["follower_q"])
    assert np.allclose(np.diff(j["t_ns"]), 1e9 / 30, atol=1)  # LeRobot's timestamps, no capture times
    for c in range(2):
        got = ep.read_frames(f"cam{c}")
        assert got.shape == (30, 48, 64, 3)
        want = frames[(np.arange(30) + 7 * c) % 30]
        assert psnr(got, want) > 30

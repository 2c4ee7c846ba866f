"""Compaction: a kept take's JPEG frames become video through recorder/video.py, verified frame
for frame before the JPEGs go; every reader (replay, inspect, export, quick-train) reads both forms."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import av
import numpy as np
import pytest
import zarr

from recorder import Dataset, RecorderError
from recorder.compact import (
    CompactOptions,
    compact_dataset,
    compact_episode,
    is_compacted,
    recording_in_progress,
)
from recorder.video import psnr
from rig.cli import main
from rig.fleet.compactor import BackgroundCompactor
from rig.fleet.identity import Identity
from rig.fleet.simulator import EpisodeSpec, write_episode
from rig.fleet.store import DirStore
from rig.fleet.upload import Uploader, UploadOptions
from rig.fleet.validate import validate_episode

pytest_plugins = ["tests.fleet_support"]


pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on this machine (pyproject: -n)

def _stamps(ep, cam):
    return {k: v.copy() for k, v in ep.frame_times(cam).items()}


def test_a_recorded_take_compacts_and_reads_back_in_both_forms(recorded_takes, tmp_path, capsys):
    ds = Dataset(shutil.copytree(recorded_takes, tmp_path / "takes.zarr"))
    ep = ds.episode(0)
    jpeg_frames = ep.read_frames("wrist")
    stamps = _stamps(ep, "wrist")
    assert main(["fleet", "compact", str(ds.path)]) == 0
    out = capsys.readouterr().out
    assert "episode 0 camera wrist:" in out and "PSNR" in out
    ep = ds.episode(0)
    assert is_compacted(ep.path, "wrist"), out
    cam = ep.path / "cameras" / "wrist"
    assert not (cam / "frames").exists() and (cam / "video.mp4").exists()
    # per-frame host times, device stamps and driver indices are the recorded ones
    for k, v in _stamps(ep, "wrist").items():
        np.testing.assert_array_equal(v, stamps[k])
    video = ep.read_frames("wrist")
    assert video.shape == jpeg_frames.shape and ep.num_frames("wrist") == len(stamps["t_ns"])
    assert psnr(video, jpeg_frames) > 28
    np.testing.assert_array_equal(ep.read_frame("wrist", 7), video[7])
    assert len(ep.read_jpeg("wrist", 2, 5)) == 3  # replay and quick-train read JPEG blobs: still there
    meta = zarr.open_group(str(cam), mode="r").attrs["video"]
    assert meta["frames"] == len(video) and meta["bytes"] < meta["jpeg_bytes"]
    # a keyframe at least every second (GOP <= 1 s)
    with av.open(str(cam / "video.mp4")) as c:
        keys = [i for i, p in enumerate(c.demux(c.streams.video[0])) if p.size and p.is_keyframe]
    assert keys[0] == 0 and max(np.diff(keys + [len(video)])) <= 30
    assert main(["inspect", str(ds.path), "0"]) == 0


def test_compaction_waits_while_recording_and_a_kill_leaves_the_jpegs_whole(tmp_path):
    ds = Dataset.create(tmp_path / "d.zarr")
    write_episode(ds, EpisodeSpec(seconds=4, fps=30, width=640, height=480), 1, "pick the cup")
    before = ds.episode(0).read_frames("wrist")
    bg = BackgroundCompactor(ds.path)
    bg.pause()  # a take is being recorded: the compactor starts stopped
    bg.start()
    try:
        time.sleep(1.0)
        with open(f"/proc/{bg.proc.pid}/stat") as f:
            assert f.read().split(") ")[1][0] == "T"  # stopped: no encoding while recording
        bg.resume()
        partial = ds.path / "episodes" / "000000" / "cameras" / "wrist" / "video.mp4.partial"
        end = time.monotonic() + 60
        while not partial.exists() and time.monotonic() < end:
            time.sleep(0.01)
        os.kill(bg.proc.pid, signal.SIGKILL)  # the rig loses power mid-transcode
        bg.wait(10)
    finally:
        bg.stop()
    ep = Dataset(ds.path).episode(0)
    assert not is_compacted(ep.path, "wrist")
    np.testing.assert_array_equal(ep.read_frames("wrist"), before)  # the JPEG form is whole
    rep = compact_dataset(ds.path, log=lambda m: None)  # and a rerun finishes the job
    assert is_compacted(ep.path, "wrist") and ep.num_frames("wrist") == len(before)
    assert not any(r.skipped for r in rep)
    assert not list((ep.path / "cameras" / "wrist").glob("*.partial"))


def test_a_video_that_does_not_decode_back_keeps_the_jpegs(tmp_path):
    ds = Dataset.create(tmp_path / "d.zarr")
    write_episode(ds, EpisodeSpec(seconds=1.5, fps=10, width=64, height=48, noisy=True), 2, "pick the cup")
    rep = compact_episode(ds.episode(0).path, CompactOptions(min_psnr_db=99))
    assert rep.skipped and "JPEGs kept" in rep.skipped[0]
    assert not is_compacted(ds.episode(0).path, "wrist")
    assert not (ds.episode(0).path / "cameras" / "wrist" / "video.mp4").exists()
    w = ds.new_episode(task="live")
    w.add_camera("wrist", fps=10)
    w.start()
    try:
        with pytest.raises(RecorderError, match="only kept"):
            compact_episode(w.path)
    finally:
        w.stop()


def test_compacted_episodes_upload_ingest_and_export(tmp_path):
    ds = Dataset.create(tmp_path / "d.zarr")
    for seed in (1, 2):
        write_episode(ds, EpisodeSpec(seconds=2, fps=15, width=96, height=64), seed, "wipe the table")
    compact_dataset(ds.path, CompactOptions(codec="h264"), log=lambda m: None)
    assert all(ds.episode(i).attrs["compacted"] for i in (0, 1))
    store = DirStore(tmp_path / "store")
    rep = Uploader(store, Identity("frank", "dev-f"), UploadOptions(progress=False), log=lambda m: None
                   ).upload_dataset(ds.path)
    assert rep.episodes_sent == 2
    for prefix in rep.episodes:
        m = json.loads(store.get(prefix + "manifest.json"))
        assert m["episode"]["compacted"] is True
        row = validate_episode(store, prefix + "manifest.json")
        assert row["accepted"], row["reasons"]
        assert row["frames"] == 30 and row["compacted"]
    from recorder.export_hdf5 import AlohaMapping
    from recorder.export_lerobot import LeRobotExportOptions, export_lerobot

    out = export_lerobot(ds, tmp_path / "lr", LeRobotExportOptions(
        fields=AlohaMapping(stream="gripper", qpos="jaw", qvel="", effort="", action="jaw"), fps=15), log=lambda m: None)
    assert out.exported == [0, 1] and out.ok


def test_compaction_waits_while_a_take_of_the_dataset_is_recorded(tmp_path):
    ds = Dataset.create(tmp_path / "d.zarr")
    write_episode(ds, EpisodeSpec(seconds=2, fps=15, width=160, height=120), 1, "pick the cup")
    kept = ds.episode(0).path
    w = ds.new_episode(task="the next take")
    w.add_camera("wrist", fps=10)
    w.start()
    try:
        assert recording_in_progress(ds.path)
        worker = threading.Thread(target=compact_dataset, args=(ds.path,), kwargs={"log": lambda m: None})
        worker.start()
        time.sleep(1.5)
        assert not is_compacted(kept, "wrist")  # nothing is encoded while the take records
    finally:
        w.stop()
    assert not recording_in_progress(ds.path)
    worker.join(120)
    assert is_compacted(kept, "wrist")


HANDHELD_COMPACT = """name = "sim-handheld"
[recording]
compact = "h264"
[gripper]
port = "standin"
rate_hz = 200
record_button = 0
[[cameras]]
name = "wrist"
kind = "synthetic"
width = 320
height = 240
fps = 30
"""


def test_rig_record_compacts_kept_takes_after_they_are_kept_never_during_one(tmp_path):
    """[recording] compact: the take lifecycle starts the compactor after the first kept take,
    stops it (SIGSTOP) for the second take and `rig record` finishes the rest after the rig stops."""
    import re
    import subprocess
    import sys

    from tests.fleet_support import ROOT

    config = tmp_path / "hand-compact.toml"
    config.write_text(HANDHELD_COMPACT)
    ds_path = tmp_path / "hand.zarr"
    out = subprocess.run([sys.executable, "-m", "rig", "record", "--config", str(config), "--episodes", "2",
                          "--seconds", "1.5", "--reset-seconds", "2", "--dataset", str(ds_path)],
                         capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    # The compactor ran between the takes (started after take 0 was kept) and was stopped for take
    # 1: the kernel's count of its CPU time between pause and resume is zero.
    m = re.search(r"compaction: 2 kept episode\(s\) compacted; paused during (\d+) take\(s\), ([\d.]+) s of its "
                  r"CPU inside them", out.stdout)
    assert m, out.stdout + out.stderr
    assert int(m.group(1)) == 1 and float(m.group(2)) == 0.0
    log = (ds_path / ".compact.log").read_text()
    ds = Dataset(ds_path)
    assert [e.status for e in ds.episodes()] == ["complete", "complete"]
    for i in (0, 1):
        assert f"episode {i} camera wrist:" in log, log
        ep = ds.episode(i)
        cam = ep.path / "cameras" / "wrist"
        assert is_compacted(ep.path, "wrist") and ep.attrs.get("compacted")
        assert (cam / "video.mp4").exists() and not (cam / "frames").exists()  # JPEGs gone
        frames = ep.read_frames("wrist")
        n = len(ep.frame_times("wrist")["t_ns"])
        assert n > 30 and frames.shape == (n, 240, 320, 3)
        assert frames.std() > 1  # the test pattern, not blank frames


def test_the_recording_compact_setting_is_checked():
    from rig.config import ConfigError, parse_config

    assert parse_config({"gripper": {"port": "standin"}}, "x.toml").recording.compact == "off"
    with pytest.raises(ConfigError, match=r"recording\.compact: 'x265' is not one of off, auto, av1, h264"):
        parse_config({"gripper": {"port": "standin"}, "recording": {"compact": "x265"}}, "x.toml")

"""`rig export --format lerobot`: the LeRobot v3.0 files read back with pyarrow and PyAV and
compared with the rig dataset; append; bad input; `rig import` round trips (LeRobot and ALOHA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recorder import Dataset
from recorder.align import align_frames_to_ticks
from recorder.export_hdf5 import export_dataset as export_aloha
from recorder.export_lerobot import LeRobotExportOptions, export_lerobot
from recorder.import_aloha import import_aloha
from recorder.video import psnr, read_frames
from rig.cli import main as rig_main
from rig.train.data import load_episode
from tests.lerobot_data import CAMS, LATENCY, record, rig_frames, zero_tick_episode

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")
PSNR_DB = 30.0  # AV1 at crf 30 on these frames measures ~40 dB; JPEG then AV1 (import) ~35 dB


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def data_rows(out: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(sorted((out / "data").glob("*/*.parquet")))
    return {name: np.asarray(t.column(name).to_pylist()) for name in t.column_names}


def no_partials(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".partial")]


@pytest.fixture
def ds(tmp_path) -> Dataset:
    d = Dataset.create(tmp_path / "ds")
    record(d, 60)
    record(d, 40, success=False)  # failed: left out by default
    record(d, 50, drop_every=7, task="fold towel")
    record(d, 30, status="discarded")
    record(d, 20, status="recovered")  # only with include_recovered
    return d


def test_export_matches_the_rig_dataset(ds, tmp_path):
    out = tmp_path / "lr"
    report = export_lerobot(ds, out, log=lambda _: None)
    assert report.exported == [0, 2] and report.ok and report.frames == 110
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 50 and info["robot_type"] == "test-pair"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 110, 2)
    assert info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    names = ["follower.waist", "follower.shoulder", "follower.elbow", "follower.gripper"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [4], "names": names}
    assert feats["action"]["names"] == names and "observation.velocity" in feats and "observation.effort" in feats
    video = feats["observation.images.cam_high"]
    assert video["dtype"] == "video" and video["shape"] == [48, 64, 3]
    assert video["info"]["video.codec"] in ("av1", "h264") and video["info"]["video.pix_fmt"] == "yuv420p"

    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["transfer cube", "fold towel"]
    assert tasks.column("task_index").to_pylist() == [0, 1]

    eps = table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert [e["episode_index"] for e in eps] == [0, 1] and [e["length"] for e in eps] == [60, 50]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [(0, 60), (60, 110)]
    assert [e["tasks"] for e in eps] == [["transfer cube"], ["fold towel"]]
    assert [e["rig/episode"] for e in eps] == [0, 2] and all(e["rig/success"] for e in eps)
    assert eps[1]["rig/cam_high/index_gaps"] == 3  # every 7th of 25 frames dropped by the "driver"
    assert "dropped:" not in " ".join(eps[0]["rig/flags"])
    assert eps[0]["rig/missed_ticks"] == 4  # ticks 5, 22, 39, 56
    for e in eps:
        for cam in CAMS:
            key = f"videos/observation.images.{cam}"
            assert (e[f"{key}/chunk_index"], e[f"{key}/file_index"]) == (0, 0)  # both episodes in one file
    assert eps[1]["videos/observation.images.cam_high/from_timestamp"] == pytest.approx(60 / 50)
    assert eps[1]["videos/observation.images.cam_high/to_timestamp"] == pytest.approx(110 / 50)

    rows = data_rows(out)
    assert rows["index"].tolist() == list(range(110))
    assert rows["frame_index"].tolist() == list(range(60)) + list(range(50))
    assert rows["task_index"].tolist() == [0] * 60 + [1] * 50
    np.testing.assert_allclose(rows["timestamp"][:60], np.arange(60) / 50, atol=1e-6)
    for rig_index, lo, hi in ((0, 0, 60), (2, 60, 110)):
        ep = ds.episode(rig_index)
        j = ep.read_stream("joints")
        assert np.array_equal(rows["observation.state"][lo:hi].astype(np.float32), j["follower_q"])
        assert np.array_equal(rows["action"][lo:hi].astype(np.float32), j["action"])
        assert np.array_equal(rows["observation.velocity"][lo:hi].astype(np.float32), j["follower_dq"])
        assert np.array_equal(rows["observation.effort"][lo:hi].astype(np.float32), j["follower_current"])
        assert np.array_equal(rows["rig.leader_q"][lo:hi].astype(np.float32), j["leader_q"])
        assert rows["rig.t_ns"][lo:hi].tolist() == j["t_ns"].tolist()
        assert rows["rig.tick"][lo:hi].tolist() == j["tick"].tolist()
        for cam in CAMS:
            times = ep.frame_times(cam)
            al = align_frames_to_ticks(j["t_ns"], times["t_ns"], LATENCY.get(cam, 0))
            assert rows[f"rig.{cam}.row"][lo:hi].tolist() == al.indices.tolist()
            assert rows[f"rig.{cam}.skew_ns"][lo:hi].tolist() == al.skew_ns.tolist()
            has = al.indices >= 0
            assert rows[f"rig.{cam}.t_ns"][lo:hi][has].tolist() == times["t_ns"][al.indices[has]].tolist()
            assert rows[f"rig.{cam}.index"][lo:hi][has].tolist() == times["index"][al.indices[has]].tolist()
            # the video holds the aligned frame of every row
            got = read_frames(out / f"videos/observation.images.{cam}/chunk-000/file-000.mp4", lo, hi)
            want = rig_frames(ds, rig_index, cam, np.where(has, al.indices, 0))
            assert psnr(got, want) > PSNR_DB

    stats = json.loads((out / "meta/stats.json").read_text())
    state = rows["observation.state"].astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], rows["action"].min(0), rtol=1e-6)
    assert stats["action"]["count"] == [110]
    assert np.asarray(stats["observation.images.cam_high"]["mean"]).shape == (3, 1, 1)
    assert no_partials(out)


def test_a_lower_fps_takes_the_latest_tick_at_or_before_each_row(ds, tmp_path):
    out = tmp_path / "lr25"
    report = export_lerobot(ds, out, LeRobotExportOptions(fps=25), log=lambda _: None)
    assert report.frames == 30 + 25
    assert json.loads((out / "meta/info.json").read_text())["fps"] == 25
    rows = data_rows(out)
    j = ds.episode(0).read_stream("joints")
    assert rows["rig.t_ns"][:30].tolist() == j["t_ns"][::2].tolist()  # ticks every 20 ms, rows every 40 ms
    assert rows["rig.row_t_ns"][:30].tolist() == (j["t_ns"][0] + np.arange(30) * 40_000_000).tolist()
    assert np.array_equal(rows["observation.state"][:30].astype(np.float32), j["follower_q"][::2])
    assert rows["rig.tick"][:30].tolist() == list(range(0, 60, 2))


def test_append_adds_only_new_episodes(ds, tmp_path):
    out = tmp_path / "lr"
    export_lerobot(ds, out, log=lambda _: None)
    first = {p: p.read_bytes() for p in (out / "data").rglob("*.parquet")}
    record(ds, 44, task="stack cups")
    report = export_lerobot(ds, out, LeRobotExportOptions(include_recovered=True), log=lambda _: None)
    assert report.already == [0, 2] and report.exported == [4, 5]
    assert all(p.read_bytes() == b for p, b in first.items())  # earlier files untouched
    info = json.loads((out / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, 174, 3)
    eps = table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert [e["rig/episode"] for e in eps] == [0, 2, 4, 5]
    assert [e["rig/status"] for e in eps] == ["complete", "complete", "recovered", "complete"]
    assert [e["data/file_index"] for e in eps] == [0, 0, 1, 1]
    assert eps[3]["videos/observation.images.cam_wrist/file_index"] == 1
    assert eps[3]["videos/observation.images.cam_wrist/from_timestamp"] == pytest.approx(20 / 50)
    rows = data_rows(out)
    assert rows["index"].tolist() == list(range(174))
    assert rows["episode_index"].tolist() == [0] * 60 + [1] * 50 + [2] * 20 + [3] * 44
    stats = json.loads((out / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["observation.state"]["mean"], rows["observation.state"].mean(0), atol=1e-6)
    assert export_lerobot(ds, out, log=lambda _: None).exported == []  # nothing new


def test_a_run_cut_off_before_its_commit_is_redone(ds, tmp_path):
    """kill -9 after the new files and the episodes table but before info.json: the next run
    removes what no committed episode points to and exports the take again."""
    out = tmp_path / "lr"
    export_lerobot(ds, out, log=lambda _: None)
    committed = (out / "meta/info.json").read_bytes()
    record(ds, 44)
    export_lerobot(ds, out, log=lambda _: None)
    (out / "meta/info.json").write_bytes(committed)  # the cut-off run never wrote it
    (out / "data/chunk-000/file-002.parquet.partial").write_bytes(b"half a file")
    report = export_lerobot(ds, out, log=lambda _: None)
    assert report.already == [0, 2] and report.exported == [5]
    assert no_partials(out)
    info = json.loads((out / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (3, 154)
    eps = table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert [e["rig/episode"] for e in eps] == [0, 2, 5]
    assert data_rows(out)["index"].tolist() == list(range(154))
    files = sorted(str(p.relative_to(out)) for p in (out / "data").rglob("*.parquet"))
    assert files == ["data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet"]


def test_bad_episodes_are_reported_and_the_rest_exported(ds, tmp_path, capsys):
    bad = zero_tick_episode(ds)
    damaged = record(ds, 50)
    chunk = ds.path / f"episodes/{damaged:06d}/cameras/cam_high/frames/c/0"
    chunk.write_bytes(chunk.read_bytes()[:5000])  # cut short, as a crash or a bad disk leaves it
    out = tmp_path / "lr"
    code = rig_main(["export", str(ds.path), str(out), "--format", "lerobot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert any(f"episode {bad} has zero ticks" in line for line in err)
    assert any(f"episode {damaged} camera 'cam_high'" in line and "damaged" in line for line in err)
    assert all(line.startswith("rig: ") and "Traceback" not in line for line in err)
    eps = table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert [e["rig/episode"] for e in eps] == [0, 2]  # the others went out
    assert no_partials(out)
    # once the bad take is discarded, the same command completes
    ds.discard(damaged)
    ds.discard(bad)
    assert rig_main(["export", str(ds.path), str(out), "--format", "lerobot"]) == 0


def test_out_that_holds_something_else_is_refused(ds, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert rig_main(["export", str(ds.path), str(other), "--format", "lerobot"]) == 2
    assert "holds something else" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert rig_main(["export", str(ds.path), str(other / "notes.txt"), "--format", "lerobot"]) == 2
    assert "is a file" in capsys.readouterr().err
    # a rig dataset is something else too
    assert rig_main(["export", str(ds.path), str(ds.path), "--format", "lerobot"]) == 2


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"needs root to mount a small tmpfs (full/read-only disk): {r.stderr.decode().strip()}")


def test_full_disk_keeps_out_as_it_was_and_a_rerun_completes(ds, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "2m")
    try:
        out = disk / "lr"
        assert export_lerobot(ds, out, log=lambda _: None).exported == [0, 2]
        before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        record(ds, 60)
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        os.ftruncate(fd, os.fstat(fd).st_size - 16 * 1024)  # leave 16 kB
        os.close(fd)
        r = subprocess.run([sys.executable, "-m", "rig", "export", str(ds.path), str(out), "--format", "lerobot"],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert "disk full while exporting episode 5" in r.stderr and "Traceback" not in r.stderr
        after = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before  # nothing half-written, no .partial
        filler.unlink()
        r = subprocess.run([sys.executable, "-m", "rig", "export", str(ds.path), str(out), "--format", "lerobot"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert [e["rig/episode"] for e in table(out / "meta/episodes/chunk-000/file-000.parquet")] == [0, 2, 5]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_unwritable_out_is_one_line(ds, tmp_path, capsys):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert rig_main(["export", str(ds.path), str(disk / "lr"), "--format", "lerobot"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rig: cannot write to") and "\n" not in err
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_lerobot_round_trip_keeps_every_value(ds, tmp_path):
    out = tmp_path / "lr"
    export_lerobot(ds, out, log=lambda _: None)
    back = tmp_path / "back"
    assert rig_main(["import", str(out), str(back)]) == 0
    b = Dataset(back)
    assert b.indices() == [0, 1]
    for src, dst in ((0, 0), (2, 1)):
        ea, eb = ds.episode(src), b.episode(dst)
        sa, sb = ea.read_stream("joints"), eb.read_stream("joints")
        assert sorted(sa) == sorted(sb)
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
        assert eb.info.task == ea.info.task and eb.info.success == ea.info.success
        assert eb.attrs["imported_from"]["rig_episode"] == src
        assert eb.camera_latency_ns("cam_high") == LATENCY["cam_high"]
        for cam in CAMS:
            ta, tb = ea.frame_times(cam), eb.frame_times(cam)
            n = eb.num_frames(cam)
            # every frame a tick showed comes back, with its stamps and driver index
            shown = np.unique(ea.align(cam, "joints").indices)
            shown = shown[shown >= 0]
            assert n == shown.size
            for k in ("t_ns", "t_device_ns", "index"):
                assert tb[k].tolist() == ta[k][shown].tolist()
            assert psnr(eb.read_frames(cam), ea.read_frames(cam)[shown]) > PSNR_DB
    # quick-train's loader reads it as it reads recorded takes
    loaded = load_episode(b, 1)
    assert loaded.rate_hz == 50 and loaded.q.shape == (50, 4) and set(loaded.frames) == set(CAMS)
    assert loaded.joints.names == ("follower_waist", "follower_shoulder", "follower_elbow", "follower_gripper")


def test_aloha_folder_imports(ds, tmp_path):
    aloha = tmp_path / "aloha"
    export_aloha(ds, aloha, include_recovered=True)  # complete and recovered, successful takes: rig episodes 0, 2, 4
    back = tmp_path / "back"
    report = import_aloha(aloha, back, log=lambda _: None)
    assert report.episodes == [0, 1, 2] and report.ok
    b = Dataset(back)
    for src, dst in ((0, 0), (2, 1), (4, 2)):
        ja, jb = ds.episode(src).read_stream("joints"), b.episode(dst).read_stream("joints")
        for k in ("follower_q", "action", "follower_dq", "follower_current"):
            assert np.array_equal(ja[k], jb[k]), k
        assert np.diff(jb["t_ns"]).tolist() == [20 * 10**6] * (len(jb["t_ns"]) - 1)  # ALOHA's 50 Hz
        assert b.info(dst).task == ds.info(src).task
        eb = b.episode(dst)
        assert eb.num_frames("cam_high") == len(ja["t_ns"])  # one frame per tick, as ALOHA stores them
        al = ds.episode(src).align("cam_high", "joints").indices
        want = rig_frames(ds, src, "cam_high", np.where(al < 0, 0, al))
        assert psnr(eb.read_frames("cam_high"), want) > PSNR_DB
    assert load_episode(b, 2).q.shape == (20, 4)  # quick-train reads it


def test_import_refuses_what_it_cannot_read(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    assert rig_main(["import", str(tmp_path / "junk"), str(tmp_path / "ds")]) == 2
    assert "neither a LeRobot dataset" in capsys.readouterr().err
    old = tmp_path / "v21"
    (old / "meta").mkdir(parents=True)
    (old / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 30, "features": {}}))
    assert rig_main(["import", str(old), str(tmp_path / "ds")]) == 2
    assert "v2.1" in capsys.readouterr().err

"""Crash safety: kill -9 mid-episode, and a disk that fills up while recording."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr.storage._local as zarr_local

from drivers.cameras.frame import Frame
from drivers.errors import RigError
from recorder import Dataset, DiskFullError, WriterOptions

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")

RECORDER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from drivers.cameras.frame import Frame
    from recorder import Dataset, WriterOptions

    ds = Dataset.create(sys.argv[1])
    img = np.zeros((48, 64, 3), np.uint8)

    def take(seconds, finish):
        ep = ds.new_episode(task="kill test", options=WriterOptions(flush_interval_s=0.5))
        ep.add_stream("joints", {"q": ((14,), "f4"), "tick": ((), "i8")}, rate_hz=100)
        ep.add_camera("high", fps=30)
        ep.start()
        print("START", ep.index, time.monotonic_ns(), flush=True)
        t_end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < t_end:
            ep.append("joints", time.monotonic_ns(), q=np.full(14, i, np.float32), tick=i)
            if i % 3 == 0:
                img[:] = i % 256
                ep.add_frame(Frame("high", i // 3, time.monotonic_ns(), img.copy()))
            i += 1
            time.sleep(0.01)
        if finish:
            ep.stop(success=True)
            print("DONE", ep.index, i, flush=True)

    take(0.5, True)
    take(0.5, True)
    take(120, False)
    """
)


def test_kill_9_mid_episode_keeps_earlier_episodes_and_recovers_the_partial(tmp_path):
    path = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        done, start_ns = {}, None
        deadline = time.monotonic() + 60
        while start_ns is None and time.monotonic() < deadline:
            words = proc.stdout.readline().split()
            if words and words[0] == "DONE":
                done[int(words[1])] = int(words[2])
            elif words[:2] == ["START", "2"]:
                start_ns = int(words[2])
        assert start_ns is not None, "recorder subprocess never started episode 2"
        time.sleep(2.3)
        kill_ns = time.monotonic_ns()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    elapsed_s = (kill_ns - start_ns) / 1e9

    ds = Dataset(path)
    for i in (0, 1):  # earlier episodes: complete and whole
        info = ds.info(i)
        assert info.status == "complete" and info.success is True
        assert info.stream_counts["joints"] == done[i]
        np.testing.assert_array_equal(ds.episode(i).read_stream("joints")["tick"], np.arange(done[i]))

    incomplete = ds.find_incomplete()
    assert [i.index for i in incomplete] == [2]
    info = ds.recover(2)
    assert info.status == "recovered"
    ep = ds.episode(2)
    s = ep.read_stream("joints")
    n = len(s["t_ns"])
    kept_s = (s["t_ns"][-1] - start_ns) / 1e9
    assert kept_s >= elapsed_s - 1.0, f"kept {kept_s:.2f}s of {elapsed_s:.2f}s"
    np.testing.assert_array_equal(s["tick"], np.arange(n))  # every kept row is whole
    np.testing.assert_array_equal(s["q"][:, 0], np.arange(n))
    assert np.all(s["t_ns"] > 0)
    nf = ep.num_frames("high")
    assert nf >= 30 * (elapsed_s - 1.0) * 0.8
    assert ep.frame_times("high")["t_ns"][-1] >= start_ns + (elapsed_s - 1.0) * 1e9
    last = ep.read_frame("high", nf - 1)  # the last kept frame decodes
    assert abs(int(last.mean()) - (3 * int(ep.frame_times("high")["index"][-1])) % 256) <= 2
    assert ds.find_incomplete() == []
    assert not list(path.rglob("*.partial"))


class _DiskFills:
    """Stand-in for a full disk: zarr's file writes raise ENOSPC once armed."""

    def __init__(self, monkeypatch):
        self.armed = False
        real_put = zarr_local._put

        def put(path, value, exclusive=False):
            if self.armed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real_put(path, value, exclusive)

        monkeypatch.setattr(zarr_local, "_put", put)


def _record_until(ep, seconds, start_tick=0):
    i = start_tick
    t_end = time.monotonic() + seconds
    results = []
    while time.monotonic() < t_end:
        results.append(ep.append("joints", time.monotonic_ns(), q=np.full(4, i, np.float32)))
        i += 1
        time.sleep(0.005)
    return i, results


def test_disk_full_stops_recording_reports_and_keeps_flushed_data(tmp_path, monkeypatch):
    disk = _DiskFills(monkeypatch)
    ds = Dataset.create(tmp_path / "ds")
    first = ds.new_episode()
    first.add_stream("joints", {"q": ((4,), "f4")}, rate_hz=200)
    first.start()
    _record_until(first, 0.2)
    first.stop()

    errors = []
    ep = ds.new_episode(options=WriterOptions(flush_interval_s=0.2), on_error=errors.append)
    ep.add_stream("joints", {"q": ((4,), "f4")}, rate_hz=200)
    ep.start()
    n_before, _ = _record_until(ep, 0.6)
    time.sleep(0.3)  # let a partial flush land everything appended so far
    disk.armed = True
    _, results = _record_until(ep, 0.5, n_before)  # the caller's thread keeps running, never raises
    assert ep.error is not None and not ep.recording
    assert results[-1] is False
    assert isinstance(ep.error, DiskFullError) and isinstance(ep.error, RigError)
    assert "disk full" in str(ep.error) and "Free space" in str(ep.error)
    assert errors == [ep.error]
    with pytest.raises(DiskFullError):
        ep.stop()  # the disk is still full: the episode stays 'recording' for later recovery

    disk.armed = False
    assert ds.info(0).status == "complete"
    assert [i.index for i in ds.find_incomplete()] == [1]
    info = ds.recover(1)
    q = ds.episode(1).read_stream("joints")["q"][:, 0]
    assert info.stream_counts["joints"] >= n_before
    np.testing.assert_array_equal(q, np.arange(len(q)))


def test_real_full_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the injected ENOSPC test covers the logic")
    try:
        ds = Dataset.create(mnt / "ds")
        ep = ds.new_episode(options=WriterOptions(flush_interval_s=0.2))
        ep.add_camera("noise", fps=100)
        ep.start()
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)  # ~100 kB per JPEG: fills 2 MB fast
        t_end = time.monotonic() + 20
        k = 0
        while ep.error is None and time.monotonic() < t_end:
            ep.add_frame(Frame("noise", k, time.monotonic_ns(), np.roll(noise, k, axis=1)))
            k += 1
            time.sleep(0.01)
        assert isinstance(ep.error, DiskFullError), "the 2 MB tmpfs never filled"
        with pytest.raises(DiskFullError, match="disk full"):
            ep.stop()
        # What was flushed before the disk filled can still be read.
        e = Dataset(mnt / "ds").episode(0)
        n = min(e.num_frames("noise"), len(e.frame_times("noise")["t_ns"]))
        assert n > 0
        assert e.read_frame("noise", 0).shape == (240, 320, 3)
        ds.close()  # the writer lock's file is open until then: umount would be refused (EBUSY)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_the_final_metadata_lands_in_one_write(tmp_path, monkeypatch):
    """zarr's ``attrs.update`` writes zarr.json once per key: a reader (or a crash) between those
    writes saw ``status: complete`` without counts, duration or note. One write, status included."""
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode(task="one write")
    ep.add_stream("joints", {"q": ((2,), "f4")}, rate_hz=100)
    ep.start()
    for i in range(5):
        ep.append("joints", time.monotonic_ns(), q=np.full(2, i, np.float32))
    versions: list[dict] = []
    real_put = zarr_local._put

    def spy(path, value, exclusive=False):
        if path.name == "zarr.json" and path.parent == ep.path:
            import json

            versions.append(json.loads(bytes(value.as_buffer_like()))["attributes"])
        return real_put(path, value, exclusive=exclusive)

    monkeypatch.setattr(zarr_local, "_put", spy)
    ep.stop(success=True, note="kept")
    assert len(versions) == 1, [v.get("status") for v in versions]
    final = versions[0]
    assert final["status"] == "complete" and final["note"] == "kept" and final["counts"]["streams"]["joints"] == 5

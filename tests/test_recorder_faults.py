"""One writer per dataset, and filesystem faults outside the recording loop as one line, exit 2.

Full and read-only disks are real: a small tmpfs (and its read-only remount) where this machine
allows `mount` (root in a container usually does), else those tests skip with the reason.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zarr.storage._local as zarr_local

from recorder import (
    DamagedEpisodeError,
    Dataset,
    DatasetLockedError,
    DiskFullError,
    ReadOnlyDatasetError,
    RecorderError,
)
from rig.cli import main
from tests.test_recorder_export import record

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")


def run(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def one_line(err: str) -> str:
    lines = [s for s in err.splitlines() if s]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def small_fs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size; ro(path) remounts it read-only. Unmounted after."""
    mounted: list[Path] = []

    def mount(size: str = "2m") -> Path:
        mnt = tmp_path / f"fs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root or "
                        f"CAP_SYS_ADMIN")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount(mnt: Path, opts: str) -> None:
    r = subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot remount {mnt} {opts}: {r.stderr.strip()}")


def fill(mnt: Path) -> None:
    """Write until the filesystem is full."""
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


# ---- the dataset lock --------------------------------------------------------------------------

def _make_episodes(path: str, n: int) -> list[int]:
    """A recorder process that takes the lock for each new episode and gives it back after."""
    ds = Dataset(path)
    got: list[int] = []
    while len(got) < n:
        try:
            got.append(ds.new_episode(task=f"pid {os.getpid()}").index)
        except DatasetLockedError:
            time.sleep(0.001)
            continue
        ds.close()
    return got


def test_new_episode_is_atomic_across_processes(tmp_path):
    path = tmp_path / "ds"
    Dataset.create(path)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with zarr's event-loop thread
    with ctx.Pool(4) as pool:
        results = pool.starmap(_make_episodes, [(str(path), 25)] * 4)
    indices = sorted(i for r in results for i in r)
    assert indices == list(range(100)), "an index went to more than one writer"
    ds = Dataset(path)
    assert ds.indices() == list(range(100))
    owners = {ds.info(i).task for i in range(100)}
    assert len(owners) == 4  # every process really wrote
    assert not list((path / "episodes").glob(".new-*"))


HOLDER = textwrap.dedent(
    """
    import sys, time
    from recorder import Dataset
    ep = Dataset(sys.argv[1]).new_episode(task="first recorder")
    print("READY", ep.index, flush=True)
    time.sleep(120)
    """
)


def test_a_second_recorder_is_told_who_holds_the_lock_and_a_dead_ones_lock_is_taken_over(tmp_path):
    path = tmp_path / "ds"
    Dataset.create(path)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["READY", "0"]
        with pytest.raises(DatasetLockedError) as exc:
            Dataset(path).new_episode()
        msg = str(exc.value)
        assert f"is being recorded by pid {proc.pid} on host {socket.gethostname()} since " in msg
        assert "\n" not in msg
        assert Dataset(path).indices() == [0]  # the refused recorder made nothing
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ds = Dataset(path)
    ep = ds.new_episode()  # the kernel dropped the dead process's lock: taken over
    assert ep.index == 1
    assert ds.lock_note and f"pid {proc.pid}" in ds.lock_note and "that process is gone" in ds.lock_note
    assert [i.index for i in ds.find_incomplete()] == [0]  # the dead recorder's take, to recover
    ds.close()


# ---- filesystem faults -------------------------------------------------------------------------

def test_corrupt_zarr_json_at_root_episode_and_array_level(tmp_path, capsys):
    path = tmp_path / "ds"
    ds = Dataset.create(path)
    for _ in range(3):
        record(ds, n_ticks=20)

    (path / "episodes/000002/streams/joints/follower_q/zarr.json").write_text('{"zarr_format": 3, "node')
    with pytest.raises(DamagedEpisodeError, match="episode 2: streams/joints/follower_q/zarr.json: metadata"):
        ds.episode(2).read_stream("joints")
    (path / "episodes/000001/zarr.json").write_bytes(b"\xff\xfe not json")
    rc, out, err = run(capsys, "episodes", path)
    assert rc == 2 and [r.split()[0] for r in out.splitlines()[1:]] == ["0", "2"]
    assert "rig: damaged: episode 1: zarr.json: metadata unreadable" in err
    assert "rig: damaged: episode 2: streams/joints/follower_q/zarr.json: metadata unreadable" in err
    rc, out, _ = run(capsys, "verify", path)
    assert rc == 2 and "episode 1: zarr.json" in out and "episode 2: streams/joints/follower_q/zarr.json" in out

    (path / "zarr.json").write_text("{ truncated")
    for cmd in ("episodes", "inspect", "verify", "export"):
        argv = [cmd, path] + ([tmp_path / "out"] if cmd == "export" else [])
        rc, _, err = run(capsys, *argv)
        assert rc == 2
        assert one_line(err) == (f"rig: {path}/zarr.json is not valid zarr metadata (JSONDecodeError); the "
                                 f"dataset's root is damaged (its episodes are intact): restore that file from a "
                                 f"copy, or write it again with `rig verify {path} --repair-root`")
    rc, out, _ = run(capsys, "verify", path, "--repair-root")
    assert rc == 2 and out.startswith(f"rewrote {path}/zarr.json") and "3 episode(s): 1 verified, 2 damaged" in out
    assert Dataset(path).info(0).status == "complete"


def test_a_file_where_the_dataset_should_be(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    for argv in (["episodes", f], ["record", "--dataset", f, "--seconds", "1"]):
        rc, _, err = run(capsys, *argv)
        assert rc == 2
        assert one_line(err) == f"rig: {f} is a file, not a dataset directory; pass a directory for the dataset"
    assert f.read_text() == "hello"


def test_recover_refuses_a_complete_episode_and_a_link_out_of_the_dataset(tmp_path, capsys):
    path = tmp_path / "ds"
    ds = Dataset.create(path)
    record(ds, n_ticks=20)
    rc, _, err = run(capsys, "episodes", path, "--recover", 0)
    assert rc == 2 and "episode 0 is complete, not cut off" in one_line(err)
    assert ds.info(0).status == "complete"

    outside = tmp_path / "elsewhere"
    other = Dataset.create(tmp_path / "other")
    record(other, n_ticks=20)
    other.episode(0).path.rename(outside)
    (path / "episodes/000001").symlink_to(outside)
    before = (outside / "zarr.json").read_bytes()
    for argv in (["--recover", 1], ["--discard", 1], ["--success", 1, "no"]):
        rc, _, err = run(capsys, "episodes", path, *argv)
        assert rc == 2 and f"is a link to {outside}, outside the dataset; refusing" in one_line(err)
    assert (outside / "zarr.json").read_bytes() == before


def test_read_only_dataset_reads_and_says_it_is_read_only(small_fs, capsys):
    mnt = small_fs("4m")
    ds = Dataset.create(mnt / "ds")
    record(ds, n_ticks=20)
    crashed = ds.new_episode()
    crashed.add_stream("joints", {"q": ((2,), "f4")})
    crashed.start()
    crashed.append("joints", 5, q=[1, 2])
    crashed._stop_evt.set()  # stand-in for a crash: the writer ends without stop()
    crashed._thread.join()
    from recorder.identity import active_writers

    active_writers.pop(str(crashed.path))
    ds.close()
    remount(mnt, "ro")
    rc, out, _ = run(capsys, "episodes", mnt / "ds")
    assert rc == 0 and out.splitlines()[1].split()[:2] == ["0", "complete"]
    rc, _, _ = run(capsys, "verify", mnt / "ds")
    assert rc == 0
    for argv in (["--discard", 0], ["--success", 0, "no"], ["--recover", 1], ["--keep", 0]):
        rc, _, err = run(capsys, "episodes", mnt / "ds", *argv)
        assert rc == 2 and "is on a read-only filesystem. Reading works" in one_line(err), argv
    with pytest.raises(ReadOnlyDatasetError, match="read-only filesystem"):
        Dataset(mnt / "ds").new_episode()
    assert "is another recorder" not in err


def test_full_disk_at_start_leaves_no_phantom_episode(small_fs, capsys):
    mnt = small_fs("2m")
    ds = Dataset.create(mnt / "ds")
    record(ds, n_ticks=20)
    ds.close()
    fill(mnt)
    ds = Dataset(mnt / "ds")
    with pytest.raises(DiskFullError) as exc:
        ep = ds.new_episode()
        ep.add_stream("joints", {"q": ((14,), "f4")})
        ep.add_camera("high")
        ep.start()
    assert "disk full while" in str(exc.value) and "is another recorder" not in str(exc.value)
    assert ds.indices() == [0] and ds.find_incomplete() == []
    assert sorted(p.name for p in (mnt / "ds/episodes").iterdir() if p.is_dir()) == ["000000"]
    rc, out, _ = run(capsys, "episodes", mnt / "ds")
    assert rc == 0 and len(out.splitlines()) == 2


def test_disk_filling_while_declaring_streams_removes_the_empty_episode(tmp_path, monkeypatch):
    """The same through the writer's own steps (zarr's writes fail once new_episode has run)."""
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode()
    real_put = zarr_local._put

    def put(path, value, exclusive=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(zarr_local, "_put", put)
    with pytest.raises(DiskFullError, match="disk full while declaring stream 'joints' of episode 0"):
        ep.add_stream("joints", {"q": ((2,), "f4")})
    monkeypatch.setattr(zarr_local, "_put", real_put)
    assert ds.indices() == [] and not (tmp_path / "ds/episodes/000000").exists()
    with pytest.raises(RecorderError, match="abandoned"):
        ep.start()
    assert ds.new_episode().index == 0


# ---- exports that finish -----------------------------------------------------------------------

def test_export_skips_an_empty_take_goes_on_and_a_rerun_keeps_what_is_done(tmp_path, capsys):
    path = tmp_path / "ds"
    ds = Dataset.create(path)
    record(ds, n_ticks=20)
    empty = ds.new_episode()  # a take cut off in its first half-second: recovered with 0 rows
    empty.add_stream("joints", {"follower_q": ((14,), "f4"), "action": ((14,), "f4")})
    empty.start()
    empty.stop(status="recovered")
    record(ds, n_ticks=30)
    out = tmp_path / "out"
    out.mkdir()
    (out / "episode_0.hdf5.partial").write_bytes(b"left by an older rig")
    # --recovered: the recovered (empty) take is asked for, so the export meets it and skips it
    rc, stdout, err = run(capsys, "export", path, out, "--recovered")
    assert rc == 2
    assert one_line(err) == ("rig: skipped episode 1 has no rows in stream 'joints' (a take cut off at its start); "
                             "nothing to export")
    assert "exported 2 episode(s)" in stdout and "skipped 1" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["episode_0.hdf5", "episode_1.hdf5"]
    mtime = (out / "episode_0.hdf5").stat().st_mtime_ns
    (out / "episode_1.hdf5").unlink()
    rc, stdout, _ = run(capsys, "export", path, out, "--recovered")
    assert rc == 2 and "1 already there from an earlier run" in stdout
    assert (out / "episode_0.hdf5").stat().st_mtime_ns == mtime and (out / "episode_1.hdf5").exists()


RACE = textwrap.dedent(
    """
    import sys
    import recorder.export_hdf5 as e
    e.check_free_space = lambda *a: None  # as if another process filled the disk after the check
    from rig.cli import main
    sys.exit(main(["export", sys.argv[1], sys.argv[2]]))
    """
)


def test_export_to_a_full_disk_is_one_line_leaves_nothing_partial_and_a_rerun_completes(
    tmp_path, small_fs, capsys
):
    path = tmp_path / "ds"
    ds = Dataset.create(path)
    for _ in range(4):
        record(ds, n_ticks=100)  # ~0.5 MB of HDF5 each
    out = small_fs("2600k")
    rc, stdout, err = run(capsys, "export", path, out)
    assert rc == 2
    line = one_line(err)
    assert line.startswith("rig: disk full: episode ") and "nothing partial was left" in line
    done = sorted(p.name for p in out.iterdir())
    assert done and len(done) < 4 and all(n.endswith(".hdf5") for n in done)

    # Past the free-space check (the disk fills during the write): still one line, no segfault.
    for p in out.iterdir():
        p.unlink()
    st = os.statvfs(out)
    (out / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 300_000))  # 0.3 MB left: half a file
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", RACE, str(path), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # not -11 (SIGSEGV)
    assert "Traceback" not in r.stderr and one_line(r.stderr).startswith("rig: disk full while writing episode_0")
    assert sorted(p.name for p in out.iterdir()) == ["filler"]

    (out / "filler").unlink()
    remount(out, "size=8m")
    rc, stdout, err = run(capsys, "export", path, out)
    assert rc == 0 and err == ""
    assert sorted(p.name for p in out.iterdir()) == [f"episode_{i}.hdf5" for i in range(4)]
    import h5py

    for i, rig_index in enumerate(range(4)):
        with h5py.File(out / f"episode_{i}.hdf5") as f:
            assert f.attrs["rig_episode"] == rig_index and f["/observations/qpos"].shape == (100, 14)


DEV_FULL = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import recorder.export_hdf5 as e
    out = Path(sys.argv[2])
    # The temp name leads to /dev/full (the kernel's always-full device: every write is ENOSPC).
    e.clean_leftovers = lambda d: os.symlink("/dev/full", out / "episode_0.hdf5.rig-tmp")
    from rig.cli import main
    sys.exit(main(["export", sys.argv[1], str(out)]))
    """
)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_export_hitting_enospc_mid_write_without_mount(tmp_path):
    """Without mount privileges: a real ENOSPC from /dev/full inside h5py's writes (past the
    free-space check), which used to end in a segfault."""
    path = tmp_path / "ds"
    record(Dataset.create(path), n_ticks=20)
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", DEV_FULL, str(path), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert one_line(r.stderr).startswith("rig: disk full while writing episode_0.hdf5")
    assert list(out.iterdir()) == []  # the temp name is gone, no episode_0.hdf5


@pytest.mark.skipif(os.geteuid() == 0, reason="chmod does not stop root; the read-only tmpfs test covers root")
def test_dataset_without_write_permission_reads_and_says_so(tmp_path, capsys):
    path = tmp_path / "ds"
    record(Dataset.create(path), n_ticks=20)
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        rc, out, _ = run(capsys, "episodes", path)
        assert rc == 0 and out.splitlines()[1].split()[:2] == ["0", "complete"]
        rc, _, err = run(capsys, "episodes", path, "--discard", 0)
        assert rc == 2 and "permission denied" in one_line(err)
    finally:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)

"""Data that cannot rot unnoticed: CRC-32C on every chunk, missing chunks named, `rig verify`,
damaged episodes skipped by export and quick-train, and datasets recorded before checksums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from recorder import DamagedEpisodeError, Dataset
from rig.cli import main
from tests.test_recorder_export import record

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")


def chunk_files(ep_dir: Path) -> list[tuple[Path, str, int]]:
    """(file, array inside the episode, chunk index along time) of every chunk of an episode."""
    out = []
    for f in sorted(ep_dir.rglob("*")):
        rel = f.relative_to(ep_dir).as_posix()
        if f.is_file() and "/c/" in rel:
            array, key = rel.split("/c/")
            out.append((f, array, int(key.split("/")[0])))
    return out


def flip(path: Path, at: int | None = None, n: int = 1) -> bytes:
    raw = path.read_bytes()
    b = bytearray(raw)
    at = len(b) // 2 if at is None else at
    for k in range(n):
        b[at + k] ^= 0xFF
    path.write_bytes(bytes(b))
    return raw


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_a_byte_flip_in_any_chunk_is_named_by_verify(tmp_path, capsys):
    ds = Dataset.create(tmp_path / "ds")
    record(ds, n_ticks=60)  # 2 chunks per stream array (50 per chunk), 2 per camera array (25 per chunk)
    files = chunk_files(ds.episode(0).path)
    assert {a for _, a, _ in files} >= {"streams/joints/follower_q", "streams/joints/t_ns",
                                        "cameras/cam_high/frames", "cameras/cam_high/index"}
    assert len(files) == 2 * (7 + 2 * 4)
    for f, array, chunk in files:  # every chunk file, one at a time, in the middle and in the CRC
        for at in (None, -1):
            raw = flip(f, at if at is None else len(f.read_bytes()) - 1)
            damage = ds.verify(0)
            assert [(d.episode, d.array, d.chunk) for d in damage] == [(0, array, chunk)], f
            assert "checksum mismatch" in damage[0].reason
            f.write_bytes(raw)
    assert ds.verify(0) == []
    f, array, chunk = files[0]
    flip(f)
    rc, out, _ = run(capsys, "verify", tmp_path / "ds")
    assert rc == 2
    assert f"episode 0: {array} chunk {chunk}: checksum mismatch" in out
    assert "1 episode(s): 0 verified, 1 damaged" in out
    frames = next(x for x in files if x[1] == "cameras/cam_left_wrist/frames")
    flip(frames[0])
    rc, _, err = run(capsys, "inspect", tmp_path / "ds", "0")
    assert rc == 2 and f"rig: damaged: episode 0: cameras/cam_left_wrist/frames chunk {frames[2]}: checksum" in err


def test_flipped_bytes_never_read_as_values(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    record(ds, n_ticks=60)
    f = ds.episode(0).path / "streams/joints/follower_q/c/0/0"
    flip(f, n=8)
    with pytest.raises(DamagedEpisodeError, match="episode 0: streams/joints/follower_q chunk 0: checksum mismatch"):
        ds.episode(0).read_stream("joints")


def test_a_deleted_chunk_is_named_everywhere_and_never_read_as_zeros(tmp_path, capsys):
    path = tmp_path / "ds"
    ds = Dataset.create(path)
    for _ in range(3):
        record(ds, n_ticks=120)  # 3 chunks per stream array
    (ds.episode(1).path / "streams/joints/follower_q/c/1/0").unlink()
    line = "episode 1: streams/joints/follower_q chunk 1: chunk file missing"

    with pytest.raises(DamagedEpisodeError, match=line):
        ds.episode(1).read_stream("joints")
    np.testing.assert_allclose(ds.episode(1).read_stream("joints", 0, 50)["follower_q"][:, 0],
                               np.arange(50) + 0.5)  # rows in intact chunks still read

    rc, out, err = run(capsys, "episodes", path)
    assert rc == 2 and line in err
    assert out.splitlines()[2].split()[-1] == "damaged" and "damaged" not in out.splitlines()[1]
    rc, out, err = run(capsys, "inspect", path)
    assert rc == 2 and line in err and "episode 0: status=complete" in out and "episode 2:" in out
    rc, out, err = run(capsys, "verify", path, "--quick")
    assert rc == 2 and line in out

    rc, out, err = run(capsys, "export", path, tmp_path / "out")
    assert rc == 2
    assert [s for s in err.splitlines() if s.startswith("rig: skipped")] == [f"rig: skipped {line}"
                                                                             " (rows 50-99); run `rig verify "
                                                                             "DATASET` for every damaged chunk, then "
                                                                             "restore the episode from a copy or "
                                                                             "discard it with `rig episodes DATASET "
                                                                             "--discard 1`"]
    import h5py

    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["episode_0.hdf5", "episode_1.hdf5"]
    for name, rig_index in zip(names, (0, 2)):
        with h5py.File(tmp_path / "out" / name) as f:
            assert f.attrs["rig_episode"] == rig_index
            qpos = f["/observations/qpos"][()]
            assert qpos.shape == (120, 14) and np.all(qpos[:, 0] == np.arange(120) + 0.5)  # no zero rows

    from rig.train.data import EpisodeCache

    cache = EpisodeCache(threads=1)
    loaded = cache.load(path)
    assert [e.index for e in loaded] == [0, 2] and list(cache.skipped) == [1]
    assert line in capsys.readouterr().err
    assert all(np.all(e.q[:, 0] > 0) for e in loaded)


def _legacy_dataset(path: Path) -> None:
    """A dataset as rig wrote it before checksums: default codecs, no 'checksum' attribute."""
    root = zarr.open_group(str(path), mode="w")
    root.attrs["rig_dataset"] = {"format": "rig-episodes", "version": 1}
    ep = root.require_group("episodes").create_group("000000")
    t = np.arange(1, 61, dtype=np.int64) * 20_000_000
    ep.update_attributes({"status": "complete", "success": True, "task": "old", "duration_s": 1.2,
                          "counts": {"streams": {"joints": 60}, "cameras": {}}})
    joints = ep.create_group("streams").create_group("joints")
    joints.attrs["rate_hz"] = 50.0
    joints.create_array("follower_q", shape=(60, 2), chunks=(50, 2), dtype="f4", fill_value=0)[:] = np.ones((60, 2))
    joints.create_array("t_ns", shape=(60,), chunks=(50,), dtype="i8", fill_value=0)[:] = t


def test_datasets_recorded_before_checksums_read_as_before_and_are_unverified(tmp_path, capsys):
    _legacy_dataset(tmp_path / "old")
    ds = Dataset(tmp_path / "old")
    assert ds.info(0).checksum is None and "unverified" in ds.info(0).flags
    np.testing.assert_array_equal(ds.episode(0).read_stream("joints")["follower_q"], np.ones((60, 2)))
    rc, out, _ = run(capsys, "episodes", tmp_path / "old")
    assert rc == 0 and out.splitlines()[1].split()[-1] == "unverified"
    rc, out, _ = run(capsys, "verify", tmp_path / "old")
    assert rc == 0 and "0 verified, 0 damaged, 1 unverified" in out

    new = Dataset.create(tmp_path / "new")
    record(new, n_ticks=10)
    assert new.info(0).checksum == "crc32c" and "unverified" not in new.info(0).flags
    arr = zarr.open_group(str(tmp_path / "new"))["episodes/000000/streams/joints/follower_q"]
    assert [c.to_dict()["name"] for c in arr.metadata.codecs] == ["bytes", "zstd", "crc32c"]

"""Recording and reading back episodes: values, metadata, statuses, plain-zarr readability."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr

from drivers.cameras.frame import Frame
from drivers.errors import RigError
from recorder import Dataset, EpisodeNotFoundError, RecorderError, Status, WriterOptions
from recorder.codec import decode_jpeg, encode_jpeg

# zarr-python warns that variable-length bytes has no v3 spec yet (recorder.layout silences it,
# but pytest resets warning filters per test).
pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")

FIELDS = {
    "leader_q": ((14,), "f4"),
    "follower_q": ((14,), "f4"),
    "action": ((14,), "f4"),
    "tick": ((), "i8"),
    "deadline_ns": ((), "i8"),
}


def smooth_image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 3 + seed, yy * 5, xx + yy + 2 * seed], -1)  # smooth, no wrap-around
    return img.astype(np.uint8)


def record(ds: Dataset, n_ticks: int = 120, n_frames: int = 40, **meta) -> int:
    ep = ds.new_episode(**meta)
    ep.add_stream("joints", FIELDS, rate_hz=100)
    ep.add_camera("high", fps=30)
    ep.start()
    base = time.monotonic_ns()
    for i in range(n_ticks):
        q = np.arange(14, dtype=np.float32) + i
        ep.append(
            "joints", base + i * 10_000_000, leader_q=q, follower_q=q - 0.5, action=q, tick=i, deadline_ns=0
        )
    for k in range(n_frames):
        ep.add_frame(Frame("high", k, base + k * 33_000_000, smooth_image(k), t_device_ns=k * 1000))
    ep.stop(success=True)
    return ep.index


def test_streams_and_frames_round_trip(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    idx = record(ds, task="fold towel", operator="ana", config={"rate": np.float64(50.0), "arms": ("l", "r")})
    assert idx == 0
    ep = ds.episode(0)
    s = ep.read_stream("joints")
    assert set(s) == {*FIELDS, "t_ns"}
    assert s["leader_q"].shape == (120, 14) and s["leader_q"].dtype == np.float32
    np.testing.assert_array_equal(s["tick"], np.arange(120))
    np.testing.assert_array_equal(s["leader_q"][:, 3], np.arange(120) + 3)
    np.testing.assert_array_equal(s["follower_q"][7], np.arange(14, dtype=np.float32) + 6.5)
    assert np.all(np.diff(s["t_ns"]) == 10_000_000)
    frames = ep.read_frames("high", 0, 40)
    assert frames.shape == (40, 48, 64, 3)
    for k in (0, 17, 39):  # JPEG is lossy: compare against the source image within a tolerance
        assert np.abs(frames[k].astype(int) - smooth_image(k)).mean() < 4
    ft = ep.frame_times("high")
    np.testing.assert_array_equal(ft["index"], np.arange(40))
    np.testing.assert_array_equal(ft["t_device_ns"], np.arange(40) * 1000)

    info = ds.info(0)
    assert info.status == "complete" and info.success is True
    assert info.stream_counts == {"joints": 120} and info.camera_counts == {"high": 40}
    attrs = ep.attrs
    assert attrs["task"] == "fold towel" and attrs["operator"] == "ana"
    assert attrs["config"] == {"rate": 50.0, "arms": ["l", "r"]}
    assert attrs["start_monotonic_ns"] > 0 and attrs["start_wall"].endswith("+00:00")
    assert attrs["duration_s"] > 0 and "software_version" in attrs


def test_plain_zarr_reads_the_layout(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    record(ds)
    root = zarr.open_group(str(tmp_path / "ds"), mode="r")
    grp = root["episodes/000000"]
    assert grp.attrs["status"] == "complete"
    assert root["episodes/000000/streams/joints/leader_q"].shape == (120, 14)
    blob = grp["cameras/high/frames"][5:6][0]
    assert isinstance(blob, bytes) and blob[:2] == b"\xff\xd8"  # a plain JPEG file
    assert decode_jpeg(blob).shape == (48, 64, 3)


def test_jpeg_frames_are_stored_byte_exact(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode()
    ep.add_camera("wrist", fps=30)
    ep.start()
    blobs = [encode_jpeg(smooth_image(k), quality=70) for k in range(5)]
    for k, b in enumerate(blobs):
        assert ep.add_frame(
            Frame("wrist", k, time.monotonic_ns(), np.frombuffer(b, np.uint8), encoding="jpeg")
        )
    ep.stop()
    assert ds.episode(0).read_jpeg("wrist") == blobs
    assert ds.episode(0).frame_times("wrist")["t_device_ns"].tolist() == [-1] * 5


def test_statuses_relabel_and_discard(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    for _ in range(3):
        record(ds, n_ticks=10, n_frames=2)
    ds.set_success(1, False)
    ds.discard(2)
    assert [(i.index, i.status, i.success) for i in ds.episodes()] == [
        (0, "complete", True),
        (1, "complete", False),
        (2, "discarded", True),
    ]
    ds.set_status(2, Status.COMPLETE)
    assert ds.info(2).status == "complete"
    ds.discard(2, delete=True)
    assert ds.indices() == [0, 1]
    with pytest.raises(EpisodeNotFoundError, match="episode 2 is not in"):
        ds.episode(2)
    with pytest.raises(RecorderError, match="not one of"):
        ds.set_status(0, "great")
    assert record(ds, n_ticks=1, n_frames=1) == 2  # the next index follows the last on disk


def test_misuse_gives_rig_errors(tmp_path):
    with pytest.raises(RigError, match="not a rig dataset"):
        Dataset(tmp_path / "nothing")
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode()
    ep.add_stream("joints", {"q": ((2,), "f4")})
    ep.start()
    with pytest.raises(RecorderError, match="add_stream"):
        ep.add_stream("late", {"q": ((2,), "f4")})
    with pytest.raises(RecorderError, match="unknown stream 'arm'"):
        ep.append("arm", 1, q=[0, 0])
    with pytest.raises(RecorderError, match="cannot take"):
        ep.append("joints", 1, nope=[0, 0])
    assert ep.append("joints", 5, q=[1, 2])
    ep.stop()
    assert not ep.append("joints", 6, q=[1, 2])  # after stop: refused, counted, never raises
    assert ep.stats()["streams"]["joints"]["rejected"] == 1
    with pytest.raises(RecorderError, match="flush_interval_s"):
        WriterOptions(flush_interval_s=3)


def test_context_manager_keeps_data_when_the_caller_fails(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode()
    ep.add_stream("joints", {"q": ((2,), "f4")})
    with pytest.raises(ZeroDivisionError), ep:
        for i in range(30):
            ep.append("joints", i + 1, q=[i, i])
        1 / 0  # noqa: B018
    info = ds.info(0)
    assert info.status == "recovered" and info.stream_counts == {"joints": 30}
    assert "ZeroDivisionError" in info.note


def test_backlog_limit_drops_and_counts_instead_of_blocking(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode(options=WriterOptions(max_pending_s=0.1, encoder_threads=1))
    ep.add_camera("high", fps=30)  # backlog bound: max(4, 30 * 0.1) = 4 frames
    ep.start()
    big = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    kept = [ep.add_frame(Frame("high", k, time.monotonic_ns(), big)) for k in range(40)]
    elapsed = time.perf_counter() - t0
    ep.stop()
    stats = ep.stats()["cameras"]["high"]
    assert stats["dropped"] == kept.count(False) > 0
    assert stats["written"] == kept.count(True) == ds.episode(0).num_frames("high")
    assert elapsed < 5  # generous: it returned without waiting for 40 encodes one by one


def test_opencv_fallback_keeps_rgb_order(monkeypatch):
    import recorder.codec as codec

    monkeypatch.setattr(codec, "_sj", None)  # as on a machine without simplejpeg
    img = np.zeros((32, 48, 3), np.uint8)
    img[..., 0] = 200  # pure red in RGB
    blob = codec.encode_jpeg(img)
    assert blob[:2] == b"\xff\xd8"
    np.testing.assert_allclose(codec.decode_jpeg(blob)[16, 24], [200, 0, 0], atol=3)
    assert codec.jpeg_backend() == "opencv"

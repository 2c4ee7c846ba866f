"""recorder.video: RGB frames through PyAV's AV1/H.264 encoders and back, several episodes per file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from recorder import RecorderError
from recorder.video import (
    VideoOptions,
    VideoWriter,
    available_codecs,
    encode_video,
    iter_frames,
    pick_codec,
    probe,
    psnr,
    read_frames,
    read_segment,
)

H, W = 48, 64


def scene(i: int) -> np.ndarray:
    """A smooth gradient with a bright square that moves one pixel per frame."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 3 + i) % 256, (y * 4) % 256, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    img[10:22, 5 + i % 40 : 17 + i % 40] = 240
    return img


def test_auto_picks_av1_where_pyav_has_it():
    have = available_codecs()
    assert have, "the PyPI av wheel carries libsvtav1 and libx264"
    assert pick_codec("auto") == have[0]
    assert pick_codec("h264") == "libx264"
    with pytest.raises(RecorderError, match="no encoder"):
        pick_codec("no-such-encoder")


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_episodes_append_into_one_file_and_decode_back(tmp_path, codec):
    if pick_codec("auto") != "libsvtav1" and codec == "av1":
        pytest.skip("this PyAV build has no libsvtav1")
    eps = [[scene(i) for i in range(n)] for n in (25, 7, 31)]
    path = tmp_path / "v.mp4"
    segs = encode_video(path, eps, fps=25, options=VideoOptions(codec=codec, crf=23))
    assert [(s.start, s.stop) for s in segs] == [(0, 25), (25, 32), (32, 63)]
    assert segs[1].from_s == pytest.approx(1.0) and segs[1].to_s == pytest.approx(32 / 25)
    assert not (tmp_path / "v.mp4.partial").exists()
    info = probe(path)
    assert (info.width, info.height, info.frames, info.pix_fmt) == (W, H, 63, "yuv420p")
    assert info.codec in (("libdav1d", "av1", "libaom-av1") if codec == "av1" else ("h264",))
    assert info.fps == pytest.approx(25)

    every = read_frames(path)
    truth = np.stack([f for ep in eps for f in ep])
    assert every.shape == truth.shape
    assert psnr(every, truth) > 30
    # an episode in the middle, by index (seeks) and by its time range
    mid = read_frames(path, segs[2].start + 3, segs[2].stop)
    assert psnr(mid, np.stack(eps[2][3:])) > 30
    ep1 = read_segment(path, segs[1].from_s, segs[1].to_s, fps=25)
    assert ep1.shape[0] == 7 and psnr(ep1, np.stack(eps[1])) > 30
    assert [i for i, _ in iter_frames(path, 40, 44)] == [40, 41, 42, 43]
    with pytest.raises(RecorderError, match="holds 63 frames"):
        read_frames(path, 60, 70)


def test_keyframes_at_most_gop_apart(tmp_path):
    import av

    path = tmp_path / "g.mp4"
    encode_video(path, [[scene(i) for i in range(20)]], fps=10, options=VideoOptions(codec="h264", gop=4))
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys = sorted(round(p.pts * s.time_base * 10) for p in c.demux(s) if p.size and p.is_keyframe)
    assert keys[0] == 0 and max(np.diff(keys)) <= 4 and keys[-1] >= 16


def test_abort_and_bad_frames_leave_no_file(tmp_path):
    path = tmp_path / "a.mp4"
    w = VideoWriter(path, fps=30, width=W, height=H)
    w.write(scene(0))
    with pytest.raises(RecorderError, match="frame of shape"):
        w.write(np.zeros((10, 10, 3), np.uint8))
    w.abort()
    assert not path.exists() and not (tmp_path / "a.mp4.partial").exists()
    with pytest.raises(RecorderError, match="must be even"):
        VideoWriter(path, fps=30, width=63, height=48)
    with pytest.raises(RecorderError, match="no frames"):
        encode_video(path, [[]], fps=30)
    assert list(tmp_path.iterdir()) == []


def _policies() -> dict[int, tuple[int, int]]:
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            out[int(t)] = (os.sched_getscheduler(int(t)), os.sched_getparam(int(t)).sched_priority)
        except OSError:
            pass
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="needs Linux scheduling calls")
def test_encoding_leaves_no_thread_real_time_and_the_caller_as_it_was(tmp_path):
    """SVT-AV1 run as root puts its threads and the caller at SCHED_FIFO 99, which would starve the
    control loop; the writer puts them back. The caller here runs at FIFO 20, as a loop thread would."""
    import threading

    from recorder.video import AV1, VideoOptions, VideoWriter, available_codecs

    if AV1 not in available_codecs():
        pytest.skip("PyAV's FFmpeg has no libsvtav1")
    seen: dict[str, object] = {}

    def encode():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))
        except PermissionError:
            pass
        seen["before"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        seen["existing"] = set(_policies())  # other tests' threads are not the encoder's
        w = VideoWriter(tmp_path / "v.mp4", 30, 64, 48, VideoOptions(codec="av1"))
        for i in range(12):
            w.write(np.full((48, 64, 3), i * 20, np.uint8))
        seen["caller"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        seen["others"] = {tid: p for tid, p in _policies().items() if tid != threading.get_native_id()}
        w.close()
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    t = threading.Thread(target=encode)
    t.start()
    t.join()
    assert seen["caller"] == seen["before"]
    encoder = {tid: p for tid, p in seen["others"].items() if tid not in seen["existing"]}
    assert encoder and all(p == (os.SCHED_OTHER, 0) for p in encoder.values()), encoder
    assert all(p[1] != 99 for p in seen["others"].values()), seen["others"]

"""Frame-to-tick alignment with known answers, and the inspect report on faulty episodes."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from drivers.cameras.frame import Frame
from recorder import Dataset, align_frames_to_ticks
from recorder.inspect import format_report, inspect_episode

pytestmark = pytest.mark.filterwarnings("ignore:The data type \\(VariableLengthBytes")
MS = 1_000_000


def test_latest_frame_at_or_before_each_tick():
    ticks = np.array([0, 10, 20, 30, 40, 50]) * MS
    frames = np.array([5, 20, 26, 27, 60]) * MS
    al = align_frames_to_ticks(ticks, frames)
    assert al.indices.tolist() == [-1, 0, 1, 3, 3, 3]
    assert (al.skew_ns // MS).tolist() == [-1, 5, 0, 3, 13, 23]
    assert al.ticks_without_frame == 1
    assert al.max_ms == 23.0 and al.p50_ms == 5.0


def test_latency_offset_moves_frames_back_in_time():
    ticks = np.array([0, 10, 20, 30]) * MS
    frames = np.array([12, 22, 32]) * MS  # each frame stamped 12 ms after it was exposed
    assert align_frames_to_ticks(ticks, frames).indices.tolist() == [-1, -1, 0, 1]
    al = align_frames_to_ticks(ticks, frames, latency_ns=12 * MS)
    assert al.indices.tolist() == [0, 1, 2, -1 + 3]
    assert (al.skew_ns // MS).tolist() == [0, 0, 0, 10]


def test_out_of_order_stamps_still_give_rows_of_the_original_arrays():
    frames = np.array([30, 10, 20]) * MS
    al = align_frames_to_ticks(np.array([15, 25, 35]) * MS, frames)
    assert al.indices.tolist() == [1, 2, 0]


def test_no_frames_at_all():
    al = align_frames_to_ticks(np.arange(3) * MS, np.array([], dtype=np.int64))
    assert al.indices.tolist() == [-1, -1, -1] and al.ticks_without_frame == 3


def _episode_with_faults(tmp_path):
    """2 s at 100 Hz; camera 'high' freezes from 0.5 s to the end, 'wrist' drops 3 frames;
    the loop overruns on 5 ticks and skips 2; the leader is still from 1.0 s to 1.8 s."""
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode(task="faults")
    ep.add_stream(
        "joints",
        {"leader_q": ((14,), "f4"), "tick": ((), "i8"), "t_deadline_ns": ((), "i8"), "t_end_ns": ((), "i8")},
        rate_hz=100,
    )
    ep.add_camera("high", fps=50)
    ep.add_camera("wrist", fps=50)
    ep.start()
    base = time.monotonic_ns()
    img = np.full((24, 32, 3), 90, np.uint8)
    ticks = [i for i in range(200) if i not in (50, 51)]  # two skipped ticks
    for i in ticks:
        deadline = base + i * 10 * MS
        late = 15 * MS if i in (20, 21, 22, 23, 24) else 100_000
        moving = not (100 <= i <= 180)
        work = 12 * MS if i in (60, 61, 62) else 2 * MS  # three ticks take longer than the 10 ms period
        ep.append(
            "joints",
            deadline + late,
            leader_q=np.full(14, i if moving else 100.0),
            tick=i,
            t_deadline_ns=deadline,
            t_end_ns=deadline + late + work,
        )
    for k in range(100):
        t = base + k * 20 * MS + 3 * MS
        if k < 25:
            ep.add_frame(Frame("high", k, t, img))
        if k not in (40, 41, 70):
            ep.add_frame(Frame("wrist", k, t, img))
    ep.stop()
    return ds


def test_inspect_reports_freeze_drops_overruns_and_idle(tmp_path):
    ds = _episode_with_faults(tmp_path)
    r = inspect_episode(ds.episode(0), idle_s=0.5)
    assert r.status == "complete" and r.tick_stream == "joints"
    joints = r.streams[0]
    assert joints.samples == 198 and joints.skipped_ticks == 2
    assert joints.late_ticks == 5 and joints.lateness_ms["max"] == 15.0
    assert joints.overruns == 5 + 3  # the 5 late ones (15 + 2 ms) and the 3 slow ones (12 ms)
    assert len(joints.idle) == 1 and joints.idle[0][1] == pytest.approx(0.8, abs=0.02)
    assert joints.stalls == []  # 2 skipped ticks = 30 ms gap: under 3 periods
    high, wrist = r.cameras
    assert high.name == "high" and high.frames == 25 and high.dropped == 0
    # frozen from the last frame (0.483 s) to the last tick (1.99 s)
    assert len(high.freezes) == 1
    start_s, length_s = high.freezes[0]
    assert start_s == pytest.approx(0.483, abs=0.01) and length_s == pytest.approx(1.51, abs=0.02)
    assert high.skew["max_ms"] == pytest.approx(1507.1, abs=1.0)
    assert wrist.dropped == 3 and wrist.frames == 97 and wrist.freezes == []
    assert wrist.skew["ticks_without_frame"] == 1  # the first tick precedes the first frame
    text = format_report(r)
    assert re.search(r"camera high: 25 frames.*freezes: 0\.4\ds\+1\.5\ds", text), text
    assert (
        "dropped 3" in text
        and "5 late ticks" in text
        and "8 ticks overran" in text
        and "skipped ticks: 2" in text
    )


def test_camera_that_disconnects_midway_still_completes(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ep = ds.new_episode()
    ep.add_stream("joints", {"q": ((2,), "f4")}, rate_hz=100)
    ep.add_camera("usb", fps=30)
    ep.start()
    img = np.zeros((24, 32, 3), np.uint8)
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < 1.0:  # real time: frames stop after 0.3 s, ticks go on
        now = time.monotonic_ns()
        ep.append("joints", now, q=[0, 0])
        if time.monotonic() - t0 < 0.3 and k * 0.033 <= time.monotonic() - t0:
            ep.add_frame(Frame("usb", k, now, img))
            k += 1
        time.sleep(0.01)
    ep.stop(success=True)
    info = ds.info(0)
    assert info.status == "complete" and info.camera_counts["usb"] == k
    r = inspect_episode(ds.episode(0))
    (usb,) = r.cameras
    assert usb.freezes and usb.freezes[-1][1] >= 0.6
